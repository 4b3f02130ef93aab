package quartz

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// checkinInterval is org.quartz.jobStore.clusterCheckinInterval.
	checkinInterval = 1000
	// checkinGrace is Quartz's fixed allowance (7.5 s) before an
	// instance that stopped checking in is declared failed.
	checkinGrace = 7500
	// misfireEvery is how many check-ins apart the misfire handler runs,
	// from the first on: Quartz's runs at start too.
	misfireEvery = 5
)

// checkInLoop is the instance's ClusterManager: it records that the
// instance is alive, recovers instances that stopped checking in, and runs
// the misfire handler.
func (in *instance) checkInLoop(ctx context.Context) error {
	t := time.NewTicker(checkinInterval * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		err := in.checkIn(ctx, n == 0)
		what := "check in"
		if err == nil && n%misfireEvery == 0 {
			what, err = "handle misfires", in.handleMisfires(ctx)
		}
		if err != nil {
			if err := in.w.absorb(ctx, in.log, what, err); err != nil {
				return err
			}
			n = -1 // the next attempt is a first check-in again
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// checkIn updates the instance's row under STATE_ACCESS, inserting it on
// the first check-in or when another instance recovered and deleted it, and
// then recovers the instances it found failed.
func (in *instance) checkIn(ctx context.Context, first bool) error {
	sched := in.w.opts.SchedName
	now := nowMillis()
	var failed []string
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		var n int64
		if !first {
			tag, err := tx.Exec(ctx, `UPDATE qrtz_scheduler_state SET last_checkin_time = $3
				WHERE sched_name = $1 AND instance_name = $2`, sched, in.name, now)
			if err != nil {
				return fmt.Errorf("update scheduler state: %w", err)
			}
			n = tag.RowsAffected()
		}
		if n == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO qrtz_scheduler_state (sched_name, instance_name, last_checkin_time, checkin_interval)
				VALUES ($1, $2, $3, $4) ON CONFLICT (sched_name, instance_name)
				DO UPDATE SET last_checkin_time = EXCLUDED.last_checkin_time, checkin_interval = EXCLUDED.checkin_interval`,
				sched, in.name, now, checkinInterval); err != nil {
				return fmt.Errorf("insert scheduler state: %w", err)
			}
		}
		rows, err := tx.Query(ctx, `SELECT instance_name FROM qrtz_scheduler_state
			WHERE sched_name = $1 AND instance_name <> $2 AND last_checkin_time < $3::bigint - greatest(checkin_interval, $4::bigint) - $5::bigint
			ORDER BY instance_name`, sched, in.name, now, in.lag(now), checkinGrace)
		if err != nil {
			return fmt.Errorf("select failed instances: %w", err)
		}
		failed, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return wrap("select failed instances", err)
	}, lockState)
	if err != nil {
		return err
	}
	in.lastCheckIn = now
	in.w.stats.checkIns.Add(1)
	if len(failed) == 0 {
		return nil
	}
	return in.recoverInstances(ctx, failed)
}

// lag is how long this instance itself went without checking in. Quartz
// allows others as much before declaring them failed: after a pause that
// stopped everyone (a server restart), no instance is judged by a clock
// that stood still for all.
func (in *instance) lag(now int64) int64 {
	last := in.lastCheckIn
	if last == 0 {
		return 0
	}
	return now - last
}

// recoverInstances releases what failed instances held, as
// JobStoreSupport.clusterRecover: under STATE_ACCESS and TRIGGER_ACCESS, in
// that order (the only transactions taking both), each instance is claimed
// by deleting its row if it is still stale, so that it is recovered once.
func (in *instance) recoverInstances(ctx context.Context, failed []string) error {
	sched := in.w.opts.SchedName
	var removed int64
	var recovered []string
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		removed, recovered = 0, recovered[:0]
		now := nowMillis()
		for _, name := range failed {
			tag, err := tx.Exec(ctx, `DELETE FROM qrtz_scheduler_state
				WHERE sched_name = $1 AND instance_name = $2 AND last_checkin_time < $3::bigint - greatest(checkin_interval, $4::bigint) - $5::bigint`,
				sched, name, now, in.lag(now), checkinGrace)
			if err != nil {
				return fmt.Errorf("delete scheduler state: %w", err)
			}
			if tag.RowsAffected() == 0 {
				continue // it checked in again, or another instance got there first
			}
			n, err := releaseInstance(ctx, tx, sched, name)
			if err != nil {
				return err
			}
			removed += n
			recovered = append(recovered, name)
		}
		return nil
	}, lockState, lockTrigger)
	if err != nil {
		return err
	}
	in.jobsRemoved(removed)
	if len(recovered) > 0 {
		in.log.Info("recovered failed scheduler instances", "instances", recovered)
	}
	return nil
}

// recoverSelf releases the instance's own fired triggers: those of an
// earlier run under the same name, or of a cycle that failed halfway.
func (in *instance) recoverSelf(ctx context.Context) error {
	var removed int64
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		removed, err = releaseInstance(ctx, tx, in.w.opts.SchedName, in.name)
		return err
	}, lockTrigger)
	if err == nil {
		in.jobsRemoved(removed)
	}
	return err
}

// releaseInstance puts the triggers the instance had acquired back to
// WAITING, unblocks the non-concurrent jobs it was executing, deletes its
// fired-trigger records and, as Quartz's recovery does, removes lingering
// COMPLETE triggers. It returns the number of jobs deleted with them.
func releaseInstance(ctx context.Context, tx pgx.Tx, sched, name string) (int64, error) {
	steps := []struct{ what, sql string }{
		{"release acquired triggers", `UPDATE qrtz_triggers t SET trigger_state = 'WAITING'
			FROM qrtz_fired_triggers f
			WHERE f.sched_name = $1 AND f.instance_name = $2 AND t.sched_name = f.sched_name
			AND t.trigger_name = f.trigger_name AND t.trigger_group = f.trigger_group AND t.trigger_state = 'ACQUIRED'`},
		{"unblock jobs", `UPDATE qrtz_triggers t SET trigger_state = CASE t.trigger_state WHEN 'BLOCKED' THEN 'WAITING' ELSE 'PAUSED' END
			FROM qrtz_fired_triggers f
			WHERE f.sched_name = $1 AND f.instance_name = $2 AND f.is_nonconcurrent AND t.sched_name = f.sched_name
			AND t.job_name = f.job_name AND t.job_group = f.job_group AND t.trigger_state IN ('BLOCKED', 'PAUSED_BLOCKED')`},
		{"delete fired triggers", `DELETE FROM qrtz_fired_triggers WHERE sched_name = $1 AND instance_name = $2`},
	}
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s.sql, sched, name); err != nil {
			return 0, fmt.Errorf("%s of %s: %w", s.what, name, err)
		}
	}
	// Child rows go by ON DELETE CASCADE here.
	rows, err := tx.Query(ctx, `DELETE FROM qrtz_triggers WHERE sched_name = $1 AND trigger_state = 'COMPLETE'
		RETURNING job_name, job_group`, sched)
	if err != nil {
		return 0, fmt.Errorf("delete complete triggers: %w", err)
	}
	jobs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (jobKey, error) {
		var k jobKey
		return k, row.Scan(&k.name, &k.group)
	})
	if err != nil {
		return 0, fmt.Errorf("delete complete triggers: %w", err)
	}
	var removed int64
	for _, j := range jobs {
		n, err := deleteOrphanJob(ctx, tx, sched, j.name, j.group)
		if err != nil {
			return 0, err
		}
		removed += n
	}
	return removed, nil
}

// handleMisfires is Quartz's MisfireHandler: WAITING triggers more than
// misfireThreshold late (a group paused for long, a server down for long)
// are moved to now, or to a second from now for "do nothing" instructions,
// so that acquisition, which skips them, picks them up again.
func (in *instance) handleMisfires(ctx context.Context) error {
	return in.w.inTx(ctx, func(tx pgx.Tx) error {
		now := nowMillis()
		_, err := tx.Exec(ctx, `UPDATE qrtz_triggers SET next_fire_time = CASE misfire_instr WHEN 2 THEN $2::bigint + 1000 ELSE $2::bigint END
			WHERE sched_name = $1 AND misfire_instr <> -1 AND next_fire_time < $3::bigint AND trigger_state = 'WAITING'`,
			in.w.opts.SchedName, now, now-misfireThreshold)
		return wrap("update misfired triggers", err)
	}, lockTrigger)
}
