package quartz

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// DB is what Seed and Run need from the database: a transaction per call,
// safe for concurrent use. *pgxpool.Pool satisfies it; it should allow at
// least 2×Instances connections, one for each instance's scheduling loop and
// one for its check-ins, or the instances queue for connections.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Options configures Seed and Run. The zero value is the demo's workload.
type Options struct {
	// SchedName is qrtz_*.sched_name: several schedulers can share the
	// tables. Default "schedsync-demo".
	SchedName string
	// Instances is the number of concurrent scheduler instances (cluster
	// nodes), each with its own scheduling loop and check-in loop.
	// Default 4.
	Instances int
	// Jobs is the number of jobs Seed creates (most with one trigger, some
	// with two), and the population Run keeps the job count around.
	// Default 200.
	Jobs int
	// Rate is the target number of firings per second across all
	// instances; 0 fires as fast as the TRIGGER_ACCESS lock allows.
	Rate int
	// Seed makes the generated values reproducible; the interleaving of
	// the instances is not.
	Seed int64
	// Logger receives start/stop and periodic progress at Info and
	// retried errors at Warn. Default: discard.
	Logger *slog.Logger
}

const (
	defaultSchedName = "schedsync-demo"
	defaultInstances = 4
	defaultJobs      = 200
)

// withDefaults fills in the defaults and rejects values that cannot work,
// naming the field.
func (o Options) withDefaults() (Options, error) {
	switch {
	case o.Instances < 0:
		return o, fmt.Errorf("quartz options: Instances must be ≥ 0, got %d", o.Instances)
	case o.Jobs < 0:
		return o, fmt.Errorf("quartz options: Jobs must be ≥ 0, got %d", o.Jobs)
	case o.Rate < 0:
		return o, fmt.Errorf("quartz options: Rate must be ≥ 0, got %d", o.Rate)
	case len(o.SchedName) > 120:
		return o, fmt.Errorf("quartz options: SchedName is longer than qrtz_*.sched_name's 120 characters")
	}
	if o.SchedName == "" {
		o.SchedName = defaultSchedName
	}
	if o.Instances == 0 {
		o.Instances = defaultInstances
	}
	if o.Jobs == 0 {
		o.Jobs = defaultJobs
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Stats counts what Run did. Every count is of committed work, except
// Errors, which counts retried failures (transient SQL errors and lost
// connections).
type Stats struct {
	Firings      int64 // triggers fired (fire step committed)
	JobsAdded    int64 // jobs created with their triggers
	JobsRemoved  int64 // jobs deleted: removals, and non-durable jobs whose last trigger completed
	CheckIns     int64 // qrtz_scheduler_state check-ins
	DataRewrites int64 // qrtz_job_details.job_data rewritten after a firing
	Errors       int64 // retried errors
	Txns         int64 // committed transactions
}

// counters is the live, concurrently updated form of Stats.
type counters struct {
	firings, jobsAdded, jobsRemoved, checkIns, dataRewrites, errors, txns atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Firings:      c.firings.Load(),
		JobsAdded:    c.jobsAdded.Load(),
		JobsRemoved:  c.jobsRemoved.Load(),
		CheckIns:     c.checkIns.Load(),
		DataRewrites: c.dataRewrites.Load(),
		Errors:       c.errors.Load(),
		Txns:         c.txns.Load(),
	}
}
