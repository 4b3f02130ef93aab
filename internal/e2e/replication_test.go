package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

const (
	// scenarioTimeout bounds the database work of the whole scenario.
	scenarioTimeout = 6 * time.Minute
	// recoverTimeout bounds the return to streaming after a fault: the
	// slave's reconnect backoff is capped at 10s, its apply backoff at 30s.
	recoverTimeout = 60 * time.Second
	// catchUpTimeout bounds the slave's catching up once the load stops.
	catchUpTimeout = 90 * time.Second
	// caughtUpFor is how long the positions must stay equal before the
	// slave counts as caught up: several capture polls (200ms) and
	// heartbeats (1s), so that no captured change is still in flight.
	caughtUpFor = 2500 * time.Millisecond
	// workloadGap is how long the workload runs between faults.
	workloadGap = 4 * time.Second
	// dbDownFor is how long the slave's database stays down.
	dbDownFor = 3 * time.Second
	// verifyTimeout bounds `schedsync verify`.
	verifyTimeout = 2 * time.Minute
)

// world is the scenario's setup: two clusters, each holding one node's
// repository (database "sched"), the two nodes, and a pool on the master
// repository for the workload.
type world struct {
	masterDB, slaveDB *pgtest.Cluster
	master, slave     *node
	pool              *pgxpool.Pool
	schemas           []string      // replicated besides public, compared by requireSameRows
	resyncTook        time.Duration // the soak's last whole resync
}

// TestReplicationSurvivesCrashes is issue 5's end-to-end scenario: an empty
// slave converges by streaming from position 0 while a Quartz workload runs
// and the slave service, the master service and the slave database crash in
// turn; then the slave must hold exactly the master's rows, sequences at or
// ahead of the master's, and verify must agree and catch a changed row.
// It runs once per capture mode.
func TestReplicationSurvivesCrashes(t *testing.T) {
	inEachMode(t, replicationSurvivesCrashes)
}

// captureModes are the values of capture.mode; the end-to-end scenarios
// run in each.
var captureModes = []string{"trigger", "logical"}

// inEachMode runs a scenario once per capture mode, as a subtest named
// for it.
func inEachMode(t *testing.T, scenario func(t *testing.T, mode string)) {
	t.Helper()
	requirePostgres(t)
	for _, mode := range captureModes {
		t.Run(mode, func(t *testing.T) { scenario(t, mode) })
	}
}

func replicationSurvivesCrashes(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, mode)
	l, ok := w.installAndLoad(t, ctx)
	if !ok {
		return
	}
	faults := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"kill -9 slave service", w.crashSlaveService},
		{"kill -9 master service", w.crashMasterService},
		{"slave database crash", func(t *testing.T) { w.crashSlaveDB(t, ctx) }},
	}
	for _, f := range faults {
		time.Sleep(workloadGap)
		if !t.Run(f.name, f.run) {
			return
		}
	}
	time.Sleep(workloadGap)
	l.stop()
	l.report(t)
	if !t.Run("catch up", w.waitCaughtUp) {
		return
	}
	if !t.Run("tables equal", func(t *testing.T) { w.checkEqual(t, ctx) }) {
		return
	}
	t.Run("verify", func(t *testing.T) { w.verify(t, ctx) })
	t.Run("stop", w.stopServices)
}

func newWorld(t *testing.T, ctx context.Context, mode string) *world {
	t.Helper()
	return newWorldWith(t, ctx, mode, nil, nil)
}

// newWorldWith is newWorld with extra config lines for the master and the
// slave.
func newWorldWith(t *testing.T, ctx context.Context, mode string, masterExtra, slaveExtra []string) *world {
	t.Helper()
	bin := schedsyncBinary(t)
	w := &world{}
	w.masterDB, w.slaveDB = startClusters(t, ctx)
	masterURL := createRepository(t, ctx, w.masterDB)
	slaveURL := createRepository(t, ctx, w.slaveDB)
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	syncPort := freePort(t)
	w.master = newNode(t, bin, nodeConfig{role: "master", name: "e2e-master", repo: masterURL, mode: mode,
		listen: syncPort, masterPort: syncPort, token: hex.EncodeToString(token), extra: masterExtra})
	w.slave = newNode(t, bin, nodeConfig{role: "slave", name: "e2e-slave", repo: slaveURL, mode: mode,
		listen: freePort(t), masterPort: syncPort, token: hex.EncodeToString(token), extra: slaveExtra})
	// Registered after the nodes and clusters, so it runs before they are
	// killed and removed.
	t.Cleanup(func() {
		if t.Failed() {
			w.dumpLogs(t)
		}
	})
	w.pool = newPool(t, masterURL)
	return w
}

// startClusters starts the master's and the slave's cluster, in parallel.
func startClusters(t *testing.T, ctx context.Context) (master, slave *pgtest.Cluster) {
	t.Helper()
	var g errgroup.Group
	cs := make([]*pgtest.Cluster, 2)
	for i := range cs {
		g.Go(func() error {
			var err error
			cs[i], err = pgtest.Start(ctx, pgtest.Options{})
			return err
		})
	}
	err := g.Wait()
	for _, c := range cs {
		if c != nil {
			t.Cleanup(func() {
				if err := c.Stop(); err != nil {
					t.Errorf("stop cluster: %v", err)
				}
			})
		}
	}
	if err != nil {
		t.Fatalf("start clusters: %v", err)
	}
	return cs[0], cs[1]
}

// createRepository creates database sched with the Quartz schema and the
// extra table, and returns its URL.
func createRepository(t *testing.T, ctx context.Context, c *pgtest.Cluster) string {
	t.Helper()
	url, err := c.CreateDB(ctx, "sched")
	if err != nil {
		t.Fatal(err)
	}
	createTables(t, ctx, url)
	return url
}

// createTables creates the Quartz schema and the extra table in the
// database of url, as url's role.
func createTables(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := quartz.CreateSchema(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, extraSchema); err != nil {
		t.Fatalf("create the extra schema: %v", err)
	}
}

// install runs `schedsync install` on both nodes, while the tables are
// empty: the slave then starts from position 0 and converges by streaming.
func (w *world) install(t *testing.T) {
	t.Helper()
	for _, n := range []*node{w.master, w.slave} {
		out := n.mustRun(t, cmdTimeout, "install")
		t.Logf("%s: schedsync install:\n%s", n.name, strings.TrimSpace(out))
	}
}

// installAndLoad installs both nodes, seeds the Quartz tables, starts the
// services (a subtest "start") and the workload, stopped at cleanup; ok
// is false when the services did not start.
func (w *world) installAndLoad(t *testing.T, ctx context.Context) (l *load, ok bool) {
	t.Helper()
	w.install(t)
	if err := quartz.Seed(ctx, w.pool, quartzOptions); err != nil {
		t.Fatalf("seed the quartz tables: %v", err)
	}
	if !t.Run("start", w.startServices) {
		return nil, false
	}
	l = startLoad(w.pool)
	t.Cleanup(l.stop)
	return l, true
}

func (w *world) startServices(t *testing.T) {
	w.master.start(t)
	w.slave.start(t)
	w.master.waitStreaming(t, recoverTimeout)
	w.slave.waitStreaming(t, recoverTimeout)
	w.waitSlaveConnected(t)
}

// waitSlaveConnected waits until the master lists the slave as connected.
func (w *world) waitSlaveConnected(t *testing.T) {
	t.Helper()
	eventually.True(t, "the master to list the slave as connected", recoverTimeout, func() (bool, string) {
		st, err := w.master.status()
		if err != nil {
			return false, err.Error()
		}
		sl, ok := st.slave(w.slave.name)
		return ok && sl.Connected, fmt.Sprintf("slaves %+v", st.Slaves)
	})
}

// waitRecovered waits until both services stream again and the slave has
// applied what the master had captured by then: changes flow end to end.
func (w *world) waitRecovered(t *testing.T) {
	t.Helper()
	w.master.waitStreaming(t, recoverTimeout)
	w.slave.waitStreaming(t, recoverTimeout)
	w.waitSlaveConnected(t)
	target := w.master.mustStatus(t).Position
	eventually.True(t, fmt.Sprintf("the slave to apply up to position %d", target), recoverTimeout, func() (bool, string) {
		st, err := w.slave.status()
		if err != nil {
			return false, err.Error()
		}
		return st.Position >= target, st.String()
	})
	t.Logf("recovered: the slave applied position %d", target)
}

func (w *world) crashSlaveService(t *testing.T) {
	w.slave.kill9(t)
	w.slave.start(t)
	w.waitRecovered(t)
}

func (w *world) crashMasterService(t *testing.T) {
	w.master.kill9(t)
	w.master.start(t)
	w.waitRecovered(t)
}

// crashSlaveDB crashes the slave's database server under the running
// slave service, which must stay up and retry, and restarts it.
func (w *world) crashSlaveDB(t *testing.T, ctx context.Context) {
	if err := w.slaveDB.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	t.Log("slave database stopped (immediate)")
	for end := time.Now().Add(dbDownFor); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		st := w.slave.mustStatus(t)
		if !st.Running {
			t.Fatalf("the slave service died while its database was down: %s", st)
		}
	}
	t.Logf("slave service while its database is down: %s", w.slave.mustStatus(t))
	if err := w.slaveDB.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("slave database restarted")
	w.waitRecovered(t)
}

// waitCaughtUp waits, once the load has stopped, until the slave has
// applied exactly the master's position, the master knows it, and that
// stays so for caughtUpFor.
func (w *world) waitCaughtUp(t *testing.T) {
	var since time.Time
	var pos uint64
	var m, s status
	eventually.True(t, "the slave to apply the master's position", catchUpTimeout, func() (bool, string) {
		var err error
		if m, err = w.master.status(); err != nil {
			return false, err.Error()
		}
		if s, err = w.slave.status(); err != nil {
			return false, err.Error()
		}
		sl, _ := m.slave(w.slave.name)
		desc := fmt.Sprintf("master %s; slave %s; master's view of the slave %+v", m, s, sl)
		if m.Position == 0 || s.Position != m.Position || sl.AppliedPosition != m.Position {
			since = time.Time{}
			return false, desc
		}
		if since.IsZero() || m.Position != pos {
			since, pos = time.Now(), m.Position
		}
		return time.Since(since) >= caughtUpFor, desc
	})
	t.Logf("caught up at position %d", pos)
	if s.LagSeconds != 0 || s.BacklogBytes != 0 || s.ReceivedPosition != pos {
		t.Errorf("caught-up slave reports lag %.1fs, backlog %d bytes, received position %d (want 0, 0, %d)",
			s.LagSeconds, s.BacklogBytes, s.ReceivedPosition, pos)
	}
}

// checkEqual compares every table and sequence of the two repositories.
func (w *world) checkEqual(t *testing.T, ctx context.Context) {
	ms, err := takeSnapshot(ctx, w.master.repo)
	if err != nil {
		t.Fatalf("master: %v", err)
	}
	ss, err := takeSnapshot(ctx, w.slave.repo)
	if err != nil {
		t.Fatalf("slave: %v", err)
	}
	t.Logf("master tables: %v", ms.tables)
	t.Logf("sequences: master %v, slave %v", ms.sequences, ss.sequences)
	if d := differences(ms, ss); d != "" {
		t.Fatalf("the slave differs from the master:\n%s", d)
	}
}

// verify runs `schedsync verify` on the slave: it must find the
// repositories equal, then find the row changed on the slave behind the
// service's back.
func (w *world) verify(t *testing.T, ctx context.Context) {
	w.verifyEqual(t)
	conn, err := pgx.Connect(ctx, w.slave.repo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Flip a bit: the workload's values include the extremes of int4 and
	// descriptions of the full varchar length, so +1 or appending can fail.
	tag, err := conn.Exec(ctx, `UPDATE qrtz_triggers SET priority = priority # 1
		WHERE ctid = (SELECT ctid FROM qrtz_triggers WHERE priority IS NOT NULL LIMIT 1)`)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("change one qrtz_triggers row on the slave: %v (%d rows)", err, tag.RowsAffected())
	}
	r, err := w.slave.run(verifyTimeout, "verify")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("schedsync verify (one qrtz_triggers row changed on the slave): exit %d\n%s", r.code, r.output())
	if r.code != 1 || !strings.Contains(r.output(), "qrtz_triggers") {
		t.Errorf("verify after changing a qrtz_triggers row on the slave: exit %d, want 1 and output naming qrtz_triggers", r.code)
	}
}

// verifyEqual runs `schedsync verify` on the slave of repositories that
// must be equal: exit 0 and output saying so.
func (w *world) verifyEqual(t *testing.T) {
	t.Helper()
	r, err := w.slave.run(verifyTimeout, "verify")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("schedsync verify (equal repositories): exit %d\n%s", r.code, r.output())
	if r.code != 0 || !strings.Contains(strings.ToLower(r.output()), "equal") {
		t.Errorf("verify of equal repositories: exit %d, want 0 and output saying equal", r.code)
	}
}

func (w *world) stopServices(t *testing.T) {
	for _, n := range []*node{w.slave, w.master} {
		n.stop(t)
		if st := n.mustStatus(t); st.Running || st.State != "stopped" {
			t.Errorf("%s after stop: %s, want running=false state=stopped", n.name, st)
		}
	}
}

// dumpLogs shows the end of every log of the scenario, to diagnose a
// failure.
func (w *world) dumpLogs(t *testing.T) {
	for _, n := range []*node{w.master, w.slave} {
		t.Logf("---- last lines of %s's log %s:\n%s", n.name, filepath.Join(n.spool, "schedsync.log"), n.logTail(80))
	}
	for name, c := range map[string]*pgtest.Cluster{"master": w.masterDB, "slave": w.slaveDB} {
		path := filepath.Join(c.Dir, "postgres.log")
		t.Logf("---- last lines of the %s's PostgreSQL log %s:\n%s", name, path, pgtest.FileTail(path, 20))
	}
}
