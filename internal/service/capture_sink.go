package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/metrics"
	"github.com/schedsync/schedsync/spool"
)

// spoolSink is the master spool as seen by capture (capture.Sink).
type spoolSink struct {
	sp *spool.Spool
	// floor is the position capture last confirmed in the master
	// repository: new positions never go below it, even if the spool
	// directory was replaced, so that no slave ever sees a position reused.
	floor uint64
	met   *metrics.Metrics

	mu     sync.Mutex
	failed error // a spool write failed: capture must stop, not retry
}

func (s *spoolSink) Append(ctx context.Context, src change.TxnSource) (uint64, error) {
	pos := max(s.sp.LastPosition(), s.floor) + 1
	t := &taggedSource{TxnSource: src}
	if err := s.sp.AppendAt(ctx, pos, t); err != nil {
		s.fail(err)
		return 0, err
	}
	s.met.Captured(t.changes)
	return pos, nil
}

// LastPosition is the last position given out.
func (s *spoolSink) LastPosition() uint64 { return max(s.sp.LastPosition(), s.floor) }

func (s *spoolSink) Sync(ctx context.Context) error {
	err := s.sp.Sync(ctx)
	s.fail(err)
	return err
}

// fail records spool errors that are not the source's or the context's.
func (s *spoolSink) fail(err error) {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errSourceFailed) {
		return
	}
	s.mu.Lock()
	if s.failed == nil {
		s.failed = err
	}
	s.mu.Unlock()
}

func (s *spoolSink) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// taggedSource marks the errors of the source so that they are told apart
// from spool errors.
type taggedSource struct {
	change.TxnSource
	changes int // read so far
}

func (t *taggedSource) Next() (*change.Change, error) {
	c, err := t.TxnSource.Next()
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", errSourceFailed, err)
	}
	if err == nil {
		t.changes++
	}
	return c, err
}

// errSourceFailed marks errors of the audit-row source: the database, not
// the spool, failed.
var errSourceFailed = errors.New("capture source failed")

func (s *spoolSink) HeadersAfter(ctx context.Context, pos uint64, fn func(uint64, change.TxnHeader)) (uint64, error) {
	last := s.sp.DurablePosition()
	if pos > last {
		// The spool is behind what capture confirmed: it was replaced.
		s.floor = pos
		return last, nil
	}
	if pos == last {
		return last, nil
	}
	r, err := s.sp.NewReader(max(pos, s.sp.FirstPosition()-1))
	if err != nil {
		return 0, fmt.Errorf("read spool after position %d: %w", pos, err)
	}
	defer r.Close()
	for p := pos; p < last; {
		var src change.TxnSource
		if p, src, err = r.Next(ctx); err != nil {
			return 0, fmt.Errorf("read spool after position %d: %w", pos, err)
		}
		fn(p, src.Header())
	}
	return last, nil
}
