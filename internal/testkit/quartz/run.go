package quartz

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// reportEvery is how often Run logs its progress.
const reportEvery = 10 * time.Second

// workload is the state the instances of one Run share.
type workload struct {
	db    DB
	opts  Options
	log   *slog.Logger
	stats counters
	pacer *pacer // nil: no rate limit
	batch int    // triggers acquired at most per cycle
	// jobs approximates the number of jobs, to keep additions and
	// removals in balance around Options.Jobs.
	jobs atomic.Int64
}

// Run drives the scheduler's tables as Options.Instances clustered Quartz
// instances would, until ctx ends; then it returns the counts and a nil
// error. Lost connections and transient errors are counted in Stats.Errors
// and retried, with backoff while the server is unreachable, so Run outlives
// server restarts. Any other error is returned at once, with the counts so
// far: it means a bug or a database without the Quartz schema.
//
// Run expects Seed to have run, but works on empty tables too (it then only
// adds jobs). Only one Run per SchedName should use a database at a time:
// instances are named by their number.
func Run(ctx context.Context, db DB, opts Options) (Stats, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Stats{}, err
	}
	w := &workload{db: db, opts: opts, log: opts.Logger.With("component", "quartz", "sched", opts.SchedName)}
	w.batch = maxBatch
	if opts.Rate > 0 {
		w.pacer = newPacer(opts.Rate)
		// Small batches keep a low rate smooth.
		w.batch = min(max(opts.Rate/(10*opts.Instances), 1), maxBatch)
	}
	w.log.Info("quartz workload starting", "instances", opts.Instances, "jobs", opts.Jobs, "rate", opts.Rate)
	if err := w.retry(ctx, w.log, "count jobs", w.countJobs); err != nil {
		if ctx.Err() != nil {
			return w.stats.snapshot(), nil
		}
		return w.stats.snapshot(), err
	}
	g, gctx := errgroup.WithContext(ctx)
	runStart := time.Now().UnixMicro()
	for i := range opts.Instances {
		in := w.newInstance(i, runStart)
		g.Go(func() error { return in.schedule(gctx) })
		g.Go(func() error { return in.checkInLoop(gctx) })
	}
	g.Go(func() error { w.report(gctx); return nil })
	err = g.Wait()
	st := w.stats.snapshot()
	if err != nil {
		return st, err
	}
	w.log.Info("quartz workload stopped", statsAttrs(st)...)
	return st, nil
}

func (w *workload) countJobs(ctx context.Context) error {
	return w.inTx(ctx, func(tx pgx.Tx) error {
		var n int64
		err := tx.QueryRow(ctx, `SELECT count(*) FROM qrtz_job_details WHERE sched_name = $1`, w.opts.SchedName).Scan(&n)
		if err != nil {
			return fmt.Errorf("count jobs: %w", err)
		}
		w.jobs.Store(n)
		return nil
	})
}

// retry runs step until it succeeds, returning nil; until ctx ends,
// returning ctx's error; or until it fails with a fatal error, returned.
func (w *workload) retry(ctx context.Context, log *slog.Logger, what string, step func(context.Context) error) error {
	var b backoff
	for {
		err := step(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		kind := classify(err)
		if kind == fatal {
			return fmt.Errorf("%s: %w", what, err)
		}
		w.retried(log, what, kind, err)
		if !sleep(ctx, b.delay(kind)) {
			return ctx.Err()
		}
	}
}

// absorb decides about an error of a loop's iteration: nil when the loop
// should go on (the error was counted, or ctx ended), the error otherwise.
func (w *workload) absorb(ctx context.Context, log *slog.Logger, what string, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	kind := classify(err)
	if kind == fatal {
		return fmt.Errorf("%s: %w", what, err)
	}
	w.retried(log, what, kind, err)
	return nil
}

func (w *workload) retried(log *slog.Logger, what string, kind errKind, err error) {
	w.stats.errors.Add(1)
	log.Warn("quartz workload: retrying", "step", what, "kind", kind.String(), "err", err)
}

// report logs the counts every reportEvery, so that a long demo shows
// progress.
func (w *workload) report(ctx context.Context) {
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.log.Info("quartz workload progress", statsAttrs(w.stats.snapshot())...)
		}
	}
}

func statsAttrs(s Stats) []any {
	return []any{"firings", s.Firings, "jobs_added", s.JobsAdded, "jobs_removed", s.JobsRemoved,
		"checkins", s.CheckIns, "data_rewrites", s.DataRewrites, "errors", s.Errors, "txns", s.Txns}
}

// newRand returns the random source of instance i (or of Seed, i = -1),
// reproducible from Options.Seed.
func newRand(seed int64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), uint64(i+1)))
}
