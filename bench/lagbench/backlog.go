package main

import (
	"context"
	"fmt"
	"time"
)

// rowsPerTxn is the row changes of one transaction of pgbench's default
// script: UPDATE pgbench_accounts, pgbench_tellers and pgbench_branches,
// INSERT pgbench_history (its SELECT changes nothing).
const rowsPerTxn = 4

// markerID is the probe inserted after the backlog: it commits after every
// pgbench transaction, so once it is visible on the slave all of them are.
const markerID = 1 << 40

// catchUpPoll is how often the catch-up is looked at: often enough for a
// catch-up of seconds, seldom enough not to slow it (each look is a status
// request to the slave service and a query on the slave).
const catchUpPoll = 10 * time.Millisecond

// backlogResult is what the backlog run measured.
type backlogResult struct {
	Bench       benchResult   // the unthrottled run that built the backlog
	CaptureWait time.Duration // pgbench end → the master holds it all as it ships it
	Start       time.Duration // the slave's start command (or ENABLE)
	Received    time.Duration // start → every position durable in the slave spool (schedsync)
	Applied     time.Duration // start → the last position applied (schedsync)
	CatchUp     time.Duration // start → the marker visible on the slave
	Positions   uint64        // positions shipped (schedsync): pgbench's transactions, the marker, sequence samples
	CPU         cpuUsage      // from the slave's start to the end of the catch-up
}

func (b backlogResult) txns() int64 { return b.Bench.Txns }

// measureBacklog stops the slave, builds a backlog with unthrottled
// pgbench, and times the slave's catch-up from its start.
func measureBacklog(ctx context.Context, o options, w *world, sys system) (backlogResult, error) {
	var r backlogResult
	if err := sys.stopSlave(ctx); err != nil {
		return r, fmt.Errorf("stop the slave: %w", err)
	}
	var err error
	load := benchLoad{duration: o.backlogDur, txns: o.backlogTxns}
	if r.Bench, err = startBench(ctx, w.master, w.masterURL(), o, load).wait(); err != nil {
		return r, fmt.Errorf("pgbench: %w", err)
	}
	if _, err := w.insertProbe(ctx, markerID); err != nil {
		return r, err
	}
	t := time.Now()
	if err := sys.waitCaptured(ctx); err != nil {
		return r, err
	}
	r.CaptureWait = time.Since(t)
	watch, err := sys.catchUpWatch(ctx)
	if err != nil {
		return r, err
	}
	fmt.Printf("backlog of %d pgbench transactions captured; starting the slave\n", r.Bench.Txns)
	t0 := time.Now()
	if err := sys.startSlave(ctx); err != nil {
		return r, fmt.Errorf("start the slave: %w", err)
	}
	r.Start = time.Since(t0)
	procs, err := allProcs(ctx, w, sys, 0)
	if err != nil {
		return r, err
	}
	meter := startCPU(procs)
	err = watchCatchUp(ctx, w, watch, t0, &r)
	r.CPU = meter.stop()
	return r, err
}

// watchCatchUp polls until the marker is on the slave and, when the system
// reports positions, until the last one is applied.
func watchCatchUp(ctx context.Context, w *world, watch func(context.Context) (catchUpState, error), t0 time.Time, r *backlogResult) error {
	applied := watch == nil
	return poll(ctx, catchUpPoll, 30*time.Minute, "catch up", func() (bool, error) {
		if watch != nil && !applied {
			st, err := watch(ctx)
			if err != nil {
				return false, err
			}
			r.Positions = st.Target - st.From
			if r.Received == 0 && st.Received >= st.Target {
				r.Received = time.Since(t0)
			}
			if st.Applied >= st.Target {
				r.Applied, applied = time.Since(t0), true
			}
		}
		if r.CatchUp == 0 {
			ok, err := w.visible(ctx, markerID)
			if err != nil {
				return false, err
			}
			if ok {
				r.CatchUp = time.Since(t0)
			}
		}
		return applied && r.CatchUp > 0, nil
	})
}
