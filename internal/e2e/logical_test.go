package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

const (
	// bigRows is the size of the one large transaction.
	bigRows = 1_000_000
	// maxServiceRSS bounds each service's peak resident memory while it
	// carries that transaction: bounded memory means far below the
	// transaction's size (about 60 MB of raw change bytes).
	maxServiceRSS = 128 << 20
	// maxSlotWAL is what the slot may keep on the master once the slave
	// has caught up.
	maxSlotWAL = 16 << 20
	// toastUpdates is how many updates leave the large value untouched.
	toastUpdates = 300
)

const logicalExtraSchema = `
CREATE TABLE blobs (id int PRIMARY KEY, counter int NOT NULL, data bytea NOT NULL);
CREATE TABLE bulk (id int PRIMARY KEY, v text NOT NULL)`

// TestLogicalCapture covers what is particular to capture.mode = logical,
// with real processes: a 1 MB bytea that many UPDATEs leave untouched
// (pgoutput does not send it) survives on the slave; a 1M-row transaction
// goes through with bounded service memory; and once the slave has caught
// up the slot keeps less than 16 MB of WAL on the master.
func TestLogicalCapture(t *testing.T) {
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, "logical")
	w.execBoth(t, ctx, logicalExtraSchema)
	w.install(t)
	if !t.Run("start", w.startServices) {
		return
	}
	master := w.master.mustStatus(t)
	if master.CaptureMode != "logical" || master.Slot == "" {
		t.Fatalf("master status: capture_mode %q, slot %q", master.CaptureMode, master.Slot)
	}

	t.Run("unchanged TOAST survives", func(t *testing.T) {
		// 1 MiB of md5 output decoded from hex: it does not compress, so it
		// is stored out of line (TOASTed).
		execOn(t, ctx, w.master.repo, `INSERT INTO blobs
			SELECT 1, 0, decode(string_agg(md5(random()::text), ''), 'hex') FROM generate_series(1, 65536)`)
		conn := connect(t, ctx, w.master.repo)
		for i := 0; i < toastUpdates; i++ {
			if _, err := conn.Exec(ctx, `UPDATE blobs SET counter = counter + 1 WHERE id = 1`); err != nil {
				t.Fatal(err)
			}
		}
		w.waitCaughtUp(t)
		q := `SELECT counter, length(data), md5(data) FROM blobs WHERE id = 1`
		m, s := queryRow(t, ctx, w.master.repo, q), queryRow(t, ctx, w.slave.repo, q)
		t.Logf("master %s, slave %s", m, s)
		if m != s || !strings.HasPrefix(m, strconv.Itoa(toastUpdates)+" 1048576 ") {
			t.Fatalf("blob row: master %s, slave %s", m, s)
		}
	})

	t.Run("1M-row transaction in bounded memory", func(t *testing.T) {
		start := time.Now()
		execOn(t, ctx, w.master.repo, fmt.Sprintf(`INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, %d) g`, bigRows))
		t.Logf("committed %d rows in one transaction in %s", bigRows, time.Since(start).Round(time.Millisecond))
		// The server decodes the whole transaction before sending it: wait
		// for it to arrive, not only for equal positions.
		slave := connect(t, ctx, w.slave.repo)
		eventually.True(t, "the slave to hold the large transaction", catchUpTimeout, func() (bool, string) {
			var n int
			if err := slave.QueryRow(ctx, `SELECT count(*) FROM bulk`).Scan(&n); err != nil {
				return false, err.Error()
			}
			return n == bigRows, fmt.Sprintf("%d rows on the slave", n)
		})
		w.waitCaughtUp(t)
		t.Logf("slave caught up %s after the commit", time.Since(start).Round(time.Millisecond))
		q := `SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM bulk`
		if m, s := queryRow(t, ctx, w.master.repo, q), queryRow(t, ctx, w.slave.repo, q); m != s {
			t.Fatalf("bulk table: master %s, slave %s", m, s)
		}
		for _, n := range []*node{w.master, w.slave} {
			st := n.mustStatus(t)
			peak, err := peakRSS(st.PID)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: peak RSS %.1f MiB", n.name, float64(peak)/(1<<20))
			if peak > maxServiceRSS {
				t.Errorf("%s: peak RSS %d MiB, want at most %d MiB", n.name, peak>>20, maxServiceRSS>>20)
			}
		}
	})

	t.Run("slot keeps little WAL once caught up", func(t *testing.T) {
		var last string
		eventually.True(t, fmt.Sprintf("the slot to keep less than %d MiB of WAL", maxSlotWAL>>20), catchUpTimeout, func() (bool, string) {
			st, err := w.master.status()
			if err != nil {
				return false, err.Error()
			}
			if st.SlotRetainedWAL == nil {
				return false, "no slot figure in status"
			}
			last = fmt.Sprintf("slot %s retains %d bytes", st.Slot, *st.SlotRetainedWAL)
			return *st.SlotRetainedWAL < maxSlotWAL, last
		})
		t.Log(last)
	})
	t.Run("verify", w.verifyEqual)
	t.Run("stop", w.stopServices)
	// Stopped, the master's status still shows the slot, read from the
	// repository: an orphaned slot is what fills a master's disk.
	st := w.master.mustStatus(t)
	if st.Slot == "" || st.SlotRetainedWAL == nil {
		t.Errorf("stopped master's status shows no slot: %+v", st)
	}
}

// TestSwitchCaptureMode follows the README's procedure on a running pair:
// stop the master, uninstall, install the other mode, start it again, and
// re-seed the slave with resync --force; the pair then streams and
// converges, in both directions.
func TestSwitchCaptureMode(t *testing.T) {
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, "trigger")
	w.install(t)
	if !t.Run("start", w.startServices) {
		return
	}
	for _, to := range []string{"logical", "trigger"} {
		ok := t.Run("to "+to, func(t *testing.T) {
			l := startLoad(w.pool)
			time.Sleep(2 * time.Second)
			w.master.stop(t)
			// Writes go on while the master service is down: the slave must
			// be re-seeded to have them.
			time.Sleep(time.Second)
			w.master.mustRun(t, ddlTimeout, "uninstall")
			w.master.setMode(t, to)
			w.slave.setMode(t, to)
			out := w.master.mustRun(t, ddlTimeout, "install")
			t.Logf("install:\n%s", out)
			w.master.start(t)
			if st := w.master.waitStreaming(t, recoverTimeout); st.CaptureMode != to {
				t.Fatalf("master capture mode %q after the switch, want %q", st.CaptureMode, to)
			}
			res := w.slave.mustRun(t, 3*time.Minute, "resync", "--force")
			t.Logf("resync --force: %s", strings.TrimSpace(res))
			w.slave.waitStreaming(t, recoverTimeout)
			time.Sleep(2 * time.Second)
			l.stop()
			l.report(t)
			w.waitCaughtUp(t)
			w.checkEqual(t, ctx)
		})
		if !ok {
			return
		}
	}
	t.Run("stop", w.stopServices)
}

// setMode rewrites capture.mode in the node's config file.
func (n *node) setMode(t *testing.T, mode string) {
	t.Helper()
	n.setKey(t, "capture.mode", mode)
}

// setKey sets key in the node's config file: rewrites its line, or adds it.
func (n *node) setKey(t *testing.T, key, value string) {
	t.Helper()
	data, err := os.ReadFile(n.config)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.HasPrefix(line, key+"=") {
			line, found = key+"="+value, true
		}
		out = append(out, line)
	}
	if !found {
		out = append(out, key+"="+value)
	}
	if err := os.WriteFile(n.config, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// execBoth runs sql on both repositories (a schema they share). On the
// master it runs with schedsync.in_ddl on, so that the event trigger does
// not replicate what the test makes on the slave itself.
func (w *world) execBoth(t *testing.T, ctx context.Context, sql string) {
	t.Helper()
	execOn(t, ctx, w.master.repo, "SET schedsync.in_ddl = on;\n"+sql)
	execOn(t, ctx, w.slave.repo, sql)
}

func execOn(t *testing.T, ctx context.Context, url, sql string) {
	t.Helper()
	if _, err := connect(t, ctx, url).Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
}

// queryRow returns the row's columns as text, space-separated.
func queryRow(t *testing.T, ctx context.Context, url, sql string) string {
	t.Helper()
	rows, err := connect(t, ctx, url).Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("%s: no row (%v)", sql, rows.Err())
	}
	vals, err := rows.Values()
	if err != nil {
		t.Fatal(err)
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, " ")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + "…"
	}
	return s
}

// peakRSS is a process's peak resident set size (VmHWM), in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
