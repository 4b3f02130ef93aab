package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// witness is a TCP port that answers while it is open: failover.witness.
type witness struct {
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

func newWitness(t *testing.T) *witness {
	w := &witness{}
	w.open(t, "127.0.0.1:0")
	t.Cleanup(w.close)
	return w
}

func (w *witness) open(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	// The port was ours a moment ago; the kernel may need a moment.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.ln, w.addr = ln, ln.Addr().String()
	w.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (w *witness) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ln != nil {
		w.ln.Close()
		w.ln = nil
	}
}

// TestAutoFailover is failover.auto with real processes, in both capture
// modes. A master that reaches neither its slave nor the witness fences
// itself (hook, repository read only) and recovers when it reaches the
// witness again. The slave does not promote itself when only the master's
// sync service died (its repository answers on probe_url), nor when the
// witness is unreachable; it promotes once the master is really gone and
// the witness answers, not before failover.timeout, and its repository is
// writable then; nor while it holds changes it cannot apply.
func TestAutoFailover(t *testing.T) { inEachMode(t, autoFailoverScenario) }

// failover.timeout in the test: 3 heartbeats of 1s. With
// SCHEDSYNC_E2E_AUTO_DEFAULTS=1 the test measures the defaults instead
// (failover.timeout 30s, sync.heartbeat 5s) and runs only the promotion:
// that figure is in BENCHMARKS.md.
var autoTimeout = 3 * time.Second

func autoFailoverScenario(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	defaults := os.Getenv("SCHEDSYNC_E2E_AUTO_DEFAULTS") == "1"
	if defaults {
		autoTimeout = 30 * time.Second
	}
	wit := newWitness(t)
	hooks := hooksLog(t)
	common := func(node string) []string {
		return append(hookLines(hooks, node), "failover.timeout="+autoTimeout.String(), "failover.witness="+wit.addr)
	}
	w := newWorldWith(t, ctx, mode, common("a"), common("b"))
	w.slave.setKey(t, "failover.auto", "true")
	if defaults {
		w.master.setKey(t, "sync.heartbeat", "5s")
		w.slave.setKey(t, "sync.heartbeat", "5s")
	}
	w.slave.setKey(t, "failover.probe_url", w.master.repo)
	w.install(t)
	if !t.Run("start", w.startServices) {
		return
	}
	conn := connect(t, ctx, w.master.repo)
	if _, err := conn.Exec(ctx, `INSERT INTO job_history (fired_at) SELECT g FROM generate_series(1, 100) g`); err != nil {
		t.Fatal(err)
	}
	if !t.Run("catch up", w.waitCaughtUp) {
		return
	}

	t.Run("master fences itself when alone", func(t *testing.T) {
		if defaults {
			t.Skip("measuring the defaults")
		}
		w.slave.stop(t)
		wit.close()
		eventually.True(t, "the master to fence itself", 4*autoTimeout, func() (bool, string) {
			st, err := w.master.status()
			return err == nil && st.State == "fenced", st.String()
		})
		requireHook(t, hooks, "a fenced 1")
		if _, err := connect(t, ctx, w.master.repo).Exec(ctx, `INSERT INTO job_history (fired_at) VALUES (1)`); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("a write on the self-fenced master: %v, want a read-only error", err)
		}
		wit.open(t, wit.addr)
		eventually.True(t, "the master to lift its fence", 4*autoTimeout, func() (bool, string) {
			st, err := w.master.status()
			return err == nil && st.State == "streaming", st.String()
		})
		requireHook(t, hooks, "a promote 1")
		if _, err := connect(t, ctx, w.master.repo).Exec(ctx, `INSERT INTO job_history (fired_at) VALUES (2)`); err != nil {
			t.Errorf("a write once the fence is lifted: %v", err)
		}
		w.slave.start(t)
		w.waitRecovered(t)
	})
	if t.Failed() {
		return
	}

	holds := func(t *testing.T, want string) {
		t.Helper()
		time.Sleep(2 * autoTimeout) // proving a negative: it must not promote meanwhile
		st := w.slave.mustStatus(t)
		if st.Role != "slave" || !strings.Contains(st.AutoFailoverHeld, want) {
			t.Fatalf("slave after %s without its master: role %s, auto_failover_held %q; want slave, held for %q", 2*autoTimeout, st.Role, st.AutoFailoverHeld, want)
		}
	}
	t.Run("no promotion while the master's repository answers", func(t *testing.T) {
		if defaults {
			t.Skip("measuring the defaults")
		}
		w.master.kill9(t)
		holds(t, "probe_url")
		w.master.start(t)
		w.waitRecovered(t)
	})
	if t.Failed() {
		return
	}
	t.Run("no promotion without the witness", func(t *testing.T) {
		if defaults {
			t.Skip("measuring the defaults")
		}
		wit.close()
		w.killMasterHost(t)
		holds(t, "witness")
		// The master first: with the witness back, a slave whose master
		// is still gone promotes itself at once.
		w.restartMasterHost(t, ctx)
		w.waitRecovered(t)
		wit.open(t, wit.addr)
	})
	if t.Failed() {
		return
	}
	t.Run("no promotion with changes it cannot apply", func(t *testing.T) {
		if defaults {
			t.Skip("measuring the defaults")
		}
		execOn(t, ctx, w.slave.repo, `ALTER TABLE job_history DROP COLUMN payload`)
		// The master restarted without the witness may have fenced itself
		// before its slave came back; it lifts the fence a check later.
		eventually.True(t, "the master's repository to take the scheduler's writes", recoverTimeout, func() (bool, string) {
			_, err := connect(t, ctx, w.master.repo).Exec(ctx, `INSERT INTO job_history (fired_at, payload) VALUES (4, '{"kept":"back"}')`)
			return err == nil, fmt.Sprint(err)
		})
		eventually.True(t, "the slave to stop applying", recoverTimeout, func() (bool, string) {
			st, err := w.slave.status()
			return err == nil && st.State == "apply_error", st.String()
		})
		w.killMasterHost(t)
		holds(t, "cannot apply")
		w.restartMasterHost(t, ctx)
		execOn(t, ctx, w.slave.repo, `ALTER TABLE job_history ADD COLUMN payload jsonb`)
		w.waitRecovered(t)
	})
	if t.Failed() {
		return
	}
	t.Run("promotes once the master is gone", func(t *testing.T) {
		w.killMasterHost(t)
		died := time.Now()
		var writable time.Duration
		eventually.True(t, "the slave to promote itself and take writes", 2*autoTimeout+30*time.Second, func() (bool, string) {
			st, err := w.slave.status()
			if err != nil || st.Role != "master" || st.State != "streaming" {
				return false, st.String()
			}
			c, err := pgx.Connect(ctx, w.slave.repo)
			if err != nil {
				return false, err.Error()
			}
			defer c.Close(context.Background())
			if _, err := c.Exec(ctx, `INSERT INTO job_history (fired_at) VALUES (3)`); err != nil {
				return false, err.Error()
			}
			writable = time.Since(died)
			return true, ""
		})
		t.Logf("master's death to a writable new master with failover.auto (failover.timeout %s): %s", autoTimeout, writable.Round(time.Millisecond))
		if writable < autoTimeout {
			t.Errorf("promoted %s after the master's death, before failover.timeout (%s)", writable, autoTimeout)
		}
		requireHook(t, hooks, "b promote 2")
	})
	t.Run("stop", func(t *testing.T) { w.slave.stop(t) })
}

// killMasterHost kills the master service (kill -9) and stops its
// database (immediate), as when the master's host dies.
func (w *world) killMasterHost(t *testing.T) {
	t.Helper()
	w.master.kill9(t)
	if err := w.masterDB.StopImmediate(); err != nil {
		t.Fatal(err)
	}
}

// restartMasterHost starts the master's database and service again.
func (w *world) restartMasterHost(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := w.masterDB.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	w.master.start(t)
}
