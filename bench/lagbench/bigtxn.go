package main

import (
	"context"
	"fmt"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
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
		if _, r.PeakRSS[p.Label], err = benchkit.ProcMem(p.PID); err != nil {
			return r, err
		}
	}
	return r, nil
}
