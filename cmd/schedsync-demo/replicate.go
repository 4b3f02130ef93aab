package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

// install runs `schedsync install` on both nodes: before any row exists,
// so that the slave converges by streaming from the first change.
func (d *demo) install(ctx context.Context) error {
	for _, n := range []*node{d.master, d.slave} {
		if err := n.run(ctx, "install"); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) start(ctx context.Context) error {
	for _, n := range []*node{d.master, d.slave} {
		d.started = append(d.started, n)
		if err := n.run(ctx, "start"); err != nil {
			return err
		}
	}
	return nil
}

// workload seeds the Quartz tables and runs the clustered-Quartz workload
// on the master repository for -duration.
func (d *demo) workload(ctx context.Context) error {
	opts := quartz.Options{Instances: 4, Jobs: 200, Rate: d.opts.rate}
	pool, err := quartz.OpenPool(ctx, d.master.url, opts, 0)
	if err != nil {
		return err
	}
	defer pool.Close()
	say("seeding %d jobs with their triggers (quartz.Seed)", opts.Jobs)
	if err := quartz.Seed(ctx, pool, opts); err != nil {
		return err
	}
	rate := "as fast as the TRIGGER_ACCESS lock allows"
	if d.opts.rate > 0 {
		rate = fmt.Sprintf("aiming at %d firings/s", d.opts.rate)
	}
	say("%d clustered scheduler instances firing triggers, %s, for %s (quartz.Run)", opts.Instances, rate, d.opts.duration)
	runCtx, cancel := context.WithTimeout(ctx, d.opts.duration)
	defer cancel()
	st, err := quartz.Run(runCtx, pool, opts)
	if err != nil {
		return fmt.Errorf("quartz workload: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	say("firings %d, transactions %d, jobs added %d and removed %d, check-ins %d, job data rewrites %d, retried errors %d",
		st.Firings, st.Txns, st.JobsAdded, st.JobsRemoved, st.CheckIns, st.DataRewrites, st.Errors)
	say("that is %.0f firings/s and %.0f transactions/s", float64(st.Firings)/d.opts.duration.Seconds(),
		float64(st.Txns)/d.opts.duration.Seconds())
	return nil
}

// waitCaughtUp polls both nodes' `status --json` until the slave's applied
// position equals the master's captured position, and stays so.
func (d *demo) waitCaughtUp(ctx context.Context) error {
	say("polling %s", d.master.cmdline("status", "--json"))
	say("    and %s", d.slave.cmdline("status", "--json"))
	say("until the slave's position (applied) equals the master's (captured)")
	began := time.Now()
	deadline := began.Add(catchUpTimeout)
	var since time.Time
	var last string
	for {
		m, err := d.master.status(ctx)
		if err != nil {
			return err
		}
		s, err := d.slave.status(ctx)
		if err != nil {
			return err
		}
		last = fmt.Sprintf("master %s at %d, slave %s at %d", m.State, m.Position, s.State, s.Position)
		switch {
		case m.Position == 0 || s.Position != m.Position:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= caughtUpFor:
			say("caught up: both at position %d, %.1fs after the workload stopped", m.Position,
				since.Sub(began).Seconds())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the slave did not catch up within %s: %s", catchUpTimeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (d *demo) status(ctx context.Context) error {
	for _, n := range []*node{d.master, d.slave} {
		if err := n.run(ctx, "status"); err != nil {
			return err
		}
	}
	return nil
}

// errDifferent is verify's exit 1: the repositories differ.
var errDifferent = errors.New("schedsync verify found differences between master and slave")

// verify runs `schedsync verify` on the slave; exit 1 means the
// repositories differ, which fails the demo.
func (d *demo) verify(ctx context.Context) error {
	args := []string{"verify"}
	fmt.Printf("    $ %s\n", d.slave.cmdline(args...))
	out, code, err := d.slave.exec(ctx, args...)
	if err != nil {
		return err
	}
	indent(out)
	switch code {
	case 0:
		say("exit 0: every replicated table is equal on master and slave")
		return nil
	case 1:
		return errDifferent
	default:
		return fmt.Errorf("%s: exit %d", d.slave.cmdline(args...), code)
	}
}

func (d *demo) stop(ctx context.Context) error {
	for _, n := range []*node{d.slave, d.master} {
		if err := n.run(ctx, "stop"); err != nil {
			return err
		}
	}
	return nil
}
