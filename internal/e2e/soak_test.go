package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestSoak is issue 17's fault-injection soak: a master and a slave in
// one capture mode, with the Quartz workload, the side writer and a
// ledger writer (one row per committed transaction in a table without a
// key, so that a transaction applied twice shows as a second copy),
// while faults come at random intervals from a seed that is printed:
// kill -9 of either service (and of a verify in progress), an immediate
// stop and restart of either database, the slave's connection cut in
// the middle of a frame by a proxy that also delays, and clients with a
// wrong token or plain garbage hammering the sync port throughout. At
// the end the slave must hold exactly the master's rows, compared row by
// row as multisets by an independent query.
//
// SCHEDSYNC_SOAK sets the duration per mode (make soak: 10m); without it
// the test runs a short soak, so that CI catches regressions.
// SCHEDSYNC_SOAK_SEED replays a run; SCHEDSYNC_SOAK_MODES picks the modes;
// SCHEDSYNC_SOAK_FAULTS (names of soakFaults, comma-separated) limits the
// faults to those, to work one path hard.
func TestSoak(t *testing.T) {
	requirePostgres(t)
	dur := 45 * time.Second
	if s := os.Getenv("SCHEDSYNC_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SCHEDSYNC_SOAK=%q: %v", s, err)
		}
		dur = d
	}
	modes := captureModes
	if s := os.Getenv("SCHEDSYNC_SOAK_MODES"); s != "" {
		modes = strings.Split(s, ",")
	}
	allowed, err := allowedFaults(os.Getenv("SCHEDSYNC_SOAK_FAULTS"), os.Geteuid() == 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { soak(t, mode, dur, allowed) })
	}
}

// soakFaults are the faults, by name.
var soakFaults = []string{"kill -9 master service", "kill -9 slave service", "master database crash",
	"slave database crash", "connection cut", "kill -9 verify", "kill -9 resync", "slave spool corrupt",
	"slave disk full", "master disk full"}

// faultWeights weigh the draw: the kills of the services come most
// often; a re-seed and a corrupt spool, which take longer, least.
var faultWeights = []int{6, 6, 2, 2, 2, 2, 1, 1, 1, 1}

// allowedFaults is the set of faults a soak may draw: those named in list
// (all when empty) that can run here. A full disk needs the small
// filesystem only root can mount.
func allowedFaults(list string, root bool) (map[string]bool, error) {
	allowed := map[string]bool{}
	for _, f := range soakFaults {
		allowed[f] = list == ""
	}
	if list != "" {
		for _, f := range strings.Split(list, ",") {
			f = strings.TrimSpace(f)
			if _, ok := allowed[f]; !ok {
				return nil, fmt.Errorf("SCHEDSYNC_SOAK_FAULTS: unknown fault %q; the faults are %q", f, soakFaults)
			}
			allowed[f] = true
		}
	}
	if !root {
		for _, f := range soakFaults {
			if strings.HasSuffix(f, " disk full") {
				allowed[f] = false
			}
		}
	}
	for _, ok := range allowed {
		if ok {
			return allowed, nil
		}
	}
	return nil, fmt.Errorf("SCHEDSYNC_SOAK_FAULTS=%q: none of these faults can run here (disk-full faults need root)", list)
}

// drawFault picks a fault by weight among the allowed ones.
func drawFault(rng *mrand.Rand, allowed map[string]bool) string {
	total := 0
	for i, w := range faultWeights {
		if allowed[soakFaults[i]] {
			total += w
		}
	}
	n := rng.IntN(total)
	for i, w := range faultWeights {
		if !allowed[soakFaults[i]] {
			continue
		}
		if n < w {
			return soakFaults[i]
		}
		n -= w
	}
	panic("drawFault: weights and faults disagree")
}

func soak(t *testing.T, mode string, dur time.Duration, allowed map[string]bool) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SCHEDSYNC_SOAK_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SCHEDSYNC_SOAK_SEED=%q: %v", s, err)
		}
	}
	t.Logf("soak %s for %s, seed %d (replay: SCHEDSYNC_SOAK_SEED=%d SCHEDSYNC_SOAK_MODES=%s)", mode, dur, seed, seed, mode)
	rng := mrand.New(mrand.NewPCG(seed, seed^0x5eed))
	ctx, cancel := context.WithTimeout(context.Background(), dur+10*time.Minute)
	defer cancel()
	both := []string{"capture.allow_no_pk=true", "repository.schemas=public,dbsched"}
	// Small slave segments, so that a backlog fills whole segments a
	// corrupt byte can be put in.
	w := newWorldWith(t, ctx, mode, both, append(both, "spool.segment_size=256KiB"))
	w.schemas = []string{"dbsched"}
	w.execBoth(t, ctx, `CREATE TABLE soak_ledger (n bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())`)
	w.execBoth(t, ctx, dbschedSchema)
	if os.Geteuid() == 0 {
		// Big enough for resync's backup and the free space it keeps.
		mountSmallFS(t, w.slave, 1<<30)
		mountSmallFS(t, w.master, 1<<30)
	} else {
		t.Log("not root: no small filesystems for the spool.dirs, so no disk-full faults")
	}
	proxy := startProxy(t, w.master.listen)
	w.slave.setKey(t, "master.port", strconv.Itoa(proxy.port()))
	l, ok := w.installAndLoad(t, ctx)
	if !ok {
		return
	}
	ledger := startLedger(w.pool)
	t.Cleanup(ledger.stop)
	dbsched := startDBSchedLoad(w.pool)
	t.Cleanup(dbsched.stop)
	bad := startBadClients(fmt.Sprintf("127.0.0.1:%d", w.master.listen))
	t.Cleanup(bad.stop)

	counts, outcomes := map[string]int{}, map[string]int{}
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
		f := drawFault(rng, allowed)
		counts[f]++
		if !w.fault(t, ctx, f, rng, proxy, outcomes) {
			t.Fatalf("fault %q failed (seed %d)", f, seed)
		}
	}
	l.stop()
	ledger.stop()
	dbsched.stop()
	bad.stop()
	// The master's database went down: the workload's errors are expected
	// here, and l.report would count them as failures.
	t.Logf("soak: quartz workload: %+v (err %v); side writer: inserts=%d errors=%d", l.quartzStats, l.quartzErr, l.side.inserts.Load(), l.side.errors.Load())
	var summary []string
	for _, f := range soakFaults {
		summary = append(summary, fmt.Sprintf("%s: %d", f, counts[f]))
	}
	t.Logf("soak: faults (seed %d): %s; connections cut: %d; bad clients: %d; ledger transactions committed: %d; db-scheduler transactions: %d (errors %d)",
		seed, strings.Join(summary, ", "), proxy.cuts.Load(), bad.tries.Load(), ledger.committed.Load(), dbsched.txns.Load(), dbsched.errors.Load())
	t.Logf("soak: outcomes: %v", outcomes)
	start := time.Now()
	w.ensureRunning(t)
	if !t.Run("catch up", w.waitCaughtUp) {
		t.Fatalf("no convergence (seed %d)", seed)
	}
	t.Logf("soak: converged %s after the load stopped", time.Since(start).Round(time.Millisecond))
	t.Run("rows equal", func(t *testing.T) { w.requireSameRows(t, ctx) })
	t.Run("sequences", func(t *testing.T) { w.checkEqual(t, ctx) })
}

// fault injects one fault and brings the pair back to running (not
// necessarily caught up: the next fault may come first).
func (w *world) fault(t *testing.T, ctx context.Context, f string, rng *mrand.Rand, proxy *proxy, outcomes map[string]int) bool {
	t.Helper()
	switch f {
	case "kill -9 master service":
		w.master.kill9(t)
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
		w.master.start(t)
	case "kill -9 slave service":
		w.slave.kill9(t)
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
		w.slave.start(t)
	case "master database crash", "slave database crash":
		db := w.masterDB
		if f == "slave database crash" {
			db = w.slaveDB
		}
		if err := db.StopImmediate(); err != nil {
			t.Error(err)
			return false
		}
		time.Sleep(time.Duration(200+rng.IntN(2000)) * time.Millisecond)
		if err := db.Restart(ctx); err != nil {
			t.Error(err)
			return false
		}
	case "connection cut":
		proxy.setDelay(time.Duration(rng.IntN(30)) * time.Millisecond)
		proxy.cut()
	case "kill -9 verify":
		cmd := w.slave.command(context.Background(), "verify")
		if err := cmd.Start(); err != nil {
			t.Error(err)
			return false
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	case "kill -9 resync":
		return w.killResync(t, rng, outcomes)
	case "slave spool corrupt":
		return w.corruptSpool(t, ctx, outcomes)
	case "slave disk full":
		return w.fillDisk(t, w.slave, rng, outcomes)
	case "master disk full":
		return w.fillDisk(t, w.master, rng, outcomes)
	}
	return true
}

// killResync re-seeds the slave while the master is busy (resync --force)
// and kills it with SIGKILL after 0-6 s: while it fetches the backup,
// loads it, or not at all; then a plain resync must finish the job (or
// find nothing to do) and the slave service must run.
func (w *world) killResync(t *testing.T, rng *mrand.Rand, outcomes map[string]int) bool {
	t.Helper()
	cmd := w.slave.command(context.Background(), "resync", "--force")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return false
	}
	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Half the time the kill waits for the restore to have begun (it marks
	// the slave needs_resync first); otherwise it comes at a random point
	// of a resync as long as the last whole one.
	midRestore := rng.IntN(2) == 0
	kill := time.After(time.Duration(rng.Int64N(int64(w.resyncTook) + 1)))
	if midRestore {
		pollCtx, stopPoll := context.WithCancel(context.Background())
		defer stopPoll()
		kill = w.restoreBegun(pollCtx)
	}
	select {
	case err := <-done:
		w.resyncTook = time.Since(began)
		outcomes["resync finished before the kill"]++
		if err != nil {
			t.Errorf("resync --force: %v\n%s\n%s", err, out.String(), w.slave.logTail(30))
			return false
		}
	case <-kill:
		_ = cmd.Process.Kill()
		<-done
		if midRestore {
			outcomes["resync killed mid-restore"]++
		} else {
			outcomes["resync killed"]++
		}
	}
	r, err := w.slave.run(5*time.Minute, "resync")
	if err != nil || r.code != 0 {
		t.Errorf("resync after a killed resync: %v, exit %d\n%s", err, r.code, r.output())
		return false
	}
	if strings.Contains(r.stdout, "restored") {
		outcomes["resync redone after the kill"]++
	}
	if st, err := w.slave.status(); err == nil && !st.Running {
		w.slave.start(t)
	}
	return true
}

// restoreBegun delivers once the slave's repository says a restore is
// loading (needs_resync set), polling every 10 ms until ctx ends.
func (w *world) restoreBegun(ctx context.Context) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		conn, err := pgx.Connect(ctx, w.slave.repo)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		for ctx.Err() == nil {
			var marked bool
			if conn.QueryRow(ctx, `SELECT needs_resync FROM schedsync.state`).Scan(&marked) == nil && marked {
				ch <- time.Now()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return ch
}

// corruptSpool stops the slave's database, so that the slave receives
// without applying, kills the slave service, flips a byte in a segment it
// has not applied, and brings everything back. The slave must stop at the
// bad byte, naming the segment and the offset, and come back through
// schedsync refetch.
func (w *world) corruptSpool(t *testing.T, ctx context.Context, outcomes map[string]int) bool {
	t.Helper()
	if err := w.slaveDB.StopImmediate(); err != nil {
		t.Error(err)
		return false
	}
	var st status
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st, _ = w.slave.status(); st.Running && st.BacklogBytes >= 768<<10 {
			break
		}
	}
	w.slave.killIfRunning(t)
	if err := w.slaveDB.Restart(ctx); err != nil {
		t.Error(err)
		return false
	}
	// The applied position from the slave's database, not from the last
	// status: a group committed just before the database stopped may not
	// be in the status yet, and a segment it covered is never read again.
	applied, err := strconv.ParseUint(queryRow(t, ctx, w.slave.repo, `SELECT applied_position FROM schedsync.state WHERE id = 1`), 10, 64)
	if err != nil {
		t.Error(err)
		return false
	}
	if applied != st.Position {
		outcomes["spool corrupt: status behind the database"]++
	}
	file, off, ok := flipUnapplied(t, filepath.Join(w.slave.spool, "spool"), applied)
	if !ok {
		outcomes["spool corrupt: no unapplied sealed segment"]++
		w.slave.start(t)
		return true
	}
	r, err := w.slave.run(startTimeout, "start", "--wait", "30s")
	if err != nil {
		t.Error(err)
		return false
	}
	msg := r.output()
	if r.code == 0 {
		found := false
		var last status
		for deadline := time.Now().Add(recoverTimeout); time.Now().Before(deadline) && !found; time.Sleep(250 * time.Millisecond) {
			st, err := w.slave.status()
			found = err == nil && !st.Running && st.State == "failed"
			msg, last = st.Error, st
		}
		if !found {
			t.Errorf("the byte flipped at %d of %s (applied position %d when it was flipped) was not found: the slave did not stop (%s); its status: %s; its log:\n%s",
				off, file, applied, msg, last, w.slave.logTail(40))
			return false
		}
		outcomes["spool corrupt: found by apply"]++
	} else {
		outcomes["spool corrupt: found at start"]++
	}
	if !strings.Contains(msg, filepath.Base(file)) || !strings.Contains(msg, "at byte") {
		t.Errorf("the slave stopped without naming the segment and the offset: %s", msg)
		return false
	}
	if out := w.slave.mustRun(t, cmdTimeout, "refetch"); !strings.Contains(out, "moved the spool aside") {
		t.Errorf("refetch: %s", out)
		return false
	}
	w.slave.start(t)
	// As the README says: delete it once the slave streams again.
	damaged, _ := filepath.Glob(filepath.Join(w.slave.spool, "spool.damaged-*"))
	for _, d := range damaged {
		if err := os.RemoveAll(d); err != nil {
			t.Error(err)
		}
	}
	return true
}

// flipUnapplied flips a byte in the first half of a sealed segment that
// starts after the applied position, if there is one.
func flipUnapplied(t *testing.T, dir string, applied uint64) (string, int64, bool) {
	t.Helper()
	for _, s := range segments(t, dir) {
		if s.lo > applied && s.sealed && s.size >= 256 {
			off := 64 + (s.size/2-64)*int64(s.lo%7)/7
			flipByte(t, s.path, off)
			return s.path, off, true
		}
	}
	return "", 0, false
}

// fillDisk fills the filesystem of n's spool.dir. The service must
// report disk_full and keep running; 0-3 s later the space returns and the
// soak goes on (the catch-up at the end shows it resumed).
func (w *world) fillDisk(t *testing.T, n *node, rng *mrand.Rand, outcomes map[string]int) bool {
	t.Helper()
	free := fillDisk(t, n.spool)
	defer free()
	var st status
	for deadline := time.Now().Add(recoverTimeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if st, _ = n.status(); st.State == "disk_full" {
			break
		}
	}
	if st.State != "disk_full" || !st.Running {
		t.Errorf("the %s did not report disk_full on a full disk: %s", n.name, st)
		return false
	}
	outcomes["disk full reported"]++
	time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
	return true
}

// ensureRunning starts whichever service is not running (a fault may have
// come while a start was failing) and waits until both stream.
func (w *world) ensureRunning(t *testing.T) {
	for _, n := range []*node{w.master, w.slave} {
		if st, err := n.status(); err == nil && !st.Running {
			n.start(t)
		}
	}
	w.master.waitStreaming(t, recoverTimeout)
	w.slave.waitStreaming(t, recoverTimeout)
}

// ledger commits one row per transaction into soak_ledger, which has no
// key: a transaction the slave applied twice would be a second copy.
type ledger struct {
	*loop
	committed atomic.Int64
}

func startLedger(pool *pgxpool.Pool) *ledger {
	l := &ledger{}
	l.loop = startLoop(func(ctx context.Context) {
		for n := int64(1); ctx.Err() == nil; n++ {
			if _, err := pool.Exec(ctx, `INSERT INTO soak_ledger (n) VALUES ($1)`, n); err == nil {
				l.committed.Add(1)
			} else {
				time.Sleep(50 * time.Millisecond) // the master's database is down
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return l
}

// badClients keep dialling the sync port with garbage and with a
// well-formed but unauthenticated start, while replication runs.
type badClients struct {
	*loop
	tries atomic.Int64
}

func startBadClients(addr string) *badClients {
	b := &badClients{}
	b.loop = startLoop(func(ctx context.Context) {
		for i := 0; ctx.Err() == nil; i++ {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				junk := make([]byte, 1+i%300)
				_, _ = rand.Read(junk)
				if i%3 == 0 {
					junk = append([]byte("SCHEDSYNC"), junk...) // looks like a start, then nonsense
				}
				_ = conn.SetDeadline(time.Now().Add(time.Second))
				_, _ = conn.Write(junk)
				_, _ = io.Copy(io.Discard, conn)
				conn.Close()
				b.tries.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return b
}

// proxy forwards the slave's connections to the master's sync port; cut
// closes every connection at once, in the middle of whatever frame is
// passing, and a delay holds every chunk back.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	delay  atomic.Int64
	cuts   atomic.Int64
}

func startProxy(t *testing.T, targetPort int) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: fmt.Sprintf("127.0.0.1:%d", targetPort)}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
	})
	return p
}

func (p *proxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *proxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(from, to net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	from.Close()
	to.Close()
}

// cut closes every connection through the proxy.
func (p *proxy) cut() {
	p.mu.Lock()
	conns := slices.Clone(p.conns)
	p.conns = p.conns[:0]
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	if len(conns) > 0 {
		p.cuts.Add(1)
	}
}
