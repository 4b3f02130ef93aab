package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/spool"
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
		Metrics:       s.opts.Metrics,
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
		if errors.Is(err, spool.ErrCorrupt) {
			// Bad bytes are never skipped: stop, naming the segment and
			// the offset, and say how to fetch them again.
			s.log.Error("the slave spool is corrupt; the service stops", "err", err)
			return fmt.Errorf("apply: %w", corruptSpoolHint(err))
		}
		state := StateRepositoryUnavailable
		switch {
		case errors.Is(err, apply.ErrHistory) && s.epoch.Load() != a.Epoch():
			// The slave took its new master's history (adoptHistory)
			// after this run read the old one: read it again now.
			continue
		case errors.Is(err, apply.ErrHistory):
			// Changes of another capture history over this slave's data:
			// only a re-sync helps (resync acts on needs_resync).
			state = StateNeedsResync
			bo.atLeast(10 * time.Second)
			s.autoResync()
		case errors.Is(err, apply.ErrSchema) || errors.Is(err, apply.ErrRestoreInterrupted):
			state = StateApplyError
			bo.atLeast(10 * time.Second)
		}
		s.mu.Lock()
		s.applyState, s.applyErr = state, err.Error()
		s.mu.Unlock()
		bo.wait(ctx, s.log, "apply stopped; retrying", err)
	}
	return nil
}

// onApplied publishes a committed apply position and acknowledges it.
func (s *Slave) onApplied(pos uint64, commit time.Time) {
	s.mu.Lock()
	a := s.applier
	if !commit.IsZero() {
		s.lastCommit = commit
	}
	s.mu.Unlock()
	if a != nil {
		s.epoch.Store(a.Epoch())
	}
	s.applied.Store(pos)
	s.mu.Lock()
	s.applyState, s.applyErr = "", ""
	s.mu.Unlock()
	s.wakeAcks()
}

// autoResync starts schedsync resync once, with resync.auto, and says
// whether it did.
func (s *Slave) autoResync() bool {
	if !s.cfg.Resync.Auto || s.resyncLaunched.Swap(true) {
		return false
	}
	if err := s.launchResync(s.opts.ConfigPath); err != nil {
		s.log.Error("resync.auto", "err", err)
		return false
	}
	return true
}

// launchResync starts `schedsync --config PATH resync` in its own session
// (resync.auto): it stops this service, re-seeds the slave from a backup
// fetched from the master and starts the service again.
func (s *Slave) launchResync(configPath string) error {
	if configPath == "" {
		return errors.New("resync.auto: the service does not know its config file; run schedsync resync")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(s.cfg.LogFilePath(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "--config", configPath, "resync")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start schedsync resync: %w", err)
	}
	s.log.Warn("resync.auto: started schedsync resync", "pid", cmd.Process.Pid)
	return cmd.Process.Release()
}

// retentionLoop deletes the slave spool's segments that apply is done
// with. What is applied is committed in the slave repository (with the
// position), so those changes are never needed again.
func (s *Slave) retentionLoop(ctx context.Context) error {
	every(ctx, 2*time.Second, func() {
		applied := s.applied.Load()
		if applied+1 <= s.sp.FirstPosition() {
			return
		}
		if err := s.sp.TruncateBefore(applied + 1); err != nil {
			s.log.Warn("slave spool retention", "err", err)
		}
	})
	return nil
}
