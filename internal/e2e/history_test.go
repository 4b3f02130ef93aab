package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// windowSchema adds to the world a keyed table and a table without a
// primary key (replicated by full-row identity, capture.allow_no_pk), which
// every window of the scenarios below changes.
const windowSchema = `
CREATE TABLE win_keyed (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
CREATE TABLE win_log (at int, line text)`

// changeWindow makes a window's changes on the master, in several
// transactions: new rows in both tables (in the keyless one, identical
// rows several times over), updates and deletes of rows that earlier
// windows wrote, and an update that moves a key.
func changeWindow(t *testing.T, ctx context.Context, url string, i int, name string) {
	t.Helper()
	conn := connect(t, ctx, url)
	stmts := []string{
		fmt.Sprintf(`INSERT INTO win_keyed SELECT g, %[2]s, 0 FROM generate_series(%[1]d * 100 + 1, %[1]d * 100 + 40) g`, i, quoteText(name)),
		fmt.Sprintf(`UPDATE win_keyed SET v = v || ' +' || %[2]s, n = n + 1 WHERE id %% 7 = %[1]d %% 7`, i, quoteText(name)),
		fmt.Sprintf(`DELETE FROM win_keyed WHERE id %% 11 = %d`, i),
		fmt.Sprintf(`UPDATE win_keyed SET id = id + 50 WHERE id = %d * 100 + 3`, i),
		fmt.Sprintf(`INSERT INTO win_log SELECT %d, %s || ' line ' || (g %% 3) FROM generate_series(1, 30) g`, i, quoteText(name)),
		// One of several identical rows changes, one goes.
		fmt.Sprintf(`UPDATE win_log SET line = line || ' / ' || %s WHERE ctid IN (SELECT ctid FROM win_log WHERE at = %d LIMIT 4)`, quoteText(name), i-1),
		fmt.Sprintf(`DELETE FROM win_log WHERE ctid = (SELECT ctid FROM win_log WHERE at < %d ORDER BY at, line LIMIT 1)`, i),
		fmt.Sprintf(`BEGIN; INSERT INTO win_log VALUES (%[1]d, 'twice'), (%[1]d, 'twice'); UPDATE win_keyed SET n = n + 10 WHERE id %% 5 = 0; COMMIT`, i),
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("window %q: %s: %v", name, firstLine(s), err)
		}
	}
}

var restoredAt = regexp.MustCompile(`at position (\d+)`)

func quoteText(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// TestReseedAfterReinstall is the README's procedure for switching capture
// modes (and for reinstalling the same one) under load, with rows of a
// keyed and a keyless table changed in every window: captured; while the
// master service is stopped; while nothing captures at all (between
// uninstall and install); by the new install before the slave is
// re-seeded; and after. The slave, whose data is of the old capture
// history, must be refused, must show needs_resync, and verify must call
// it different; the re-seed must then give exactly the master's rows, row
// by row, the keyless table included (a change replayed twice would double
// its rows).
func TestReseedAfterReinstall(t *testing.T) {
	requirePostgres(t)
	for _, tc := range []struct{ from, to string }{
		{"trigger", "trigger"}, {"trigger", "logical"}, {"logical", "trigger"}, {"logical", "logical"},
	} {
		t.Run(tc.from+" to "+tc.to, func(t *testing.T) { reseedAfterReinstall(t, tc.from, tc.to) })
	}
}

func reseedAfterReinstall(t *testing.T, from, to string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorldWith(t, ctx, from, []string{"capture.allow_no_pk=true"}, nil)
	w.execBoth(t, ctx, windowSchema)
	w.install(t)
	if !t.Run("start", w.startServices) {
		return
	}
	l := startLoad(w.pool)
	t.Cleanup(l.stop)
	window := 0
	change := func(name string) {
		window++
		changeWindow(t, ctx, w.master.repo, window, name)
	}
	change("captured")
	time.Sleep(time.Second)
	oldBackup := filepath.Join(t.TempDir(), "old-history.ssbak")
	t.Logf("backup of the old history: %s", strings.TrimSpace(w.master.mustRun(t, 2*time.Minute, "backup", "--out", oldBackup)))
	w.master.stop(t)
	before := w.master.mustStatus(t).Position
	change("while the master service is stopped")
	began := time.Now()
	w.master.mustRun(t, ddlTimeout, "uninstall")
	t.Logf("uninstall under the load took %s", time.Since(began).Round(time.Millisecond))
	change("while nothing captures")
	time.Sleep(time.Second) // the load goes on, uncaptured
	w.master.setMode(t, to)
	w.slave.setMode(t, to)
	t.Logf("install (%s):\n%s", to, w.master.mustRun(t, ddlTimeout, "install"))
	w.master.start(t)
	w.master.waitStreaming(t, recoverTimeout)

	t.Run("old history refused", func(t *testing.T) {
		var st status
		eventually.True(t, "the slave to need a re-sync", recoverTimeout, func() (bool, string) {
			var err error
			if st, err = w.slave.status(); err != nil {
				return false, err.Error()
			}
			return st.State == "needs_resync", st.String()
		})
		if !strings.Contains(st.Error, "capture history") {
			t.Errorf("the slave needs a re-sync, but not for its capture history: %s", st)
		}
		r, err := w.slave.run(verifyTimeout, "verify")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("verify: exit %d\n%s", r.code, r.output())
		if r.code != 1 || !strings.Contains(r.output(), "DIFFERENT") || !strings.Contains(r.output(), "capture history") {
			t.Errorf("verify of a slave of another capture history: exit %d, want 1 and output saying DIFFERENT and naming the capture history", r.code)
		}
	})
	change("captured by the new install, before the re-seed")
	t.Run("old backup refused", func(t *testing.T) {
		// A backup of the old history restores fine, but the slave it
		// makes is refused: the master's changes do not continue it.
		w.slave.stop(t)
		t.Logf("restore: %s", strings.TrimSpace(w.slave.mustRun(t, 2*time.Minute, "restore", "--in", oldBackup)))
		r, err := w.slave.run(startTimeout, "start", "--wait", "10s")
		if err != nil {
			t.Fatal(err)
		}
		if r.code != 3 || !strings.Contains(r.output(), "capture history") {
			t.Errorf("start of a slave restored from the old history: exit %d, want 3 and a message naming the capture history\n%s", r.code, r.output())
		}
	})
	out := w.slave.mustRun(t, 3*time.Minute, "resync")
	t.Logf("resync: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "capture history") {
		t.Errorf("resync did not say it re-syncs for the capture history:\n%s", out)
	}
	// Positions go on across uninstall and install: the re-seed's
	// position is past what the old history reached.
	if m := restoredAt.FindStringSubmatch(out); m == nil {
		t.Errorf("resync did not say its position:\n%s", out)
	} else if p, _ := strconv.ParseUint(m[1], 10, 64); p <= before {
		t.Errorf("re-seeded at position %d, not past the old history's %d", p, before)
	}
	w.slave.waitStreaming(t, recoverTimeout)
	change("after the re-seed")
	time.Sleep(2 * time.Second)
	w.finish(t, ctx, l)
}
