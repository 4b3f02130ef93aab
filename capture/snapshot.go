package capture

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// SnapshotFunc runs inside a snapshot of the master repository that holds
// exactly the transactions at and before the position the request reports.
// Verify checksums the replicated tables in it.
type SnapshotFunc func(ctx context.Context, tx pgx.Tx) error

// SnapshotResult is what a snapshot request gets back.
type SnapshotResult struct {
	// Position is the spool position the snapshot equals, durable.
	Position uint64
	// SequencesAt is a durable position whose sequence values are at or
	// above every sequence value the function could read: sequences are
	// not transactional, so a slave compares its sequences once it has
	// applied this far (at or after Position).
	SequencesAt uint64
	// Epoch is the capture history of the transactions up to Position.
	Epoch uint64
	Err   error
}

// ImportTimeout bounds how long capture waits, inside the snapshot, for
// the importer of ExportSnapshot: in trigger mode capture is held that
// long.
const ImportTimeout = 30 * time.Second

// Snapshotter is a reader as ExportSnapshot uses it.
type Snapshotter interface {
	RequestSnapshot(fn SnapshotFunc) <-chan SnapshotResult
}

// ExportSnapshot makes an exact snapshot available to another session: it
// asks r for a snapshot, exports it (pg_export_snapshot) and calls imp
// with its name; imp must import it (SET TRANSACTION SNAPSHOT) before it
// returns, while capture holds the snapshot open. It returns the position
// and epoch the snapshot equals once capture has made them durable. A
// backup taken in the imported snapshot then holds exactly the
// transactions up to that position.
//
// When ExportSnapshot returns, imp has returned and will not be called:
// imp's context ends with ctx.
func ExportSnapshot(ctx context.Context, r Snapshotter, imp func(ctx context.Context, name string) error) (SnapshotResult, error) {
	var mu sync.Mutex
	abandoned, called := false, false
	done := r.RequestSnapshot(func(cctx context.Context, tx pgx.Tx) error {
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			return errors.New("the snapshot was no longer wanted")
		}
		if called {
			// A poll that failed after running the function retries the
			// request: the first snapshot was imported, and is not this one.
			return errors.New("capture failed after the snapshot was taken; take the backup again")
		}
		called = true
		var name string
		if err := tx.QueryRow(cctx, `SELECT pg_export_snapshot()`).Scan(&name); err != nil {
			return fmt.Errorf("export the snapshot: %w", err)
		}
		ictx, cancel := context.WithTimeout(ctx, ImportTimeout)
		defer cancel()
		stop := context.AfterFunc(cctx, cancel) // capture stopping ends the wait too
		defer stop()
		return imp(ictx, name)
	})
	select {
	case res := <-done:
		return res, res.Err
	case <-ctx.Done():
		mu.Lock() // waits for imp, which ends with ctx
		abandoned = true
		mu.Unlock()
		return SnapshotResult{}, ctx.Err()
	}
}

// BeginInSnapshot begins a REPEATABLE READ, READ ONLY transaction on conn
// in the exported snapshot name (of a transaction that must still be
// open): a backup imports ExportSnapshot's this way, logical capture a
// temporary slot's.
func BeginInSnapshot(ctx context.Context, conn *pgx.Conn, name string) (pgx.Tx, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin the snapshot transaction: %w", err)
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(name, "'", "''")+"'"); err != nil {
		_ = tx.Rollback(context.Background())
		return nil, fmt.Errorf("import the exported snapshot %s: %w", name, err)
	}
	return tx, nil
}

type snapshotRequest struct {
	fn   SnapshotFunc
	done chan SnapshotResult
}

// snapshotQueue holds the snapshot requests waiting for the capture loop.
type snapshotQueue struct {
	mu   sync.Mutex
	reqs []snapshotRequest
	// wake has a token while requests wait, for a loop that blocks.
	wake chan struct{}
}

func (q *snapshotQueue) request(fn SnapshotFunc) <-chan SnapshotResult {
	done := make(chan SnapshotResult, 1)
	q.mu.Lock()
	q.reqs = append(q.reqs, snapshotRequest{fn: fn, done: done})
	w := q.wakeLocked()
	q.mu.Unlock()
	select {
	case w <- struct{}{}:
	default:
	}
	return done
}

func (q *snapshotQueue) wakeLocked() chan struct{} {
	if q.wake == nil {
		q.wake = make(chan struct{}, 1)
	}
	return q.wake
}

// woken is the channel that has a token when requests arrive.
func (q *snapshotQueue) woken() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wakeLocked()
}

func (q *snapshotQueue) take() []snapshotRequest {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.reqs
	q.reqs = nil
	return s
}

// requeue puts requests back for the next poll.
func (q *snapshotQueue) requeue(reqs []snapshotRequest) {
	if len(reqs) == 0 {
		return
	}
	q.mu.Lock()
	q.reqs = append(reqs, q.reqs...)
	q.mu.Unlock()
}

// fail answers waiting requests when the reader stops.
func (q *snapshotQueue) fail(err error) {
	for _, s := range q.take() {
		s.done <- SnapshotResult{Err: err}
	}
}
