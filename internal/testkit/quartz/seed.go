package quartz

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// seedChunk is how many jobs Seed inserts per transaction: a large Jobs
// does not make one huge transaction.
const seedChunk = 250

// seedPausedGroup is paused from the start, so that PAUSED triggers and a
// qrtz_paused_trigger_grps row exist before Run resumes it.
const seedPausedGroup = "maintenance"

// Seed fills the tables for Options.SchedName: the TRIGGER_ACCESS and
// STATE_ACCESS locks, calendars, Options.Jobs jobs with triggers of every
// kind (simple, cron, calendar- and daily-interval in simprop, blob), a
// paused group, and a scheduler_state row per instance. Rows that already
// exist are left alone, so Seed may run again on a seeded database.
// Connection errors are returned: seeding is the caller's to retry.
func Seed(ctx context.Context, db DB, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	w := &workload{db: db, opts: opts, log: opts.Logger}
	r := newRand(opts.Seed, -1)
	sched := opts.SchedName
	now := nowMillis()
	const doNothing = " ON CONFLICT DO NOTHING"

	var b pgx.Batch
	for _, l := range []string{lockTrigger, lockState} {
		b.Queue(insertLock, sched, l)
	}
	for i, name := range calendarNames {
		b.Queue(`INSERT INTO qrtz_calendars (sched_name, calendar_name, calendar) VALUES ($1, $2, $3)`+doNothing,
			sched, name, calendarData(r, i))
	}
	b.Queue(`INSERT INTO qrtz_paused_trigger_grps (sched_name, trigger_group) VALUES ($1, $2)`+doNothing, sched, seedPausedGroup)
	for i := range opts.Instances {
		b.Queue(`INSERT INTO qrtz_scheduler_state (sched_name, instance_name, last_checkin_time, checkin_interval)
			VALUES ($1, $2, $3, $4)`+doNothing, sched, instanceName(i), now, checkinInterval)
	}
	for i := range opts.Jobs {
		group := groups[r.IntN(len(groups))]
		j := newJob(r, fmt.Sprintf("job-%05d", i+1), group, now)
		for k := range j.triggers {
			if j.triggers[k].group == seedPausedGroup {
				j.triggers[k].state = "PAUSED"
			}
		}
		j.queue(&b, sched, doNothing)
		if (i+1)%seedChunk == 0 || i == opts.Jobs-1 {
			if err := w.sendBatch(ctx, &b); err != nil {
				return err
			}
			b = pgx.Batch{}
		}
	}
	return w.sendBatch(ctx, &b)
}

func (w *workload) sendBatch(ctx context.Context, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	err := w.inTx(ctx, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("seed quartz tables: %w", err)
	}
	return nil
}
