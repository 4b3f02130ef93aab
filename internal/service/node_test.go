package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/ship"
	"github.com/schedsync/schedsync/spool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func mustExec(t *testing.T, url, sql string, args ...any) {
	t.Helper()
	pgtest.Exec(t, url, sql, args...)
}

func install(t *testing.T, url string, role config.Role) {
	installMode(t, url, role, config.CaptureTrigger)
}

// newRepositories makes a master and a slave repository in the shared
// cluster, runs schema on both (unless empty) and installs schedsync.
func newRepositories(t *testing.T, schema string) (masterURL, slaveURL string) {
	t.Helper()
	masterURL, slaveURL = pgtest.NewDB(t), pgtest.NewDB(t)
	if schema != "" {
		mustExec(t, masterURL, schema)
		mustExec(t, slaveURL, schema)
	}
	install(t, masterURL, config.RoleMaster)
	install(t, slaveURL, config.RoleSlave)
	return masterURL, slaveURL
}

func installMode(t *testing.T, url string, role config.Role, mode config.CaptureMode) {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := capture.Install(context.Background(), c, capture.InstallOptions{Schemas: []string{"public"}, Role: role, Mode: mode}); err != nil {
		t.Fatalf("install %s: %v", role, err)
	}
}

func baseConfig(t *testing.T, role, url string) config.Config {
	c := config.DefaultConfig()
	c.Node.Role = config.Role(role)
	c.Node.Name = role + "1"
	c.Repository.URL = url
	c.Sync.Token = "test-token"
	c.Sync.Heartbeat = 300 * time.Millisecond
	c.Sync.Listen = "127.0.0.1:0"
	c.Spool.Dir = t.TempDir()
	c.Capture.PollInterval = time.Second
	return c
}

func slaveConfig(t *testing.T, url, masterAddr string) config.Config {
	c := baseConfig(t, "slave", url)
	host, port, _ := net.SplitHostPort(masterAddr)
	c.Master.Host = host
	c.Master.Port, _ = strconv.Atoi(port)
	return c
}

// running is a node started in this process.
type running struct {
	node   Node
	cancel context.CancelFunc
	done   chan error
}

// start runs a node and waits until it is ready or has failed.
func start(t *testing.T, n Node) (*running, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{node: n, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() { r.done <- n.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
		t.Cleanup(func() { r.stop(t) })
		return r, nil
	case err := <-r.done:
		cancel()
		return nil, err
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("node not ready after 60s")
		return nil, nil
	}
}

// ended waits up to limit for the node to stop by itself: true and its
// error, or false if it is still running then.
func (r *running) ended(limit time.Duration) (bool, error) {
	select {
	case err := <-r.done:
		r.cancel()
		r.cancel = nil // nothing left for stop to wait for
		return true, err
	case <-time.After(limit):
		return false, nil
	}
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("node stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("node did not stop within 30s")
	}
}

func startMaster(t *testing.T, cfg config.Config) (*Master, *running) {
	t.Helper()
	m, err := NewMaster(cfg, testLogger(t).With("node", "master"), NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := start(t, m)
	if err != nil {
		t.Fatalf("start master: %v", err)
	}
	return m, r
}

// newSlave builds a slave that retries for wait before it is ready
// (start --wait).
func newSlave(t *testing.T, cfg config.Config, wait time.Duration) *Slave {
	t.Helper()
	s, err := NewSlave(cfg, testLogger(t).With("node", "slave"), NodeOptions{Wait: wait})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readSpool reads the transactions of a spool after position after, up to
// its durable position. It reports false if after is no longer retained.
func readSpool(t *testing.T, sp *spool.Spool, after uint64) ([]*change.Txn, bool) {
	t.Helper()
	last := sp.DurablePosition()
	r, err := sp.NewReader(after)
	if errors.Is(err, spool.ErrNotRetained) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []*change.Txn
	for p := after; p < last; {
		var src change.TxnSource
		if p, src, err = r.Next(context.Background()); err != nil {
			if errors.Is(err, spool.ErrNotRetained) {
				return nil, false
			}
			t.Fatalf("read spool: %v", err)
		}
		txn, err := change.ReadAll(src)
		if err != nil {
			t.Fatalf("read transaction %d: %v", p, err)
		}
		txn.LSN = p // keep the position with the transaction for comparison
		out = append(out, txn)
	}
	return out, true
}

// sameSpools compares what the slave spool still holds with the master's.
func sameSpools(t *testing.T, master, slave *spool.Spool) int {
	t.Helper()
	for try := 0; try < 5; try++ {
		after := slave.FirstPosition() - 1
		got, ok1 := readSpool(t, slave, after)
		want, ok2 := readSpool(t, master, after)
		if !ok1 || !ok2 {
			continue // retention moved on while reading
		}
		if len(got) != len(want) {
			t.Fatalf("after position %d the slave has %d transactions, the master %d", after, len(got), len(want))
		}
		for i := range want {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("transaction at position %d differs", want[i].LSN)
			}
		}
		return len(want)
	}
	t.Fatalf("could not read a stable range of the spools")
	return 0
}

// TestStreamingSurvivesConnectionFaults ships a stream of transactions with
// large values through a proxy that cuts connections mid-frame, delays them
// and stalls them past the heartbeat deadline. The slave spool must end
// identical to the master's: nothing lost, nothing duplicated.
func TestStreamingSurvivesConnectionFaults(t *testing.T) {
	masterURL, slaveURL := newRepositories(t, `CREATE TABLE t (id int PRIMARY KEY, payload text)`)
	m, _ := startMaster(t, baseConfig(t, "master", masterURL))

	proxy := newFaultProxy(t, m.addr, 64<<10, time.Second)
	scfg := slaveConfig(t, slaveURL, proxy.addr())
	scfg.Spool.SegmentSize = 64 << 10 // many segments, so retention shows
	s := newSlave(t, scfg, 30*time.Second)
	if _, err := start(t, s); err != nil {
		t.Fatalf("start slave: %v", err)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, masterURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rng := rand.New(rand.NewSource(7))
	const txns = 600
	for i := 0; i < txns; i++ {
		// Random-ish payloads compress poorly, so records and frames are big.
		payload := make([]byte, rng.Intn(20000))
		for j := range payload {
			payload[j] = byte('a' + rng.Intn(26))
		}
		_, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload`,
			rng.Intn(200), string(payload))
		if err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(300 * time.Millisecond) // let cuts and stalls happen mid-stream
		}
	}
	eventually.That(t, "capture of every transaction", 60*time.Second, func() bool { return m.sp.DurablePosition() >= txns })
	proxy.faults.Store(false)
	eventually.That(t, "the slave to receive everything", 90*time.Second, func() bool {
		return s.sp.DurablePosition() == m.sp.DurablePosition()
	})
	if proxy.cuts.Load() < 5 {
		t.Fatalf("only %d cuts happened; the test proves nothing", proxy.cuts.Load())
	}
	compared := sameSpools(t, m.sp, s.sp)
	eventually.That(t, "the slave to apply everything", 60*time.Second, func() bool { return s.applied.Load() == m.sp.DurablePosition() })
	if mf, sf := tableFingerprint(t, masterURL, "t"), tableFingerprint(t, slaveURL, "t"); mf != sf {
		t.Fatalf("slave table differs from the master's: %s vs %s", sf, mf)
	}
	// The slave keeps no spool it has applied: whole segments go.
	eventually.That(t, "the slave to delete applied segments", 10*time.Second, func() bool { return s.sp.FirstPosition() > 1 })
	t.Logf("%d transactions identical after %d cuts and %d stalls", compared, proxy.cuts.Load(), proxy.stalls.Load())
}

func tableFingerprint(t *testing.T, url, table string) string {
	t.Helper()
	var fp string
	pgtest.QueryRow(t, url, `SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM `+table+` x`).Scan(&fp)
	return fp
}

func TestSlaveRefusals(t *testing.T) {
	masterURL, slaveURL := newRepositories(t, "")
	mcfg := baseConfig(t, "master", masterURL)
	m, _ := startMaster(t, mcfg)
	eventually.That(t, "master to reach its repository", 30*time.Second, func() bool { return m.Status().State == StateStreaming })

	t.Run("wrong token", func(t *testing.T) {
		cfg := slaveConfig(t, slaveURL, m.addr)
		cfg.Sync.Token = "other"
		_, err := start(t, newSlave(t, cfg, 10*time.Second))
		if !errors.Is(err, ship.ErrAuth) || !strings.Contains(err.Error(), "sync.token") {
			t.Fatalf("want an authentication error naming sync.token, got %v", err)
		}
	})
	t.Run("same repository", func(t *testing.T) {
		_, err := start(t, newSlave(t, slaveConfig(t, masterURL, m.addr), 10*time.Second))
		if !errors.Is(err, ship.ErrSameRepository) {
			t.Fatalf("want a same-repository refusal, got %v", err)
		}
	})
	t.Run("master not reachable", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		_, err := start(t, newSlave(t, slaveConfig(t, slaveURL, addr), 0))
		if err == nil || !strings.Contains(err.Error(), "master sync service at "+addr+" is not reachable; start the master first") {
			t.Fatalf("want 'start the master first', got %v", err)
		}
	})
}

// TestBacklogRefusal: a slave that stayed away while more than
// spool.max_backlog was captured is refused with docs/DESIGN.md's message and
// ErrNeedsResync, and the master stops keeping spool for it.
func TestBacklogRefusal(t *testing.T) {
	masterURL, slaveURL := newRepositories(t, `CREATE TABLE t (id int PRIMARY KEY, payload text)`)
	mcfg := baseConfig(t, "master", masterURL)
	mcfg.Spool.MaxBacklog = 64 << 10
	m, _ := startMaster(t, mcfg)
	scfg := slaveConfig(t, slaveURL, m.addr)
	s, err := start(t, newSlave(t, scfg, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s.stop(t)
	// 500 rows of random text: far more than 64 KiB even compressed.
	mustExec(t, masterURL, `INSERT INTO t SELECT g.i, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 20 + 0 * g.i)) FROM generate_series(1, 500) g(i)`)
	eventually.That(t, "capture", 30*time.Second, func() bool { return m.sp.DurablePosition() >= 1 })

	_, err = start(t, newSlave(t, scfg, 10*time.Second))
	if !errors.Is(err, ship.ErrNeedsResync) {
		t.Fatalf("want ship.ErrNeedsResync, got %v", err)
	}
	want := fmt.Sprintf("slave %s has ", scfg.Node.Name)
	tail := fmt.Sprintf(" bytes of changes to be processed since last disconnection, which exceeds spool.max_backlog (%d bytes) on the master; run backup and restore (schedsync resync) to re-sync the slave", 64<<10)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tail) {
		t.Fatalf("refusal message is not docs/DESIGN.md's: %v", err)
	}
	st := m.Status()
	if len(st.Slaves) != 1 || !st.Slaves[0].NeedsResync {
		t.Fatalf("master does not mark the slave needs_resync: %+v", st.Slaves)
	}
	// The master no longer keeps spool for it: retention cuts to the limit.
	eventually.That(t, "retention", 10*time.Second, func() bool {
		return m.sp.BytesAfter(m.sp.FirstPosition()-1) <= 2*int64(mcfg.Spool.MaxBacklog)+int64(mcfg.Spool.SegmentSize)
	})
}

// TestMasterRepositoryRestart: the master's database goes away and comes
// back; the master keeps serving, shows master_unavailable (and so does the
// slave), and resumes capture by itself.
// TestMasterRepositoryRestart crashes the master's PostgreSQL (immediate
// stop) under a running pair, in both capture modes: capture reconnects by
// itself and nothing is spooled twice. (A slot sending again what the
// spool holds is forced in capture's TestLogicalRestartSkipsWhatTheSpoolHolds.)
func TestMasterRepositoryRestart(t *testing.T) {
	for _, mode := range []config.CaptureMode{config.CaptureTrigger, config.CaptureLogical} {
		t.Run(string(mode), func(t *testing.T) { masterRepositoryRestart(t, mode) })
	}
}

func masterRepositoryRestart(t *testing.T, mode config.CaptureMode) {
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	masterURL, err := cl.CreateDB(ctx, "repo")
	if err != nil {
		t.Fatal(err)
	}
	slaveURL := pgtest.NewDB(t)
	mustExec(t, masterURL, `CREATE TABLE t (id int PRIMARY KEY)`)
	mustExec(t, slaveURL, `CREATE TABLE t (id int PRIMARY KEY)`)
	installMode(t, masterURL, config.RoleMaster, mode)
	install(t, slaveURL, config.RoleSlave)
	mcfg := baseConfig(t, "master", masterURL)
	mcfg.Capture.Mode = config.CaptureMode(mode)
	m, _ := startMaster(t, mcfg)
	s := newSlave(t, slaveConfig(t, slaveURL, m.addr), 10*time.Second)
	if _, err := start(t, s); err != nil {
		t.Fatal(err)
	}
	mustExec(t, masterURL, `INSERT INTO t VALUES (1)`)
	eventually.That(t, "first row on the slave spool", 20*time.Second, func() bool { return s.sp.DurablePosition() == 1 })

	if err := cl.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	eventually.That(t, "master_unavailable on the master", 20*time.Second, func() bool { return m.Status().State == StateMasterUnavailable })
	eventually.That(t, "master_unavailable on the slave", 20*time.Second, func() bool { return s.Status().State == StateMasterUnavailable })
	if err := cl.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually.That(t, "capture to resume", 60*time.Second, func() bool { return m.Status().State == StateStreaming })
	mustExec(t, masterURL, `INSERT INTO t VALUES (2)`)
	eventually.That(t, "second row on the slave spool", 20*time.Second, func() bool { return s.sp.DurablePosition() == 2 })
	if st := s.Status(); st.State != StateStreaming {
		t.Fatalf("slave state %s after the master's repository came back", st.State)
	}
}

// TestMasterRefusesAnotherRepository: a spool captured from one repository
// is never fed from another (positions and transaction ids would mix).
func TestMasterRefusesAnotherRepository(t *testing.T) {
	first, second := pgtest.NewDB(t), pgtest.NewDB(t)
	install(t, first, config.RoleMaster)
	install(t, second, config.RoleMaster)
	cfg := baseConfig(t, "master", first)
	m, r := startMaster(t, cfg)
	eventually.That(t, "capture", 20*time.Second, func() bool { return m.Status().State == StateStreaming })
	r.stop(t)

	cfg.Repository.URL = second
	m2, _ := startMaster(t, cfg)
	eventually.That(t, "the refusal", 20*time.Second, func() bool {
		st := m2.Status()
		return st.State == StateMasterUnavailable && strings.Contains(st.Error, "was captured from")
	})
}

// TestSeveralSlavesAndRetention: two slaves stream from one master, which
// lists both; while one is away, retention keeps what it still needs, and
// releases it once it has caught up.
// auditRows counts the audit rows trigger capture has not yet confirmed.
func auditRows(t *testing.T, url string) int {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM schedsync.audit`).Scan(&n)
	return n
}

func TestSeveralSlavesAndRetention(t *testing.T) {
	masterURL, urlA, urlB := pgtest.NewDB(t), pgtest.NewDB(t), pgtest.NewDB(t)
	schema := `CREATE TABLE t (id int PRIMARY KEY, payload text)`
	for _, url := range []string{masterURL, urlA, urlB} {
		mustExec(t, url, schema)
	}
	install(t, masterURL, config.RoleMaster)
	install(t, urlA, config.RoleSlave)
	install(t, urlB, config.RoleSlave)
	mcfg := baseConfig(t, "master", masterURL)
	mcfg.Spool.SegmentSize = 64 << 10
	m, _ := startMaster(t, mcfg)
	cfgA, cfgB := slaveConfig(t, urlA, m.addr), slaveConfig(t, urlB, m.addr)
	cfgA.Node.Name, cfgB.Node.Name = "slave-a", "slave-b"
	a := newSlave(t, cfgA, 10*time.Second)
	if _, err := start(t, a); err != nil {
		t.Fatal(err)
	}
	b := newSlave(t, cfgB, 10*time.Second)
	rb, err := start(t, b)
	if err != nil {
		t.Fatal(err)
	}
	bulk := func(from int) {
		mustExec(t, masterURL, fmt.Sprintf(`INSERT INTO t SELECT g, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 10 + 0 * g))
			FROM generate_series(%d, %d) g`, from, from+999))
	}
	// Caught up: capture has spooled every committed insert (the audit
	// table is empty only once a batch is durable and confirmed), and the
	// slave has applied all the spool holds.
	caughtUp := func(s *Slave) func() bool {
		return func() bool {
			return auditRows(t, masterURL) == 0 && m.sp.DurablePosition() > 0 && s.applied.Load() == m.sp.DurablePosition()
		}
	}
	bulk(1)
	eventually.That(t, "both slaves to apply", 30*time.Second, func() bool { return caughtUp(a)() && caughtUp(b)() })
	if st := m.Status(); len(st.Slaves) != 2 || !st.Slaves[0].Connected || !st.Slaves[1].Connected {
		t.Fatalf("master lists %+v", st.Slaves)
	}

	rb.stop(t)
	bAt := b.applied.Load()
	for i := 1; i <= 4; i++ {
		bulk(1000*i + 1)
	}
	eventually.That(t, "slave a to apply", 30*time.Second, caughtUp(a))
	if err := m.retain(); err != nil {
		t.Fatal(err)
	}
	if first := m.sp.FirstPosition(); first > bAt+1 {
		t.Fatalf("retention dropped position %d that the stopped slave-b (applied %d) still needs", first, bAt)
	}
	st := m.Status()
	if !st.Slaves[0].Connected || st.Slaves[1].Connected || st.Slaves[1].BacklogBytes == 0 {
		t.Fatalf("status while slave-b is away: %+v", st.Slaves)
	}

	b2 := newSlave(t, cfgB, 10*time.Second)
	if _, err := start(t, b2); err != nil {
		t.Fatal(err)
	}
	eventually.That(t, "slave-b to catch up", 30*time.Second, caughtUp(b2))
	eventually.That(t, "retention to release what slave-b no longer needs", 15*time.Second, func() bool {
		return m.sp.FirstPosition() > bAt+1
	})
	if a, b := tableFingerprint(t, urlA, "t"), tableFingerprint(t, urlB, "t"); a != b || a != tableFingerprint(t, masterURL, "t") {
		t.Fatalf("slaves differ: %s / %s", a, b)
	}
}
