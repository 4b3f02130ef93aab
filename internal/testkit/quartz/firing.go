package quartz

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// acquired is a trigger this instance acquired, followed through the fire
// and complete steps.
type acquired struct {
	entryID                 string
	name, group             string
	jobName, jobGroup       string
	schedTime               int64
	priority                int32
	nonconcurrent, recovery bool
	updateData              bool
	fired, completed        bool // set by fire
}

// Quartz's selectTriggerToAcquire, joined with the job for the flags the
// later steps need.
const selectAcquirable = `SELECT t.trigger_name, t.trigger_group, t.next_fire_time, coalesce(t.priority, 5),
	t.job_name, t.job_group, j.is_nonconcurrent, j.is_update_data, j.requests_recovery
FROM qrtz_triggers t JOIN qrtz_job_details j
	ON j.sched_name = t.sched_name AND j.job_name = t.job_name AND j.job_group = t.job_group
WHERE t.sched_name = $1 AND t.trigger_state = 'WAITING' AND t.next_fire_time <= $2
	AND (t.misfire_instr = -1 OR t.next_fire_time >= $3)
ORDER BY t.next_fire_time ASC, t.priority DESC
LIMIT $4`

// acquire moves up to w.batch due triggers from WAITING to ACQUIRED and
// records each in qrtz_fired_triggers, as JobStoreSupport.acquireNextTriggers.
func (in *instance) acquire(ctx context.Context) ([]acquired, error) {
	var batch []acquired
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		batch = batch[:0]
		now := nowMillis()
		// Twice the batch, because triggers of a non-concurrent job
		// after the first are skipped.
		rows, err := tx.Query(ctx, selectAcquirable, in.w.opts.SchedName, now+acquireWindow, now-misfireThreshold, 2*in.w.batch)
		if err != nil {
			return fmt.Errorf("select triggers: %w", err)
		}
		candidates, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (acquired, error) {
			var a acquired
			err := row.Scan(&a.name, &a.group, &a.schedTime, &a.priority, &a.jobName, &a.jobGroup,
				&a.nonconcurrent, &a.updateData, &a.recovery)
			return a, err
		})
		if err != nil {
			return fmt.Errorf("select triggers: %w", err)
		}
		busy := map[[2]string]bool{}
		for _, a := range candidates {
			job := [2]string{a.jobName, a.jobGroup}
			if len(batch) == in.w.batch || (a.nonconcurrent && busy[job]) {
				continue
			}
			ok, err := in.acquireOne(ctx, tx, &a, now)
			if err != nil {
				return err
			}
			if ok {
				busy[job] = true
				batch = append(batch, a)
			}
		}
		return nil
	}, lockTrigger)
	return batch, err
}

func (in *instance) acquireOne(ctx context.Context, tx pgx.Tx, a *acquired, now int64) (bool, error) {
	sched := in.w.opts.SchedName
	tag, err := tx.Exec(ctx, `UPDATE qrtz_triggers SET trigger_state = 'ACQUIRED'
		WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3 AND trigger_state = 'WAITING'`,
		sched, a.name, a.group)
	if err != nil {
		return false, fmt.Errorf("update trigger state: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	a.entryID = fmt.Sprintf("%s%d", in.name, in.nextSeq())
	// While ACQUIRED, Quartz leaves the job columns NULL and the flags
	// false; the fire step fills them in.
	_, err = tx.Exec(ctx, `INSERT INTO qrtz_fired_triggers (sched_name, entry_id, trigger_name, trigger_group,
		instance_name, fired_time, sched_time, priority, state, job_name, job_group, is_nonconcurrent, requests_recovery)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ACQUIRED', NULL, NULL, false, false)`,
		sched, a.entryID, a.name, a.group, in.name, now, a.schedTime, a.priority)
	if err != nil {
		return false, fmt.Errorf("insert fired trigger: %w", err)
	}
	return true, nil
}

// fireRow is what the fire step reads of a trigger.
type fireRow struct {
	kind, state    string
	next           int64
	repeatCount    *int64
	repeatInterval *int64
	timesTriggered *int64
	cronExpr       *string
	unit           *string
	interval       *int32
}

const selectForFire = `SELECT t.trigger_type, t.trigger_state, coalesce(t.next_fire_time, 0),
	s.repeat_count, s.repeat_interval, s.times_triggered, c.cron_expression, p.str_prop_1, p.int_prop_1
FROM qrtz_triggers t
	LEFT JOIN qrtz_simple_triggers s USING (sched_name, trigger_name, trigger_group)
	LEFT JOIN qrtz_cron_triggers c USING (sched_name, trigger_name, trigger_group)
	LEFT JOIN qrtz_simprop_triggers p USING (sched_name, trigger_name, trigger_group)
WHERE t.sched_name = $1 AND t.trigger_name = $2 AND t.trigger_group = $3`

// fire marks the batch EXECUTING and moves each trigger to its next fire
// time, as JobStoreSupport.triggersFired.
func (in *instance) fire(ctx context.Context, batch []acquired) error {
	var fired int64
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		fired = 0
		now := nowMillis()
		for i := range batch {
			a := &batch[i]
			a.fired, a.completed = false, false
			if err := in.fireOne(ctx, tx, a, now); err != nil {
				return err
			}
			if a.fired {
				fired++
			}
		}
		return nil
	}, lockTrigger)
	if err == nil {
		in.w.stats.firings.Add(fired)
	}
	return err
}

func (in *instance) fireOne(ctx context.Context, tx pgx.Tx, a *acquired, now int64) error {
	sched := in.w.opts.SchedName
	tag, err := tx.Exec(ctx, `UPDATE qrtz_fired_triggers SET instance_name = $3, fired_time = $4, sched_time = $5,
		state = 'EXECUTING', job_name = $6, job_group = $7, is_nonconcurrent = $8, requests_recovery = $9
		WHERE sched_name = $1 AND entry_id = $2 AND state = 'ACQUIRED'`,
		sched, a.entryID, in.name, now, a.schedTime, a.jobName, a.jobGroup, a.nonconcurrent, a.recovery)
	if err != nil {
		return fmt.Errorf("update fired trigger: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil // released by another instance's recovery
	}
	var r fireRow
	err = tx.QueryRow(ctx, selectForFire, sched, a.name, a.group).Scan(&r.kind, &r.state, &r.next,
		&r.repeatCount, &r.repeatInterval, &r.timesTriggered, &r.cronExpr, &r.unit, &r.interval)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && r.state != "ACQUIRED") {
		// Removed or paused since it was acquired: release it.
		_, err = tx.Exec(ctx, `DELETE FROM qrtz_fired_triggers WHERE sched_name = $1 AND entry_id = $2`, sched, a.entryID)
		return wrap("release fired trigger", err)
	}
	if err != nil {
		return fmt.Errorf("select trigger: %w", err)
	}
	next, done := in.nextFireTime(&r, now)
	state := "WAITING"
	switch {
	case done:
		state, next = "COMPLETE", -1
	case a.nonconcurrent:
		state = "BLOCKED"
	}
	_, err = tx.Exec(ctx, `UPDATE qrtz_triggers SET prev_fire_time = $4, next_fire_time = $5, trigger_state = $6
		WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3`,
		sched, a.name, a.group, r.next, next, state)
	if err != nil {
		return fmt.Errorf("update trigger: %w", err)
	}
	if err := in.updateChild(ctx, tx, a, &r); err != nil {
		return err
	}
	if a.nonconcurrent && !done {
		// Until it completes, the job's other triggers must not fire.
		_, err = tx.Exec(ctx, `UPDATE qrtz_triggers SET trigger_state = CASE trigger_state WHEN 'WAITING' THEN 'BLOCKED' ELSE 'PAUSED_BLOCKED' END
			WHERE sched_name = $1 AND job_name = $2 AND job_group = $3 AND trigger_state IN ('WAITING', 'PAUSED')`,
			sched, a.jobName, a.jobGroup)
		if err != nil {
			return fmt.Errorf("block job's triggers: %w", err)
		}
	}
	a.fired, a.completed = true, done
	return nil
}

// nextFireTime returns the trigger's next fire time after firing now, and
// whether it has fired for the last time. Times are counted from now, not
// from the previous fire time, because triggers are fired early.
func (in *instance) nextFireTime(r *fireRow, now int64) (next int64, done bool) {
	switch {
	case r.kind == kindSimple && r.repeatInterval != nil:
		*r.timesTriggered++
		if *r.repeatCount >= 0 && *r.timesTriggered > *r.repeatCount {
			return 0, true
		}
		return now + max(*r.repeatInterval, 1), false
	case r.kind == kindCron && r.cronExpr != nil:
		p := cronPeriod(*r.cronExpr)
		return (now/p + 1) * p, false
	case (r.kind == kindCalInt || r.kind == kindDaily) && r.interval != nil && r.unit != nil:
		return now + max(int64(*r.interval)*intervalUnits[*r.unit], 1000), false
	default: // BLOB, or a child row missing
		return now + 500 + in.rng.Int64N(4500), false
	}
}

// updateChild rewrites the trigger's child row, as Quartz's storeTrigger
// does on every firing: the simple trigger's counter, the simprop trigger's
// times triggered, a blob trigger's whole serialized form, and the cron
// row with the values it already has.
func (in *instance) updateChild(ctx context.Context, tx pgx.Tx, a *acquired, r *fireRow) error {
	key := []any{in.w.opts.SchedName, a.name, a.group}
	var err error
	switch r.kind {
	case kindSimple:
		if r.repeatInterval == nil {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE qrtz_simple_triggers SET repeat_count = $4, repeat_interval = $5, times_triggered = $6
			WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3`,
			append(key, *r.repeatCount, *r.repeatInterval, *r.timesTriggered)...)
	case kindCron:
		// An update that changes nothing still writes a new row version.
		_, err = tx.Exec(ctx, `UPDATE qrtz_cron_triggers SET cron_expression = cron_expression, time_zone_id = time_zone_id
			WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3`, key...)
	case kindCalInt, kindDaily:
		_, err = tx.Exec(ctx, `UPDATE qrtz_simprop_triggers SET int_prop_2 = coalesce(int_prop_2, 0) + 1
			WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3`, key...)
	case kindBlob:
		_, err = tx.Exec(ctx, `UPDATE qrtz_blob_triggers SET blob_data = $4
			WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3`,
			append(key, blobData(in.rng, in.nextSeq()))...)
	}
	return wrap("update "+r.kind+" trigger", err)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
