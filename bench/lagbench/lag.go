package main

import (
	"context"
	"fmt"
	"time"
)

// lagResult is what the steady-rate run measured.
type lagResult struct {
	Samples []time.Duration // commit on the master → visible on the slave, one per probe
	SentAt  []time.Duration // when each probe committed, from the start of pgbench
	Bench   benchResult
	CPU     cpuUsage // every process of the measurement, during the probes
	IdleCPU float64  // machine busy % in the second before pgbench started: other work
}

// probeLimit is how long one probe may take before the run is abandoned.
const probeLimit = 30 * time.Second

// measureLag runs pgbench at the steady rate and probes the lag meanwhile,
// from the end of the warm-up until a second before pgbench ends (so that
// pgbench's backends are still there to be measured).
func measureLag(ctx context.Context, o options, w *world, sys system) (lagResult, error) {
	var r lagResult
	var err error
	if r.IdleCPU, err = idleBusy(ctx, time.Second); err != nil {
		return r, err
	}
	start := time.Now()
	bench := startBench(ctx, w.master, w.masterURL(), o, benchLoad{duration: o.duration, rate: o.rate})
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-bench.done:
		return r, waitBench(bench)
	case <-time.After(o.warmup):
	}
	procs, err := allProcs(ctx, w, sys, bench.pid)
	if err != nil {
		return r, err
	}
	meter := startCPU(procs)
	r.Samples, r.SentAt, err = probeUntil(ctx, w, o.probeEvery, start, start.Add(o.duration-time.Second), bench.done)
	r.CPU = meter.stop()
	if berr := waitBench(bench); err == nil {
		err = berr
	}
	r.Bench = bench.res
	return r, err
}

// probeUntil sends a probe every interval and waits for each on the slave,
// until the deadline or until done is closed. It returns the lags and
// when each probe was sent, from start.
func probeUntil(ctx context.Context, w *world, every time.Duration, start, deadline time.Time, done <-chan struct{}) (samples, at []time.Duration, err error) {
	t := time.NewTicker(every)
	defer t.Stop()
	end := time.NewTimer(time.Until(deadline))
	defer end.Stop()
	for id := int64(1); ; id++ {
		sent, err := w.insertProbe(ctx, id)
		if err != nil {
			return samples, at, err
		}
		seen, err := w.waitVisible(ctx, id, probeLimit)
		if err != nil {
			return samples, at, err
		}
		samples = append(samples, seen.Sub(sent))
		at = append(at, sent.Sub(start))
		select {
		case <-ctx.Done():
			return samples, at, ctx.Err()
		case <-done:
			return samples, at, nil
		case <-end.C:
			return samples, at, nil
		case <-t.C:
		}
	}
}

func waitBench(b *benchRun) error {
	if _, err := b.wait(); err != nil {
		return fmt.Errorf("pgbench: %w", err)
	}
	return nil
}
