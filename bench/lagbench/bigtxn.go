package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// bigTxnResult is what the one-big-transaction run measured.
type bigTxnResult struct {
	Rows    int64         // rows the UPDATE changed
	Commit  time.Duration // the UPDATE's own time on the master, until its commit returned
	Visible time.Duration // commit returned → the marker after it visible on the slave
	// PeakRSS is the peak resident memory (VmHWM) of each schedsync
	// service, in bytes, read after the run: the highest since the
	// service started, the backlog included.
	PeakRSS map[string]int64
}

// bigMarkerID is the probe inserted after the big transaction.
const bigMarkerID = 1<<40 + 1

// measureBigTxn updates every pgbench_accounts row in one transaction (a
// million at scale 10) and times its arrival on the slave: the marker
// probe inserted after it commits after it, so it is visible once the
// whole transaction is applied.
func measureBigTxn(ctx context.Context, w *world, sys system) (bigTxnResult, error) {
	var r bigTxnResult
	start := time.Now()
	tag, err := w.mConn.Exec(ctx, `UPDATE pgbench_accounts SET abalance = abalance + 1`)
	if err != nil {
		return r, fmt.Errorf("the big UPDATE: %w", err)
	}
	r.Rows = tag.RowsAffected()
	sent, err := w.insertProbe(ctx, bigMarkerID)
	if err != nil {
		return r, err
	}
	r.Commit = sent.Sub(start)
	seen, err := w.waitVisible(ctx, bigMarkerID, 10*time.Minute)
	if err != nil {
		return r, err
	}
	r.Visible = seen.Sub(sent)
	procs, err := sys.procs(ctx)
	if err != nil {
		return r, err
	}
	r.PeakRSS = map[string]int64{}
	for _, p := range procs {
		if r.PeakRSS[p.Label], err = peakRSS(p.PID); err != nil {
			return r, err
		}
	}
	return r, nil
}

// peakRSS is a process's VmHWM in bytes.
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
