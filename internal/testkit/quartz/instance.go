package quartz

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

const (
	// maxBatch is org.quartz.scheduler.batchTriggerAcquisitionMaxCount.
	maxBatch = 5
	// acquireWindow is how far ahead triggers are acquired (Quartz's
	// idleWaitTime). Run fires them at once instead of waiting for their
	// time, so every trigger with a shorter interval is always due: the
	// workload never runs dry, and Rate alone sets the pace.
	acquireWindow = 30_000
	// misfireThreshold is org.quartz.jobStore.misfireThreshold: a trigger
	// this late is left to the misfire handler.
	misfireThreshold = 60_000
	// idleWait is the pause after a cycle that found nothing to fire.
	idleWait = 20 * time.Millisecond
	// maintenanceChance and maintenanceEvery set how often an instance
	// adds or removes a job, pauses or resumes a group, or rewrites a
	// calendar: on 2% of its cycles, and at least every half second so
	// that a slow or rate-limited run still does it.
	maintenanceChance = 0.02
	maintenanceEvery  = 500 * time.Millisecond
)

// instance is one Quartz cluster node: a scheduling loop (schedule) and a
// check-in loop (checkInLoop). Each field is used by one of the two loops
// only; they share nothing but the workload's atomics.
type instance struct {
	w    *workload
	name string // qrtz_scheduler_state.instance_name
	log  *slog.Logger
	// The scheduling loop's:
	rng *rand.Rand
	// seq numbers fired-trigger entries, added jobs and data rewrites. It
	// starts at the run's start time, as Quartz's does (in milliseconds;
	// here in microseconds, which no run outpaces), so that a new run
	// does not reuse an earlier run's names.
	seq             int64
	lastMaintenance time.Time
	// The check-in loop's: when the last check-in committed, in epoch ms.
	lastCheckIn int64
}

func (w *workload) newInstance(i int, runStart int64) *instance {
	name := instanceName(i)
	in := &instance{
		w:               w,
		name:            name,
		log:             w.log.With("instance", name),
		rng:             newRand(w.opts.Seed, i),
		seq:             runStart,
		lastMaintenance: time.Now(),
	}
	return in
}

// schedule is the scheduling loop: acquire, fire and complete triggers, with
// maintenance now and then. After an error the instance first releases
// whatever it had acquired, because it cannot know whether the failed
// transaction committed; the first iteration does the same for a previous
// run's leftovers.
func (in *instance) schedule(ctx context.Context) error {
	var b backoff
	dirty := true
	for ctx.Err() == nil {
		var err error
		what := "release own triggers"
		if dirty {
			err = in.recoverSelf(ctx)
		}
		if err == nil {
			dirty = false
			what, err = in.cycle(ctx)
		}
		if err == nil {
			b.reset()
			continue
		}
		if err := in.w.absorb(ctx, in.log, what, err); err != nil {
			return err
		}
		dirty = true
		sleep(ctx, b.delay(classify(err)))
	}
	return nil
}

// cycle is one iteration of the scheduling loop; it names the step that
// failed.
func (in *instance) cycle(ctx context.Context) (string, error) {
	if in.rng.Float64() < maintenanceChance || time.Since(in.lastMaintenance) >= maintenanceEvery {
		in.lastMaintenance = time.Now()
		if what, err := in.maintain(ctx); err != nil {
			return what, err
		}
	}
	batch, err := in.acquire(ctx)
	if err != nil {
		return "acquire triggers", err
	}
	if len(batch) == 0 {
		sleep(ctx, idleWait)
		return "", nil
	}
	if !in.w.pacer.wait(ctx, len(batch)) {
		return "", nil // ctx ended; the batch is released by the next run
	}
	if err := in.fire(ctx, batch); err != nil {
		return "fire triggers", err
	}
	if err := in.complete(ctx, batch); err != nil {
		return "complete triggers", err
	}
	return "", nil
}

// maintain does one of the occasional changes a running scheduler sees: jobs
// come and go (the count kept near Options.Jobs), groups are paused and
// resumed, calendars replaced.
func (in *instance) maintain(ctx context.Context) (string, error) {
	switch p := in.rng.IntN(100); {
	case p < 70:
		target := float64(in.w.opts.Jobs)
		// 50/50 at the target, always adding below 90% of it and always
		// removing above 110%.
		pAdd := 0.5 + 5*(target-float64(in.w.jobs.Load()))/max(target, 1)
		if in.rng.Float64() < pAdd {
			return "add job", in.addJob(ctx)
		}
		return "remove job", in.removeJob(ctx)
	case p < 85:
		return "pause or resume group", in.pauseOrResume(ctx)
	default:
		return "store calendar", in.storeCalendar(ctx)
	}
}

func (in *instance) nextSeq() int64 {
	in.seq++
	return in.seq
}

// instanceName names instance i (from 0). Names are stable across runs, so
// that a new run recovers its predecessor's leftovers at once.
func instanceName(i int) string { return fmt.Sprintf("schedsync-node%02d", i+1) }
