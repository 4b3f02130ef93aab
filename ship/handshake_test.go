package ship

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHandshakeSuccess(t *testing.T) {
	var decided []Hello
	decide := func(h Hello) (Welcome, *RefusedError) {
		decided = append(decided, h)
		return acceptAll(h)
	}
	copts := testClientOptions()
	copts.MaxFrame = 1 << 20
	r := handshakePipe(t, testServerOptions(), decide, copts)
	if r.srvErr != nil || r.cliErr != nil {
		t.Fatalf("server: %v; client: %v", r.srvErr, r.cliErr)
	}
	if len(decided) != 1 {
		t.Fatalf("decide called %d times", len(decided))
	}
	h := r.hello
	if h.Name != "node02" || !sameIdentity(h.Identity, slaveID) || h.Applied != 1000 ||
		h.Received != 1200 || h.Epoch != 0x1234_5678_9abc || h.MaxFrame != 1<<20 || h.Version != ProtocolVersion {
		t.Fatalf("hello: %+v", h)
	}
	w := r.welcome
	if w.Name != "node01" || !sameIdentity(w.Identity, masterID) || w.LastPosition != 5000 ||
		w.StartAfter != 1200 || w.Epoch != 0x0fed_cba9 || w.Heartbeat != 50*time.Millisecond || w.MaxFrame != DefaultMaxFrame {
		t.Fatalf("welcome: %+v", w)
	}
}

// After the handshake the same connections carry messages, without the
// handshake's deadline.
func TestHandshakeThenStream(t *testing.T) {
	sc, cc := tcpPair(t)
	srv := make(chan error, 1)
	go func() {
		h, err := ServerHandshake(context.Background(), sc, testServerOptions(), acceptAll)
		if err == nil {
			c := NewConn(sc, ConnOptions{Heartbeat: time.Second, PeerMaxFrame: h.MaxFrame})
			err = c.Send(context.Background(), Records{First: 1, Last: 1, Data: []byte("x")})
		}
		srv <- err
	}()
	// Whether the deadline is gone is read off the connection, rather
	// than waited out: a deadline short enough to wait out would be too
	// short for a handshake on a busy machine.
	dc := &deadlineConn{Conn: cc}
	w, err := ClientHandshake(context.Background(), dc, testClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	if set, read, write := dc.deadlines(); !set || !read.IsZero() || !write.IsZero() {
		t.Fatalf("after the handshake (deadline set: %v) the read deadline is %v, the write deadline %v; want none", set, read, write)
	}
	c := NewConn(cc, ConnOptions{Heartbeat: w.Heartbeat * 100, PeerMaxFrame: w.MaxFrame})
	m, err := c.Receive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rec, ok := m.(Records); !ok || string(rec.Data) != "x" {
		t.Fatalf("got %+v", m)
	}
	if err := <-srv; err != nil {
		t.Fatal(err)
	}
}

// deadlineConn records the deadlines set on a connection.
type deadlineConn struct {
	net.Conn
	mu          sync.Mutex
	set         bool
	read, write time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.record(&c.read, t)
	c.record(&c.write, t)
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.record(&c.read, t)
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.record(&c.write, t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *deadlineConn) record(d *time.Time, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*d = t
	c.set = c.set || !t.IsZero()
}

// deadlines says whether a deadline was ever set, and the ones in force.
func (c *deadlineConn) deadlines() (set bool, read, write time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set, c.read, c.write
}

func TestHandshakeWrongToken(t *testing.T) {
	called := false
	decide := func(h Hello) (Welcome, *RefusedError) { called = true; return acceptAll(h) }
	copts := testClientOptions()
	copts.Token = "another token"
	r := handshakePipe(t, testServerOptions(), decide, copts)
	if called {
		t.Fatal("decide was called for a slave that failed authentication")
	}
	if !errors.Is(r.cliErr, ErrAuth) || r.cliErr.Error() != msgAuth {
		t.Fatalf("client: %v", r.cliErr)
	}
	var refusal *RefusedError
	if !errors.As(r.cliErr, &refusal) || refusal.Code != CodeAuth {
		t.Fatalf("client: %#v", r.cliErr)
	}
	if !errors.Is(r.srvErr, ErrAuth) || !strings.Contains(r.srvErr.Error(), "slave node02") {
		t.Fatalf("server: %v", r.srvErr)
	}
}

// impostor plays a master that does not know the token: it skips checking
// the slave and answers with a Welcome proved with its own guess.
func impostor(t *testing.T, conn net.Conn, guess string) {
	h := newHandshake(conn, "slave", testTimeout)
	if h.readMagic() != nil {
		return
	}
	f, err := h.read(typeHello)
	if err != nil {
		return
	}
	hello, err := decodeHello(f.payload)
	if err != nil {
		t.Error(err)
		return
	}
	ch := challenge{version: ProtocolVersion, nonce: newNonce()}
	h.write(typeChallenge, ch.encode(nil))
	if _, err := h.read(typeProof); err != nil {
		return
	}
	w, _ := acceptAll(hello)
	w.Version, w.MaxFrame = ProtocolVersion, DefaultMaxFrame
	w.proof = computeProof(guess, roleMaster, ProtocolVersion, hello.nonce, ch.nonce, hello.Name)
	h.write(typeWelcome, w.encode(nil))
}

func TestHandshakeImpostorMaster(t *testing.T) {
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	go impostor(t, sc, "a guess")
	_, err := ClientHandshake(context.Background(), cc, testClientOptions())
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "could not prove it knows sync.token") {
		t.Fatalf("got %v", err)
	}
}

// The token must never cross the wire, in either direction.
func TestHandshakeNeverSendsToken(t *testing.T) {
	sc, cc := net.Pipe()
	var mu sync.Mutex
	var wire bytes.Buffer
	rec := func(c net.Conn) net.Conn { return &recordingConn{Conn: c, mu: &mu, w: &wire} }
	done := make(chan error, 1)
	go func() {
		_, err := ServerHandshake(context.Background(), rec(sc), testServerOptions(), acceptAll)
		done <- err
	}()
	if _, err := ClientHandshake(context.Background(), rec(cc), testClientOptions()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(wire.Bytes(), []byte(testToken)) {
		t.Fatal("the token crossed the wire")
	}
	if wire.Len() == 0 {
		t.Fatal("nothing recorded")
	}
}

type recordingConn struct {
	net.Conn
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.w.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// writeRawHello sends a Hello built by hand, to play an older or newer
// slave.
func writeRawHello(conn net.Conn, version uint16) error {
	h := sampleHello()
	h.Version = version
	hs := newHandshake(conn, "master", testTimeout)
	hs.client = true
	return hs.write(typeHello, h.encode(nil))
}

func TestHandshakeVersionMismatch(t *testing.T) {
	for _, slaveVersion := range []uint16{0, ProtocolVersion + 1} {
		sc, cc := net.Pipe()
		srv := make(chan error, 1)
		go func() {
			_, err := ServerHandshake(context.Background(), sc, testServerOptions(), acceptAll)
			srv <- err
		}()
		go writeRawHello(cc, slaveVersion)
		hs := newHandshake(cc, "master", testTimeout)
		hs.client = true
		if err := hs.readMagic(); err != nil {
			t.Fatal(err)
		}
		_, err := hs.read(typeChallenge)
		want := versionMessage(slaveVersion, ProtocolVersion)
		if !errors.Is(err, ErrVersion) || err.Error() != want {
			t.Fatalf("slave version %d: got %v, want %q", slaveVersion, err, want)
		}
		if err := <-srv; !errors.Is(err, ErrVersion) {
			t.Fatalf("server: %v", err)
		}
		side := "slave"
		if slaveVersion > ProtocolVersion {
			side = "master"
		}
		if !strings.HasSuffix(want, "upgrade schedsync on the "+side) {
			t.Fatalf("message %q names the wrong side", want)
		}
		sc.Close()
		cc.Close()
	}
}

// A newer master answers with its version; the slave says to upgrade
// itself.
func TestHandshakeNewerMaster(t *testing.T) {
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	go func() {
		h := newHandshake(sc, "slave", testTimeout)
		if h.readMagic() != nil {
			return
		}
		if _, err := h.read(typeHello); err != nil {
			return
		}
		ch := challenge{version: ProtocolVersion + 1}
		h.write(typeChallenge, ch.encode(nil))
	}()
	_, err := ClientHandshake(context.Background(), cc, testClientOptions())
	if !errors.Is(err, ErrVersion) || !strings.HasSuffix(err.Error(), "upgrade schedsync on the slave") {
		t.Fatalf("got %v", err)
	}
}

func TestHandshakeSameRepository(t *testing.T) {
	decide := func(h Hello) (Welcome, *RefusedError) {
		if h.Identity.SameDatabase(masterID) {
			return Welcome{}, RefuseSameRepository(masterID)
		}
		return acceptAll(h)
	}
	copts := testClientOptions()
	copts.Identity = masterID
	r := handshakePipe(t, testServerOptions(), decide, copts)
	if !errors.Is(r.cliErr, ErrSameRepository) || !strings.HasPrefix(r.cliErr.Error(), "same repository: ") ||
		!strings.Contains(r.cliErr.Error(), `"scheduler" (OID 16384) of cluster 7301234567890123456`) {
		t.Fatalf("client: %v", r.cliErr)
	}
	if !errors.Is(r.srvErr, ErrSameRepository) {
		t.Fatalf("server: %v", r.srvErr)
	}

	// A master whose service forgot the check: the slave refuses itself.
	r = handshakePipe(t, testServerOptions(), acceptAll, copts)
	if !errors.Is(r.cliErr, ErrSameRepository) {
		t.Fatalf("client against a careless master: %v", r.cliErr)
	}
}

func TestHandshakeBacklog(t *testing.T) {
	decide := func(h Hello) (Welcome, *RefusedError) {
		return Welcome{}, RefuseBacklog(h.Name, 3_000_000_000, 1<<30)
	}
	r := handshakePipe(t, testServerOptions(), decide, testClientOptions())
	const want = "slave node02 has 3000000000 bytes of changes to be processed since last disconnection, " +
		"which exceeds spool.max_backlog (1073741824 bytes) on the master; " +
		"run backup and restore (schedsync resync) to re-sync the slave"
	if r.cliErr == nil || r.cliErr.Error() != want {
		t.Fatalf("client: got  %v\nwant %s", r.cliErr, want)
	}
	if !errors.Is(r.cliErr, ErrNeedsResync) || errors.Is(r.cliErr, ErrAuth) {
		t.Fatalf("client error does not match ErrNeedsResync alone: %v", r.cliErr)
	}
	if !errors.Is(r.srvErr, ErrNeedsResync) {
		t.Fatalf("server: %v", r.srvErr)
	}
}

// A slave of another capture history is refused like one past its
// backlog (ErrNeedsResync, exit 3), with a message naming both histories.
func TestHandshakeHistory(t *testing.T) {
	decide := func(h Hello) (Welcome, *RefusedError) {
		return Welcome{}, RefuseHistory(h.Name, h.Epoch, 0xfeed, h.Applied)
	}
	r := handshakePipe(t, testServerOptions(), decide, testClientOptions())
	if !errors.Is(r.cliErr, ErrNeedsResync) {
		t.Fatalf("client error does not match ErrNeedsResync: %v", r.cliErr)
	}
	for _, want := range []string{"slave node02 holds data of capture history 0000123456789abc",
		"after its position 1000 belong to capture history 000000000000feed", "schedsync resync"} {
		if !strings.Contains(r.cliErr.Error(), want) {
			t.Errorf("refusal %q does not say %q", r.cliErr, want)
		}
	}
}

// registry is what the service will do: one connection per slave name,
// registered in decide.
type registry struct {
	mu    sync.Mutex
	names map[string]bool
}

func (r *registry) decide(h Hello) (Welcome, *RefusedError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[h.Name] {
		return Welcome{}, RefuseDuplicateName(h.Name)
	}
	r.names[h.Name] = true
	return acceptAll(h)
}

func TestHandshakeDuplicateName(t *testing.T) {
	reg := &registry{names: map[string]bool{}}
	if r := handshakePipe(t, testServerOptions(), reg.decide, testClientOptions()); r.cliErr != nil {
		t.Fatal(r.cliErr)
	}
	r := handshakePipe(t, testServerOptions(), reg.decide, testClientOptions())
	if !errors.Is(r.cliErr, ErrDuplicateName) || !strings.Contains(r.cliErr.Error(), "slave node02 is already connected") {
		t.Fatalf("client: %v", r.cliErr)
	}
}

func TestHandshakeNotReady(t *testing.T) {
	decide := func(Hello) (Welcome, *RefusedError) {
		return Welcome{}, RefuseNotReady("its repository is unreachable")
	}
	r := handshakePipe(t, testServerOptions(), decide, testClientOptions())
	if !errors.Is(r.cliErr, ErrNotReady) || !strings.Contains(r.cliErr.Error(), "its repository is unreachable") {
		t.Fatalf("client: %v", r.cliErr)
	}
}

// A Welcome the service filled in wrongly fails on the master, loudly,
// and the slave hears "not ready" instead of waiting for its timeout.
func TestHandshakeInvalidWelcome(t *testing.T) {
	decide := func(Hello) (Welcome, *RefusedError) { return Welcome{Heartbeat: time.Second}, nil }
	r := handshakePipe(t, testServerOptions(), decide, testClientOptions())
	if r.srvErr == nil || !strings.Contains(r.srvErr.Error(), "master name") {
		t.Fatalf("server: %v", r.srvErr)
	}
	if !errors.Is(r.cliErr, ErrNotReady) {
		t.Fatalf("client: %v", r.cliErr)
	}
}

func TestHandshakeSilentPeer(t *testing.T) {
	t.Run("silent master", func(t *testing.T) {
		sc, cc := net.Pipe() // nobody reads sc: the slave's first write blocks
		defer sc.Close()
		defer cc.Close()
		copts := testClientOptions()
		copts.Timeout = 100 * time.Millisecond
		_, err := ClientHandshake(context.Background(), cc, copts)
		if err == nil || !strings.Contains(err.Error(), "did not complete the handshake within 100ms") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("silent slave", func(t *testing.T) {
		sc, cc := net.Pipe()
		defer sc.Close()
		defer cc.Close()
		sopts := testServerOptions()
		sopts.Timeout = 100 * time.Millisecond
		_, err := ServerHandshake(context.Background(), sc, sopts, acceptAll)
		if err == nil || !strings.Contains(err.Error(), "did not complete the handshake") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("slave stops after its hello", func(t *testing.T) {
		sc, cc := net.Pipe()
		defer sc.Close()
		defer cc.Close()
		go func() {
			writeRawHello(cc, ProtocolVersion)
			var buf [512]byte
			cc.Read(buf[:]) // take the challenge, never prove
		}()
		sopts := testServerOptions()
		sopts.Timeout = 100 * time.Millisecond
		_, err := ServerHandshake(context.Background(), sc, sopts, acceptAll)
		if err == nil || !strings.Contains(err.Error(), "did not complete the handshake") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestHandshakeCancel(t *testing.T) {
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	sopts := testServerOptions()
	sopts.Timeout = time.Minute // only the cancellation can end it in time
	_, err := ServerHandshake(ctx, sc, sopts, acceptAll)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestHandshakeGarbage(t *testing.T) {
	t.Run("not schedsync", func(t *testing.T) {
		sc, cc := net.Pipe()
		defer sc.Close()
		defer cc.Close()
		go cc.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		_, err := ServerHandshake(context.Background(), sc, testServerOptions(), acceptAll)
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "not a schedsync slave") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("malformed hello", func(t *testing.T) {
		sc, cc := net.Pipe()
		defer sc.Close()
		defer cc.Close()
		go ServerHandshake(context.Background(), sc, testServerOptions(), acceptAll)
		h := newHandshake(cc, "master", testTimeout)
		h.client = true
		h.write(typeHello, []byte{0, byte(ProtocolVersion), 0xff})
		h.readMagic()
		_, err := h.read(typeChallenge)
		var refusal *RefusedError
		if !errors.As(err, &refusal) || refusal.Code != CodeProtocol {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("not a master", func(t *testing.T) {
		sc, cc := net.Pipe()
		defer sc.Close()
		defer cc.Close()
		go func() {
			var buf [512]byte
			sc.Read(buf[:])
			sc.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
		}()
		_, err := ClientHandshake(context.Background(), cc, testClientOptions())
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "check master.host and master.port") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestHandshakeOptionsChecked(t *testing.T) {
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	if _, err := ServerHandshake(context.Background(), sc, ServerOptions{}, acceptAll); err == nil ||
		!strings.Contains(err.Error(), "sync.token") {
		t.Fatalf("server without token: %v", err)
	}
	copts := testClientOptions()
	copts.Token = ""
	if _, err := ClientHandshake(context.Background(), cc, copts); err == nil {
		t.Fatal("client without token")
	}
	copts = testClientOptions()
	copts.Name = "bad name"
	if _, err := ClientHandshake(context.Background(), cc, copts); err == nil ||
		!strings.Contains(err.Error(), "node.name") {
		t.Fatalf("bad name: %v", err)
	}
}
