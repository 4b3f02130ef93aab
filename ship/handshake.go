package ship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// DefaultHandshakeTimeout bounds a whole handshake, TLS included, so that
// a silent or stuck peer never holds a connection (or a slave's start) for
// longer.
const DefaultHandshakeTimeout = 10 * time.Second

// ServerOptions configures the master's side of the handshake.
type ServerOptions struct {
	Token   string        // sync.token; never sent, never logged
	Timeout time.Duration // the whole handshake; 0 means DefaultHandshakeTimeout
}

// ServerHandshake runs the master's side of the handshake on a connection
// accepted from Listen (which adds the TLS check) or any other net.Conn.
//
// decide is called once, only after the slave proved it knows the token,
// with the slave's Hello; it runs on the caller's goroutine, so calls for
// different connections may run concurrently. It returns the Welcome to send (Version and the
// master's proof are filled in here; MaxFrame 0 means DefaultMaxFrame), or
// a refusal (RefuseBacklog, RefuseSameRepository, RefuseDuplicateName,
// RefuseNotReady), which is sent to the slave and returned wrapped. If
// decide accepts but the Welcome cannot be sent, ServerHandshake returns an
// error and the caller must undo whatever decide registered.
//
// On success the connection's deadlines are cleared and it is ready for
// NewConn. On error the caller closes it. Cancelling ctx closes it.
func ServerHandshake(ctx context.Context, conn net.Conn, opts ServerOptions,
	decide func(Hello) (Welcome, *RefusedError)) (Hello, error) {
	if opts.Token == "" {
		return Hello{}, errNoToken
	}
	h := newHandshake(conn, "slave at "+conn.RemoteAddr().String(), opts.Timeout)
	finish := h.start(ctx)
	hello, err := h.server(opts.Token, decide)
	if err = finish(err); err != nil {
		return Hello{}, err // never hand out a Hello that was not accepted
	}
	return hello, nil
}

func (h *handshake) server(token string, decide func(Hello) (Welcome, *RefusedError)) (Hello, error) {
	if err := h.readMagic(); err != nil {
		return Hello{}, err // not our protocol: no reply it could read
	}
	f, err := h.read(typeHello)
	if err != nil {
		return Hello{}, h.refuseProtocol(err)
	}
	if v, ok := leadingVersion(f.payload); ok && v != ProtocolVersion {
		return Hello{}, h.refuse(&RefusedError{Code: CodeVersion, Message: versionMessage(v, ProtocolVersion)})
	}
	hello, err := decodeHello(f.payload)
	if err != nil {
		return Hello{}, h.refuseProtocol(err)
	}
	h.peer = fmt.Sprintf("slave %s at %s", hello.Name, h.conn.RemoteAddr())

	ch := challenge{version: ProtocolVersion, nonce: newNonce()}
	if err := h.write(typeChallenge, ch.encode(nil)); err != nil {
		return hello, err
	}
	f, err = h.read(typeProof)
	if err != nil {
		return hello, h.refuseProtocol(err)
	}
	pr, err := decodeProof(f.payload)
	if err != nil {
		return hello, h.refuseProtocol(err)
	}
	if !checkProof(pr, token, roleSlave, ProtocolVersion, hello.nonce, ch.nonce, hello.Name) {
		return hello, h.refuse(&RefusedError{Code: CodeAuth, Message: msgAuth})
	}

	w, refusal := decide(hello)
	if refusal != nil {
		return hello, h.refuse(refusal)
	}
	w.Version = ProtocolVersion
	w.MaxFrame = clampMaxFrame(w.MaxFrame)
	if !validName(w.Name) || w.Heartbeat < time.Millisecond {
		// A bug in the caller, not the slave's fault: say so on both ends
		// rather than send a Welcome the slave would reject as malformed.
		err := fmt.Errorf("welcome for %s: master name %q or heartbeat %s is invalid", h.peer, w.Name, w.Heartbeat)
		h.refuse(RefuseNotReady("the master could not build its welcome"))
		return hello, err
	}
	w.proof = computeProof(token, roleMaster, ProtocolVersion, hello.nonce, ch.nonce, hello.Name)
	return hello, h.write(typeWelcome, w.encode(nil))
}

// ClientOptions configures the slave's side of the handshake.
type ClientOptions struct {
	Token    string   // sync.token; never sent, never logged
	Name     string   // the slave's node.name
	Identity Identity // the slave's repository
	Applied  uint64   // last position committed in the slave's repository
	Received uint64   // last position durable in the slave's spool
	Epoch    uint64   // the capture history of the slave's data; 0 if none yet
	// Generation is the highest generation this node has seen.
	Generation uint64
	MaxFrame   int    // the largest frame this slave accepts; 0 means DefaultMaxFrame
	Purpose    string // PurposeStream, PurposeBackup or PurposeProbe
	Timeout    time.Duration
}

// ClientHandshake runs the slave's side of the handshake on a connection
// from Dial. It returns the master's Welcome only once the master proved it
// knows the token too, so a slave never streams from an impostor.
//
// A refusal by the master is a *RefusedError: errors.Is matches ErrAuth,
// ErrVersion, ErrSameRepository, ErrNeedsResync (the backlog refusal; the
// CLI exits 3), ErrDuplicateName, ErrNotReady or ErrTLSMismatch. The slave
// refuses a master whose proof fails (ErrAuth) or whose repository is its
// own (ErrSameRepository) itself.
//
// On success the connection's deadlines are cleared and it is ready for
// NewConn. On error the caller closes it. Cancelling ctx closes it.
func ClientHandshake(ctx context.Context, conn net.Conn, opts ClientOptions) (Welcome, error) {
	if opts.Token == "" {
		return Welcome{}, errNoToken
	}
	if !validName(opts.Name) {
		return Welcome{}, fmt.Errorf("node.name %q: use letters, digits, '.', '_' and '-', at most %d characters",
			opts.Name, maxNameLen)
	}
	if len(opts.Identity.Database) > maxDatabaseLen {
		return Welcome{}, fmt.Errorf("database name of %d bytes is too long", len(opts.Identity.Database))
	}
	h := newHandshake(conn, "master at "+conn.RemoteAddr().String(), opts.Timeout)
	h.client = true
	finish := h.start(ctx)
	w, err := h.clientRun(opts)
	if err = finish(err); err != nil {
		return Welcome{}, err
	}
	return w, nil
}

func (h *handshake) clientRun(opts ClientOptions) (Welcome, error) {
	hello := Hello{
		Version: ProtocolVersion, Name: opts.Name, Identity: opts.Identity,
		Applied: opts.Applied, Received: opts.Received, Epoch: opts.Epoch, Generation: opts.Generation,
		MaxFrame: clampMaxFrame(opts.MaxFrame), Purpose: opts.Purpose, nonce: newNonce(),
	}
	if err := h.write(typeHello, hello.encode(nil)); err != nil {
		return Welcome{}, err
	}
	if err := h.readMagic(); err != nil {
		return Welcome{}, err
	}
	f, err := h.read(typeChallenge)
	if err != nil {
		return Welcome{}, err
	}
	if v, ok := leadingVersion(f.payload); ok && v != ProtocolVersion {
		return Welcome{}, &RefusedError{Code: CodeVersion, Message: versionMessage(ProtocolVersion, v)}
	}
	ch, err := decodeChallenge(f.payload)
	if err != nil {
		return Welcome{}, err
	}
	pr := computeProof(opts.Token, roleSlave, ProtocolVersion, hello.nonce, ch.nonce, opts.Name)
	if err := h.write(typeProof, pr[:]); err != nil {
		return Welcome{}, err
	}
	f, err = h.read(typeWelcome)
	if err != nil {
		return Welcome{}, err
	}
	w, err := decodeWelcome(f.payload)
	if err != nil {
		return Welcome{}, err
	}
	if !checkProof(w.proof, opts.Token, roleMaster, ProtocolVersion, hello.nonce, ch.nonce, opts.Name) {
		return Welcome{}, &kindError{kind: ErrAuth, msg: fmt.Sprintf("authentication failed: the %s "+
			"could not prove it knows sync.token; refusing to stream from it "+
			"(sync.token differs, or it is not the real master)", h.peer)}
	}
	if w.Identity.SameDatabase(opts.Identity) {
		return Welcome{}, RefuseSameRepository(opts.Identity)
	}
	return w, nil
}

// handshake is the state of one handshake on a connection: who the peer
// is (for messages) and whether our magic went out yet.
type handshake struct {
	conn      net.Conn
	peer      string
	timeout   time.Duration
	client    bool
	sentMagic bool
}

func newHandshake(conn net.Conn, peer string, timeout time.Duration) *handshake {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	return &handshake{conn: conn, peer: peer, timeout: timeout}
}

// start puts the whole handshake under one deadline, so that it cannot
// hang whatever the peer does, and makes ctx's cancellation close conn.
// finish reports the outcome and clears the deadline on success.
func (h *handshake) start(ctx context.Context) (finish func(error) error) {
	h.conn.SetDeadline(time.Now().Add(h.timeout))
	stop := context.AfterFunc(ctx, func() { h.conn.Close() })
	return func(err error) error {
		if !stop() {
			return fmt.Errorf("handshake with %s: %w", h.peer, context.Cause(ctx))
		}
		if err != nil {
			return err
		}
		if err := h.conn.SetDeadline(time.Time{}); err != nil {
			return fmt.Errorf("handshake with %s: clear deadline: %w", h.peer, err)
		}
		return nil
	}
}

// write sends one frame, preceded by our magic the first time.
func (h *handshake) write(t frameType, payload []byte) error {
	var buf []byte
	if !h.sentMagic {
		buf = append(buf, magic...)
	}
	buf = appendFrameHeader(buf, t, len(payload))
	buf = append(buf, payload...)
	if _, err := h.conn.Write(buf); err != nil {
		return h.ioError(err)
	}
	h.sentMagic = true
	return nil
}

func (h *handshake) readMagic() error {
	var got [len(magic)]byte
	if _, err := io.ReadFull(h.conn, got[:]); err != nil {
		return h.ioError(err)
	}
	if string(got[:]) == magic {
		return nil
	}
	if !h.client {
		return protocolf("the client at %s is not a schedsync slave (it sent %q)", h.conn.RemoteAddr(), got[:])
	}
	if got[0] == tlsHandshakeRecord || got[0] == tlsAlertRecord {
		return &kindError{kind: ErrTLSMismatch, msg: fmt.Sprintf(
			"the %s speaks TLS on its sync port; set tls.ca (and tls.cert/tls.key) on the slave", h.peer)}
	}
	return protocolf("the %s is not a schedsync sync port (it answered %q); check master.host and master.port",
		h.peer, got[:])
}

// read reads the next frame, which must be of type want. An Error frame
// instead is the peer's refusal and comes back as a *RefusedError.
func (h *handshake) read(want frameType) (frame, error) {
	f, err := readFrame(h.conn, handshakeMaxFrame)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			return frame{}, fmt.Errorf("handshake with %s: %w", h.peer, err)
		}
		return frame{}, h.ioError(err)
	}
	switch f.typ {
	case want:
		return f, nil
	case typeError:
		refusal, err := decodeError(f.payload)
		if err != nil {
			return frame{}, fmt.Errorf("handshake with %s: %w", h.peer, err)
		}
		return frame{}, refusal
	}
	return frame{}, protocolf("handshake with %s: got %s, expected %s", h.peer, f.typ, want)
}

// refuse sends a refusal and returns it, wrapped with who was refused.
// Sending is best effort: the refusal is the error either way.
func (h *handshake) refuse(r *RefusedError) error {
	h.write(typeError, r.encodeHead())
	return fmt.Errorf("refuse %s: %w", h.peer, r)
}

// refuseProtocol answers a malformed frame with a protocol refusal, so that
// a buggy slave learns why; I/O errors and the slave's own refusal get no
// answer.
func (h *handshake) refuseProtocol(err error) error {
	var refusal *RefusedError
	if errors.As(err, &refusal) || !errors.Is(err, ErrProtocol) {
		return err
	}
	h.write(typeError, (&RefusedError{Code: CodeProtocol, Message: err.Error()}).encodeHead())
	return err
}

func (e *RefusedError) encodeHead() []byte {
	head, _ := e.encode(nil)
	return head
}

// ioError says what a failed read or write means for the operator.
func (h *handshake) ioError(err error) error {
	switch {
	case errors.Is(err, ErrTLSMismatch), errors.Is(err, ErrProtocol):
		return err // already explained, by the listener's TLS check
	case h.client && isTLSAlert(err):
		return explainTLSAlert(h.peer, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("the %s did not complete the handshake within %s: %w", h.peer, h.timeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("the %s closed the connection during the handshake: %w", h.peer, err)
	}
	return fmt.Errorf("handshake with %s: %w", h.peer, err)
}
