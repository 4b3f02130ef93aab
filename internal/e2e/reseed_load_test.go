package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// reseedMaxBacklog is far below what the master spools while a backup
	// of reseedRows rows is taken and restored under the load.
	reseedMaxBacklog = 64 << 10
	reseedRows       = 150_000
)

// TestReseedUnderLoad is the livelock of issue 11: with spool.max_backlog
// far below what a busy master spools while a slave is re-seeded, the
// restored slave used to be refused at its first start for the backlog
// that built up during its own restore, and the advised remedy could never
// succeed. The backup's pin (spool.backup_pin) must keep the spool for it
// and get it accepted; it then catches up and holds exactly the master's
// rows. It runs once per capture mode.
func TestReseedUnderLoad(t *testing.T) {
	inEachMode(t, reseedUnderLoad)
}

func reseedUnderLoad(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorldWith(t, ctx, mode, []string{"capture.allow_no_pk=true", fmt.Sprintf("spool.max_backlog=%d", reseedMaxBacklog)}, nil)
	w.execBoth(t, ctx, windowSchema)
	// A repository large enough that the backup and the restore take a
	// few seconds under the load.
	execOn(t, ctx, w.master.repo, fmt.Sprintf(`INSERT INTO job_history (fired_at, payload)
		SELECT g, jsonb_build_object('trace', md5(g::text) || repeat('.', 300)) FROM generate_series(1, %d) g`, reseedRows))
	w.install(t)
	w.master.start(t)
	w.master.waitStreaming(t, recoverTimeout)
	l := startLoad(w.pool)
	t.Cleanup(l.stop)
	changeWindow(t, ctx, w.master.repo, 1, "before the re-seed")
	time.Sleep(time.Second)

	start := time.Now()
	out := w.slave.mustRun(t, 3*time.Minute, "resync")
	t.Logf("resync in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	w.slave.waitStreaming(t, recoverTimeout)
	t.Run("admitted past the limit", func(t *testing.T) {
		backlog := admittedBacklog(t, w.master)
		t.Logf("the restored slave was admitted with a backlog of %d bytes; spool.max_backlog is %d", backlog, reseedMaxBacklog)
		if backlog <= reseedMaxBacklog {
			t.Fatalf("the backlog at admission (%d bytes) is within spool.max_backlog (%d): the test did not recreate the livelock; make the restore slower", backlog, reseedMaxBacklog)
		}
	})
	changeWindow(t, ctx, w.master.repo, 2, "after the re-seed")
	w.finish(t, ctx, l)
}

var admittedRE = regexp.MustCompile(`slave admitted from a backup's position.* backlog_bytes=(\d+)`)

// admittedBacklog is the backlog the master logged when it admitted the
// slave past spool.max_backlog, or 0.
func admittedBacklog(t *testing.T, master *node) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(master.spool, "schedsync.log"))
	if err != nil {
		t.Fatal(err)
	}
	var most int64
	for _, m := range admittedRE.FindAllSubmatch(data, -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		most = max(most, n)
	}
	return most
}
