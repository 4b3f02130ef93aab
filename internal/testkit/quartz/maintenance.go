package quartz

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// jobKey names a job (or a trigger) within the scheduler.
type jobKey struct{ name, group string }

// maxPausedGroups bounds how many trigger groups are paused at once, so
// that most triggers keep firing.
const maxPausedGroups = 2

// allGroupsPaused is the marker row Quartz writes for pauseAll; new
// triggers check for it too.
const allGroupsPaused = "_$_ALL_GROUPS_PAUSED_$_"

// addJob stores a new job with its triggers, as storeJobAndTrigger: PAUSED
// if its group is paused.
func (in *instance) addJob(ctx context.Context) error {
	sched := in.w.opts.SchedName
	j := newJob(in.rng, fmt.Sprintf("%s-job-%d", in.name, in.nextSeq()), groups[in.rng.IntN(len(groups))], nowMillis())
	j.data = jobData(in.rng, in.name, 0)
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		for i := range j.triggers {
			t := &j.triggers[i]
			var paused bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM qrtz_paused_trigger_grps
				WHERE sched_name = $1 AND trigger_group IN ($2, $3))`, sched, t.group, allGroupsPaused).Scan(&paused); err != nil {
				return fmt.Errorf("select paused group: %w", err)
			}
			t.state = "WAITING"
			if paused {
				t.state = "PAUSED"
			}
		}
		var b pgx.Batch
		j.queue(&b, sched, "")
		return wrap("insert job", tx.SendBatch(ctx, &b).Close())
	}, lockTrigger)
	if err == nil {
		in.w.stats.jobsAdded.Add(1)
		in.w.jobs.Add(1)
	}
	return err
}

// removeJob deletes a random job, as removeJob: its triggers first, whose
// child rows go by ON DELETE CASCADE, then the job.
func (in *instance) removeJob(ctx context.Context) error {
	sched := in.w.opts.SchedName
	var removed int64
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		removed = 0
		var k jobKey
		err := tx.QueryRow(ctx, `SELECT job_name, job_group FROM qrtz_job_details WHERE sched_name = $1
			ORDER BY job_group, job_name OFFSET $2 LIMIT 1`, sched, in.rng.Int64N(max(in.w.jobs.Load(), 1))).Scan(&k.name, &k.group)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // fewer jobs than counted; the next removal picks within range
		}
		if err != nil {
			return fmt.Errorf("select job: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM qrtz_triggers WHERE sched_name = $1 AND job_name = $2 AND job_group = $3`,
			sched, k.name, k.group); err != nil {
			return fmt.Errorf("delete triggers: %w", err)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM qrtz_job_details WHERE sched_name = $1 AND job_name = $2 AND job_group = $3`,
			sched, k.name, k.group)
		if err != nil {
			return fmt.Errorf("delete job: %w", err)
		}
		removed = tag.RowsAffected()
		return nil
	}, lockTrigger)
	if err == nil {
		in.jobsRemoved(removed)
	}
	return err
}

// pauseOrResume pauses a random trigger group, or resumes a paused one once
// maxPausedGroups are paused (and at random before that), as
// pauseTriggers/resumeTriggers with a group matcher.
func (in *instance) pauseOrResume(ctx context.Context) error {
	sched := in.w.opts.SchedName
	return in.w.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT trigger_group FROM qrtz_paused_trigger_grps WHERE sched_name = $1
			ORDER BY trigger_group`, sched)
		if err != nil {
			return fmt.Errorf("select paused groups: %w", err)
		}
		paused, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("select paused groups: %w", err)
		}
		if len(paused) >= maxPausedGroups || (len(paused) > 0 && in.rng.IntN(2) == 0) {
			return resumeGroup(ctx, tx, sched, paused[in.rng.IntN(len(paused))])
		}
		return pauseGroup(ctx, tx, sched, groups[in.rng.IntN(len(groups))])
	}, lockTrigger)
}

func pauseGroup(ctx context.Context, tx pgx.Tx, sched, group string) error {
	if _, err := tx.Exec(ctx, `UPDATE qrtz_triggers SET trigger_state = CASE trigger_state WHEN 'BLOCKED' THEN 'PAUSED_BLOCKED' ELSE 'PAUSED' END
		WHERE sched_name = $1 AND trigger_group = $2 AND trigger_state IN ('WAITING', 'ACQUIRED', 'BLOCKED')`,
		sched, group); err != nil {
		return fmt.Errorf("pause triggers: %w", err)
	}
	_, err := tx.Exec(ctx, `INSERT INTO qrtz_paused_trigger_grps (sched_name, trigger_group) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, sched, group)
	return wrap("insert paused group", err)
}

func resumeGroup(ctx context.Context, tx pgx.Tx, sched, group string) error {
	if _, err := tx.Exec(ctx, `UPDATE qrtz_triggers SET trigger_state = CASE trigger_state WHEN 'PAUSED_BLOCKED' THEN 'BLOCKED' ELSE 'WAITING' END
		WHERE sched_name = $1 AND trigger_group = $2 AND trigger_state IN ('PAUSED', 'PAUSED_BLOCKED')`,
		sched, group); err != nil {
		return fmt.Errorf("resume triggers: %w", err)
	}
	_, err := tx.Exec(ctx, `DELETE FROM qrtz_paused_trigger_grps WHERE sched_name = $1 AND trigger_group = $2`, sched, group)
	return wrap("delete paused group", err)
}

// storeCalendar replaces a calendar's serialized form, creating it if it
// is missing, as storeCalendar with replaceExisting.
func (in *instance) storeCalendar(ctx context.Context) error {
	sched := in.w.opts.SchedName
	i := in.rng.IntN(len(calendarNames))
	data := calendarData(in.rng, i)
	return in.w.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE qrtz_calendars SET calendar = $3 WHERE sched_name = $1 AND calendar_name = $2`,
			sched, calendarNames[i], data)
		if err != nil {
			return fmt.Errorf("update calendar: %w", err)
		}
		if tag.RowsAffected() > 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO qrtz_calendars (sched_name, calendar_name, calendar) VALUES ($1, $2, $3)`,
			sched, calendarNames[i], data)
		return wrap("insert calendar", err)
	}, lockTrigger)
}
