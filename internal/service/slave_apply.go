package service

import (
	"context"
	"errors"
	"time"

	"github.com/schedsync/schedsync/apply"
)

// applyLoop replays the slave spool into the slave repository, retrying
// with backoff when the database is away. A schema mismatch is shown as
// apply_error and retried slowly, so that fixing the slave's schema resumes
// apply without a restart.
func (s *Slave) applyLoop(ctx context.Context) error {
	a := apply.New(apply.Options{
		ConnConfig:    s.connCfg,
		BatchMaxBytes: int(s.cfg.Apply.BatchMaxBytes),
		BatchMaxDelay: s.cfg.Apply.BatchMaxDelay,
		Logger:        s.log,
		OnApplied:     s.onApplied,
	}, apply.SpoolLog(s.sp))
	s.mu.Lock()
	s.applier = a
	s.mu.Unlock()
	bo := newBackoff(100*time.Millisecond, 30*time.Second)
	for ctx.Err() == nil {
		err := a.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.mu.Lock()
		if errors.Is(err, apply.ErrSchema) {
			s.applyErr = err.Error()
			bo.cur = max(bo.cur, 10*time.Second)
		} else {
			s.applyErr = ""
		}
		s.mu.Unlock()
		bo.wait(ctx, s.log, "apply stopped; retrying", err)
	}
	return nil
}

// onApplied publishes a committed apply position and acknowledges it.
func (s *Slave) onApplied(pos uint64, _ time.Time) {
	s.applied.Store(pos)
	s.mu.Lock()
	s.applyErr = ""
	s.mu.Unlock()
	s.wakeAcks()
}
