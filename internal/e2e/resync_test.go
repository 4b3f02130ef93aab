package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

// TestResync is issue 6's cron path, with real processes: a slave that was
// never seeded is seeded by resync over the sync port while the master
// already holds data; a second resync has nothing to do; a slave that
// stayed away past spool.max_backlog is refused (start exits 3), and resync
// brings it back, streaming and exactly equal.
// It runs once per capture mode.
func TestResync(t *testing.T) {
	inEachMode(t, resyncScenario)
}

func resyncScenario(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	// spool.max_backlog well above one spool record (a backlog is counted
	// in whole records), and a bulk write below to exceed it.
	w := newWorldWith(t, ctx, mode, []string{"spool.max_backlog=1MiB"}, nil)
	w.install(t)
	if err := quartz.Seed(ctx, w.pool, quartzOptions); err != nil {
		t.Fatalf("seed the quartz tables: %v", err)
	}
	w.master.start(t)

	resync := func(t *testing.T, want string) {
		t.Helper()
		out := w.slave.mustRun(t, 3*time.Minute, "resync")
		if !strings.Contains(out, want) {
			t.Fatalf("resync said:\n%s\nwant %q", out, want)
		}
		t.Logf("resync: %s", strings.TrimSpace(out))
	}
	t.Run("seed a new slave", func(t *testing.T) { resync(t, "the slave has never been seeded") })
	w.slave.waitStreaming(t, 30*time.Second)
	t.Run("nothing needed", func(t *testing.T) { resync(t, "no re-sync needed") })

	l := startLoad(w.pool)
	time.Sleep(2 * time.Second)
	w.slave.stop(t)
	time.Sleep(2 * time.Second)
	// Random text compresses badly: about 4 MB in the spool, far past 1 MiB.
	if _, err := w.pool.Exec(ctx, `INSERT INTO job_history (fired_at, payload)
		SELECT g, jsonb_build_object('trace', (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 8 + 0 * g)))
		FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	l.stop()
	l.report(t)
	eventually.True(t, "the master to capture the bulk write", 60*time.Second, func() (bool, string) {
		st, err := w.master.status()
		if err != nil {
			return false, err.Error()
		}
		sl, _ := st.slave(w.slave.name)
		return sl.NeedsResync || sl.BacklogBytes > 1<<20, st.String()
	})
	t.Run("refused for its backlog", func(t *testing.T) {
		r, err := w.slave.run(startTimeout, "start", "--wait", "10s")
		if err != nil {
			t.Fatal(err)
		}
		if r.code != 3 || !strings.Contains(r.output(), "run backup and restore (schedsync resync)") {
			t.Fatalf("start of a slave past its backlog: exit %d\n%s", r.code, r.output())
		}
	})
	t.Run("resync after refusal", func(t *testing.T) { resync(t, "the master refused this slave for its backlog") })
	w.slave.waitStreaming(t, 30*time.Second)
	t.Run("kill -9 during restore", func(t *testing.T) { w.killResyncMidRestore(t, ctx) })
	t.Run("resync after the kill", func(t *testing.T) { resync(t, "an earlier restore did not finish") })
	w.slave.waitStreaming(t, 30*time.Second)

	l = startLoad(w.pool) // the re-seeded slave streams under load
	time.Sleep(3 * time.Second)
	l.stop()
	if !t.Run("catch up", w.waitCaughtUp) {
		return
	}
	t.Run("tables equal", func(t *testing.T) { w.checkEqual(t, ctx) })
	t.Run("stop", w.stopServices)
}

// killResyncMidRestore runs resync --force and kills it with SIGKILL once
// its restore has marked the slave needs_resync, that is while it loads.
// The test holds a lock on a replicated table that the load's TRUNCATE
// waits for, and kills it once it waits there: inside its load, however
// fast or slow the machine.
func (w *world) killResyncMidRestore(t *testing.T, ctx context.Context) {
	conn, err := pgx.Connect(ctx, w.slave.repo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	locker, err := pgx.Connect(ctx, w.slave.repo)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	lock, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(ctx, `LOCK TABLE job_history IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	cmd := w.slave.command(context.Background(), "resync", "--force")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	eventually.True(t, "the restore to mark the slave needs_resync", 2*time.Minute, func() (bool, string) {
		var marked bool
		if err := conn.QueryRow(ctx, `SELECT needs_resync FROM schedsync.state`).Scan(&marked); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("resync ended before it could be killed mid-restore: %v", err)
		default:
		}
		return marked, "not marked"
	})
	eventually.That(t, "the load to wait for the test's lock", 2*time.Minute, func() bool {
		var waiting bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'job_history'::regclass AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := lock.Rollback(ctx); err != nil { // the killed load's session may now end
		t.Fatal(err)
	}
	var marked bool
	if err := conn.QueryRow(ctx, `SELECT needs_resync FROM schedsync.state`).Scan(&marked); err != nil || !marked {
		t.Fatalf("after kill -9 mid-restore the slave is not marked needs_resync (%v, %v)", marked, err)
	}
	if st := w.slave.mustStatus(t); st.Running {
		t.Fatalf("the slave service runs after resync was killed: %s", st)
	}
}
