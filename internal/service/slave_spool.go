package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/spool"
)

// spoolProbeBytes is how much a probe must be able to write in the spool
// directory before receiving resumes after a full disk: a few records, so
// that the first writes after it do not fail straight away.
const spoolProbeBytes = 8 << 20

// probePattern names probeWrite's files; the spool ignores other files.
const probePattern = ".space-probe-*"

// spoolFullError ends the slave's loops after the spool could not be
// written, once there is space again: Run reopens the spool, whose
// recovery cuts whatever the failed write left, and starts them again.
type spoolFullError struct{ err error }

func (e *spoolFullError) Error() string { return "the spool could not be written: " + e.err.Error() }
func (e *spoolFullError) Unwrap() error { return e.err }

func (s *Slave) spoolDir() string { return filepath.Join(s.cfg.Spool.Dir, "spool") }

// openSpool opens the slave spool. A corrupt one stops the service with
// the way out.
func (s *Slave) openSpool() error {
	// A probe a kill interrupted (see probeWrite).
	stale, _ := filepath.Glob(filepath.Join(s.spoolDir(), probePattern))
	for _, p := range stale {
		_ = os.Remove(p)
	}
	sp, err := spool.Open(spoolOptions(s.cfg, s.spoolDir(), s.log))
	if err != nil {
		return fmt.Errorf("open spool: %w", corruptSpoolHint(err))
	}
	s.sp = sp
	s.mu.Lock()
	s.spView = sp
	s.mu.Unlock()
	return nil
}

// corruptSpoolHint adds to a corrupt-spool error what to do: the master
// still has every change this slave has not applied.
func corruptSpoolHint(err error) error {
	if !errors.Is(err, spool.ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w; the slave stops here and applies nothing past it: run schedsync refetch (it sets the spool aside), then schedsync start, to fetch the changes after the applied position from the master again", err)
}

// diskFull reports whether err is a full disk or an exhausted quota.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// waitForSpoolSpace pauses receiving after the spool could not be written
// (a full disk, a quota, an I/O error). Apply goes on meanwhile, and its
// retention deletes the segments it is done with, while this waits until
// a probe write in the spool directory succeeds. Then it returns a
// *spoolFullError, for Run to reopen the spool.
func (s *Slave) waitForSpoolSpace(ctx context.Context, werr error) error {
	state := StateSpoolError
	if diskFull(werr) {
		state = StateDiskFull
	}
	msg := fmt.Sprintf("cannot write the spool in %s: %v; receiving is paused and resumes by itself once %s can be written (apply goes on and frees the segments it has applied)",
		s.spoolDir(), werr, s.spoolDir())
	s.setState(state, msg)
	s.log.Error("slave spool not writable; receiving paused", "dir", s.spoolDir(), "err", werr)
	bo := newBackoff(500*time.Millisecond, 10*time.Second)
	for {
		err := probeWrite(s.spoolDir(), spoolProbeBytes)
		if err == nil {
			s.log.Info("the spool directory can be written again; reopening the spool", "dir", s.spoolDir())
			return &spoolFullError{err: werr}
		}
		bo.wait(ctx, s.log, "slave spool still not writable", err)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// reopenSpool closes the spool that failed and opens it again, retrying
// while that fails for lack of space.
func (s *Slave) reopenSpool(ctx context.Context, full *spoolFullError) error {
	_ = s.sp.Close() // it reports the write error again; nothing else to do
	bo := newBackoff(500*time.Millisecond, 10*time.Second)
	for {
		err := s.openSpool()
		if err == nil {
			return nil
		}
		if errors.Is(err, spool.ErrCorrupt) || !diskFull(err) || ctx.Err() != nil {
			return err
		}
		s.setState(StateDiskFull, fmt.Sprintf("%v (after %v); retrying", err, full.err))
		bo.wait(ctx, s.log, "reopen the slave spool", err)
	}
}

// probeWrite writes n bytes to a file in dir, syncs it and removes it.
func probeWrite(dir string, n int) error {
	f, err := os.CreateTemp(dir, probePattern)
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(buf))
		if _, err := f.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return f.Sync()
}
