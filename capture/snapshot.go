package capture

import (
	"context"
	"sync"

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
	Err         error
}

// Reader is a capture reader of either mode, as the master service drives
// it: Connect, then Serve until it fails or ctx ends; RequestSnapshot may
// be called from any goroutine.
type Reader interface {
	Connect(ctx context.Context) error
	Serve(ctx context.Context) error
	RequestSnapshot(fn SnapshotFunc) <-chan SnapshotResult
	Close()
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
