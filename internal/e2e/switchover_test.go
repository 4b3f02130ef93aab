package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// TestSwitchover is the planned role swap, in both capture modes: under
// the running workload the slave takes over with nothing lost (right after
// it, before anything else is written, the two repositories hold the same
// rows row by row), the roles and generations swap, the old master is read
// only for the scheduler's sessions, its capture state is gone, and it
// streams from the new master without a re-seed; then the pair, idle,
// switches back the same way.
func TestSwitchover(t *testing.T) { inEachMode(t, switchoverScenario) }

var tookLine = regexp.MustCompile(`took ([0-9.]+)s`)

func switchoverScenario(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w, hooks, change := startFailoverPair(t, ctx, mode, "a", "b")
	l := startLoad(w.pool)
	t.Cleanup(l.stop)
	change(w.master.repo, "before the switchover")
	time.Sleep(2 * time.Second)

	a, b := w.master, w.slave
	t.Run("switchover under load", func(t *testing.T) {
		began := time.Now()
		out := b.mustRun(t, 5*time.Minute, "switchover")
		t.Logf("switchover under load took %s (command):\n%s", time.Since(began).Round(time.Millisecond), out)
		if !strings.Contains(out, "switched over") || !strings.Contains(out, "generation 2") {
			t.Fatalf("switchover output: %s", out)
		}
	})
	l.stop()
	t.Logf("workload during the switchover: %+v; side writer %s (its writes fail once the old master is read only)", l.quartzStats, &l.side)
	if t.Failed() {
		return
	}
	requireRoles(t, b, a, 2)
	t.Run("nothing lost", func(t *testing.T) { requireSameRows(t, ctx, b.repo, a.repo) })
	requireHook(t, hooks, "a demote 1")
	requireHook(t, hooks, "b promote 2")
	t.Run("old master read only for the scheduler", func(t *testing.T) {
		conn := connect(t, ctx, a.repo)
		_, err := conn.Exec(ctx, `INSERT INTO win_log VALUES (0, 'written on the demoted master')`)
		if err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("a write on the demoted master: %v, want a read-only transaction error", err)
		}
		if v := queryRow(t, ctx, a.repo, `SELECT (to_regclass('schedsync.audit') IS NULL AND to_regclass('schedsync.capture_state') IS NULL
			AND NOT EXISTS (SELECT 1 FROM pg_replication_slots))::text`); v != "true" {
			t.Errorf("the demoted master kept capture state")
		}
	})
	change(b.repo, "on the new master")
	ba := &world{master: b, slave: a}
	if !t.Run("old master streams from the new", ba.waitCaughtUp) {
		return
	}
	t.Run("rows equal after the switchover", func(t *testing.T) { requireSameRows(t, ctx, b.repo, a.repo) })

	t.Run("switch back, idle", func(t *testing.T) {
		out := a.mustRun(t, 5*time.Minute, "switchover")
		t.Logf("switchover back on an idle pair:\n%s", out)
		if m := tookLine.FindStringSubmatch(out); m != nil {
			secs, _ := strconv.ParseFloat(m[1], 64)
			t.Logf("idle switchover: %.3fs", secs)
		}
	})
	if t.Failed() {
		return
	}
	requireRoles(t, a, b, 3)
	requireHook(t, hooks, "a promote 3")
	t.Run("nothing lost switching back", func(t *testing.T) { requireSameRows(t, ctx, a.repo, b.repo) })
	change(a.repo, "on the original master again")
	if !t.Run("converge", w.waitCaughtUp) {
		return
	}
	t.Run("rows equal", func(t *testing.T) { requireSameRows(t, ctx, a.repo, b.repo) })
	t.Run("stop", w.stopServices)
}

// requireRoles waits until master serves as master and slave streams from
// it, both of generation gen.
func requireRoles(t *testing.T, master, slave *node, gen uint64) {
	t.Helper()
	for _, c := range []struct {
		n    *node
		role string
	}{{master, "master"}, {slave, "slave"}} {
		eventually.True(t, fmt.Sprintf("%s to stream as %s of generation %d", c.n.name, c.role, gen), recoverTimeout, func() (bool, string) {
			st, err := c.n.status()
			if err != nil {
				return false, err.Error()
			}
			return st.Running && st.State == "streaming" && st.Role == c.role && st.Generation == gen,
				fmt.Sprintf("role=%s generation=%d %s", st.Role, st.Generation, st)
		})
	}
}
