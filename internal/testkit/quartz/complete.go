package quartz

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// complete finishes the batch's executions, as
// JobStoreSupport.triggeredJobComplete: it saves the JobDataMap of jobs that
// persist it, deletes triggers that fired for the last time (and their job
// if it is not durable), unblocks the triggers of non-concurrent jobs, and
// deletes the fired-trigger records.
func (in *instance) complete(ctx context.Context, batch []acquired) error {
	var rewrites, removed int64
	err := in.w.inTx(ctx, func(tx pgx.Tx) error {
		rewrites, removed = 0, 0
		sched := in.w.opts.SchedName
		for i := range batch {
			a := &batch[i]
			if a.fired && a.updateData {
				tag, err := tx.Exec(ctx, `UPDATE qrtz_job_details SET job_data = $4
					WHERE sched_name = $1 AND job_name = $2 AND job_group = $3`,
					sched, a.jobName, a.jobGroup, jobData(in.rng, in.name, in.nextSeq()))
				if err != nil {
					return fmt.Errorf("update job data: %w", err)
				}
				rewrites += tag.RowsAffected()
			}
			if a.completed {
				n, err := in.removeCompleted(ctx, tx, a)
				if err != nil {
					return err
				}
				removed += n
			}
			if a.fired && a.nonconcurrent {
				if err := unblockJob(ctx, tx, sched, a.jobName, a.jobGroup); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `DELETE FROM qrtz_fired_triggers WHERE sched_name = $1 AND entry_id = $2`,
				sched, a.entryID); err != nil {
				return fmt.Errorf("delete fired trigger: %w", err)
			}
		}
		return nil
	}, lockTrigger)
	if err == nil {
		in.w.stats.dataRewrites.Add(rewrites)
		in.jobsRemoved(removed)
	}
	return err
}

// removeCompleted deletes a trigger that fired for the last time the way
// Quartz's removeTrigger does, child row first and explicitly (removeJob
// leaves it to ON DELETE CASCADE instead), then its job if the job is not
// durable and has no trigger left. It returns the number of jobs deleted.
func (in *instance) removeCompleted(ctx context.Context, tx pgx.Tx, a *acquired) (int64, error) {
	sched := in.w.opts.SchedName
	if _, err := tx.Exec(ctx, `DELETE FROM qrtz_simple_triggers WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3`,
		sched, a.name, a.group); err != nil {
		return 0, fmt.Errorf("delete simple trigger: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM qrtz_triggers WHERE sched_name = $1 AND trigger_name = $2 AND trigger_group = $3
		AND trigger_state = 'COMPLETE'`, sched, a.name, a.group); err != nil {
		return 0, fmt.Errorf("delete completed trigger: %w", err)
	}
	return deleteOrphanJob(ctx, tx, sched, a.jobName, a.jobGroup)
}

// deleteOrphanJob deletes the job if it is not durable and no trigger refers
// to it any more, returning 1 if it did.
func deleteOrphanJob(ctx context.Context, tx pgx.Tx, sched, job, group string) (int64, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM qrtz_job_details j
		WHERE j.sched_name = $1 AND j.job_name = $2 AND j.job_group = $3 AND NOT j.is_durable
		AND NOT EXISTS (SELECT 1 FROM qrtz_triggers t
			WHERE t.sched_name = j.sched_name AND t.job_name = j.job_name AND t.job_group = j.job_group)`,
		sched, job, group)
	if err != nil {
		return 0, fmt.Errorf("delete job: %w", err)
	}
	return tag.RowsAffected(), nil
}

// unblockJob lets the triggers of a non-concurrent job fire again.
func unblockJob(ctx context.Context, tx pgx.Tx, sched, job, group string) error {
	_, err := tx.Exec(ctx, `UPDATE qrtz_triggers SET trigger_state = CASE trigger_state WHEN 'BLOCKED' THEN 'WAITING' ELSE 'PAUSED' END
		WHERE sched_name = $1 AND job_name = $2 AND job_group = $3 AND trigger_state IN ('BLOCKED', 'PAUSED_BLOCKED')`,
		sched, job, group)
	return wrap("unblock job's triggers", err)
}

func (in *instance) jobsRemoved(n int64) {
	in.w.stats.jobsRemoved.Add(n)
	in.w.jobs.Add(-n)
}
