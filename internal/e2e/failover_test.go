package e2e

import (
	"bufio"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// TestFailover is the unplanned failover and the fail-back, with real
// processes and clusters: the master service dies by kill -9 and its
// database stops, with changes captured there that were never shipped.
// The slave refuses to promote while its master still streams, then
// promotes (hook, generation 2, sequences ahead of the rows; in trigger
// mode through its running service, in logical mode with the service
// stopped), captures its
// own writes; the old master comes back still configured as master and is
// fenced; it is re-seeded as a slave of the new master, its lost
// transactions are in a file, its capture state is gone, and it converges
// row by row, tables with and without keys, also for changes made after.
func TestFailover(t *testing.T) { inEachMode(t, failoverScenario) }

var lostFile = regexp.MustCompile(`(\d+) transaction\(s\) as master that master \S+ never got; they are in (\S+)`)

func failoverScenario(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w, hooks, change := startFailoverPair(t, ctx, mode, "old", "new")
	l := startLoad(w.pool)
	t.Cleanup(l.stop)
	change(w.master.repo, "captured")
	time.Sleep(2 * time.Second)
	l.stop()
	l.report(t)
	change(w.master.repo, "captured after the load")
	if !t.Run("catch up", w.waitCaughtUp) {
		return
	}
	if st := w.slave.mustStatus(t); st.Generation != 1 {
		t.Errorf("the slave of a first master reports generation %d, want 1: %s", st.Generation, st)
	}

	t.Run("promote refused while the master streams", func(t *testing.T) {
		r, err := w.slave.run(cmdTimeout, "promote")
		if err != nil {
			t.Fatal(err)
		}
		if r.code != 1 || !strings.Contains(r.output(), "still streaming") {
			t.Fatalf("promote with a live master: exit %d, %s; want 1 and 'still streaming'", r.code, r.output())
		}
		if st := w.slave.mustStatus(t); st.Role != "slave" || st.State != "streaming" {
			t.Fatalf("after the refused promote the slave is %s", st)
		}
	})

	// The master dies: its service first, then changes that its capture
	// holds (audit rows or the slot) but never ships, then its database.
	w.master.kill9(t)
	lostName := "lost with the old master"
	change(w.master.repo, lostName)
	if err := w.masterDB.StopImmediate(); err != nil {
		t.Fatal(err)
	}

	var promoted string
	t.Run("promote", func(t *testing.T) {
		if mode == "logical" {
			// The other path: promote with the slave service stopped,
			// which promotes under its lock and starts the master.
			w.slave.stop(t)
		}
		began := time.Now()
		eventually.True(t, "promote to succeed once the slave lost its master", recoverTimeout, func() (bool, string) {
			r, err := w.slave.run(cmdTimeout, "promote")
			if err != nil {
				return false, err.Error()
			}
			promoted = r.output()
			return r.code == 0, promoted
		})
		t.Logf("promote (from the master's death, retried while the session lingered) took %s:\n%s", time.Since(began).Round(time.Millisecond), promoted)
		if !strings.Contains(promoted, "generation 2") || !strings.Contains(promoted, "last position applied from the old master") {
			t.Errorf("promote output lacks the generation or the position: %s", promoted)
		}
		st := w.slave.mustStatus(t)
		if st.Role != "master" || st.Generation != 2 || st.ConfigRole != "slave" || !st.Running {
			t.Fatalf("promoted node: %s role=%s generation=%d config_role=%q", st, st.Role, st.Generation, st.ConfigRole)
		}
		w.slave.waitStreaming(t, recoverTimeout)
		r, err := w.slave.run(cmdTimeout, "promote")
		if err != nil || r.code != 0 || !strings.Contains(r.output(), "already the master (generation 2)") {
			t.Errorf("promote again: exit %d, %s, %v; want 0 and already the master", r.code, r.output(), err)
		}
	})
	if t.Failed() {
		return
	}
	requireHook(t, hooks, "new promote 2")

	t.Run("promoted node takes writes", func(t *testing.T) {
		conn := connect(t, ctx, w.slave.repo)
		for i := range 20 {
			// A sequence behind the rows would collide on the primary key.
			if _, err := conn.Exec(ctx, `INSERT INTO job_history (fired_at, payload) VALUES ($1, '{"after":"promote"}')`, i); err != nil {
				t.Fatalf("insert with the sequence default on the promoted node: %v", err)
			}
		}
		change(w.slave.repo, "on the promoted node")
	})

	if err := w.masterDB.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("old master fenced", func(t *testing.T) {
		r, err := w.master.run(startTimeout, "start", "--wait", "10s")
		if err != nil {
			t.Fatal(err)
		}
		out := r.output()
		for _, want := range []string{"fenced", "e2e-slave", "generation 2", "resync --force"} {
			if !strings.Contains(out, want) {
				t.Errorf("start of the old master: exit %d, output lacks %q: %s", r.code, want, out)
			}
		}
		if r.code == 0 {
			t.Errorf("the old master started although a node of a higher generation is up: %s", out)
		}
		requireHook(t, hooks, "old fenced 1")
	})

	t.Run("fail-back", func(t *testing.T) {
		w.master.setKey(t, "node.role", "slave")
		w.master.setKey(t, "master.port", strconv.Itoa(w.slave.listen))
		out := w.master.mustRun(t, 3*time.Minute, "resync", "--force")
		t.Logf("resync --force on the old master:\n%s", out)
		m := lostFile.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("resync did not report the lost transactions: %s", out)
		}
		// The lost window is 8 transactions, and nothing else wrote
		// after the slave caught up.
		n, _ := strconv.Atoi(m[1])
		if n != 8 {
			t.Errorf("%d lost transactions reported, want the lost window's 8", n)
		}
		requireLostWindow(t, m[2], n, lostName)
		if v := queryRow(t, ctx, w.master.repo, `SELECT (to_regclass('schedsync.audit') IS NULL AND to_regclass('schedsync.capture_state') IS NULL
			AND NOT EXISTS (SELECT 1 FROM pg_replication_slots) AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname LIKE 'schedsync%'))::text`); v != "true" {
			t.Errorf("the old master's capture state was not cleared")
		}
		requireHook(t, hooks, "old demote 2")
	})
	if t.Failed() {
		return
	}
	back := &world{master: w.slave, slave: w.master}
	change(w.slave.repo, "after the fail-back")
	if !t.Run("converge", back.waitCaughtUp) {
		return
	}
	t.Run("rows equal", func(t *testing.T) { requireSameRows(t, ctx, w.slave.repo, w.master.repo) })
	if st := w.master.mustStatus(t); st.Role != "slave" || st.Generation != 2 {
		t.Errorf("the old master after fail-back: role %s, generation %d; want slave, 2", st.Role, st.Generation)
	}
	t.Run("stop", back.stopServices)
}

// requireHook fails unless the hooks' log has line.
func requireHook(t *testing.T, path, line string) {
	t.Helper()
	eventually.True(t, "hook line "+line, 10*time.Second, func() (bool, string) {
		data, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(data), "\n") {
			if strings.TrimSpace(l) == line {
				return true, ""
			}
		}
		return false, string(data)
	})
}

// requireLostWindow checks the lost transactions' file: n lines, and the
// lost window's rows in it (as text, or in the hex of pgoutput messages).
func requireLostWindow(t *testing.T, path string, n int, name string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines, found := 0, false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		lines++
		if strings.Contains(sc.Text(), name) || strings.Contains(sc.Text(), hex.EncodeToString([]byte(name))) {
			found = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if lines != n || !found {
		t.Errorf("%s: %d lines (want %d), lost window %q found: %v", path, lines, n, name, found)
	}
}

// hooksLog is the file the failover tests' hooks append to.
func hooksLog(t *testing.T) string { return filepath.Join(t.TempDir(), "hooks.log") }

// hookLines are a node's failover hooks: both append "NODE EVENT
// GENERATION" to hooks, for requireHook.
func hookLines(hooks, node string) []string {
	line := "echo " + node + " $SCHEDSYNC_EVENT $SCHEDSYNC_GENERATION >> " + hooks
	return []string{"failover.promote_command=" + line, "failover.demote_command=" + line}
}

// startFailoverPair starts the pair of the failover and switchover
// scenarios, streaming: hooks named masterName and slaveName, one
// failover.peers list with both sync ports on both nodes (each node's own
// included, as an operator copies it), tables without a key replicated,
// the window tables installed. change makes the next window of changes
// on a repository.
func startFailoverPair(t *testing.T, ctx context.Context, mode, masterName, slaveName string) (w *world, hooks string, change func(url, name string)) {
	t.Helper()
	hooks = hooksLog(t)
	w = newWorldWith(t, ctx, mode, append(hookLines(hooks, masterName), "capture.allow_no_pk=true"),
		append(hookLines(hooks, slaveName), "capture.allow_no_pk=true"))
	peers := "127.0.0.1:" + strconv.Itoa(w.master.listen) + ",127.0.0.1:" + strconv.Itoa(w.slave.listen)
	w.master.setKey(t, "failover.peers", peers)
	w.slave.setKey(t, "failover.peers", peers)
	w.execBoth(t, ctx, windowSchema)
	w.install(t)
	if !t.Run("start", w.startServices) {
		t.FailNow()
	}
	window := 0
	return w, hooks, func(url, name string) {
		window++
		changeWindow(t, ctx, url, window, name)
	}
}
