package quartz

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Quartz's cluster-wide locks: rows of qrtz_locks held FOR UPDATE for the
// length of a transaction. TRIGGER_ACCESS serialises every change to
// triggers and jobs across instances; STATE_ACCESS the check-ins.
const (
	lockTrigger = "TRIGGER_ACCESS"
	lockState   = "STATE_ACCESS"
)

// Quartz's StdRowLockSemaphore statements.
const (
	selectLock = `SELECT * FROM qrtz_locks WHERE sched_name = $1 AND lock_name = $2 FOR UPDATE`
	insertLock = `INSERT INTO qrtz_locks (sched_name, lock_name) VALUES ($1, $2) ON CONFLICT DO NOTHING`
)

func nowMillis() int64 { return time.Now().UnixMilli() }

// inTx runs fn in a transaction that first takes locks, in the order given,
// and commits it, counting the commit. fn must only prepare its results:
// stats are updated by the caller after inTx returns nil, because a failed
// commit undoes everything fn did.
func (w *workload) inTx(ctx context.Context, fn func(tx pgx.Tx) error, locks ...string) error {
	tx, err := w.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// After Commit this is a no-op; on the error paths it ends the
	// transaction before the connection goes back to the pool.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, l := range locks {
		if err := obtainLock(ctx, tx, w.opts.SchedName, l); err != nil {
			return err
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	w.stats.txns.Add(1)
	return nil
}

// obtainLock locks the named qrtz_locks row, creating it if missing, as
// Quartz does when the table was not seeded.
func obtainLock(ctx context.Context, tx pgx.Tx, sched, name string) error {
	for range 2 {
		tag, err := tx.Exec(ctx, selectLock, sched, name)
		if err != nil {
			return fmt.Errorf("lock %s: %w", name, err)
		}
		if tag.RowsAffected() > 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, insertLock, sched, name); err != nil {
			return fmt.Errorf("create lock %s: %w", name, err)
		}
	}
	return fmt.Errorf("lock %s: row missing after insert", name)
}
