package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/spool"
)

// A spool that could not be written (a full disk, a quota, an I/O error)
// refuses every later write until it is reopened: the failed write may
// have left part of a record. Master and slave both pause what writes it,
// wait here until the directory takes writes again, and reopen it; its
// recovery cuts the torn tail, and what was not in the spool is still at
// its source (the master repository, or the master's spool).

// spoolProbeBytes is how much a probe must be able to write in the spool
// directory before writing resumes after a full disk: a few records, so
// that the first writes after it do not fail straight away.
const spoolProbeBytes = 8 << 20

// probePattern names probeWrite's files; the spool ignores other files.
const probePattern = ".space-probe-*"

// spoolFullError ends a node's loops after its spool could not be
// written, once there is space again: Run reopens the spool, whose
// recovery cuts whatever the failed write left, and starts them again.
type spoolFullError struct{ err error }

func (e *spoolFullError) Error() string { return "the spool could not be written: " + e.err.Error() }
func (e *spoolFullError) Unwrap() error { return e.err }

// diskFull reports whether err is a full disk or an exhausted quota.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// awaitSpoolSpace reports a spool in dir that could not be written, with
// what is paused and what goes on meanwhile, and waits until a probe write
// in dir succeeds. Then it returns a *spoolFullError for Run to reopen
// the spool; nil if ctx ends first.
func awaitSpoolSpace(ctx context.Context, log *slog.Logger, dir string, werr error, setState func(state, msg string), paused, meanwhile string) error {
	state := StateSpoolError
	if diskFull(werr) {
		state = StateDiskFull
	}
	setState(state, fmt.Sprintf("cannot write the spool in %s: %v; %s and resumes by itself once %s can be written (%s)",
		dir, werr, paused, dir, meanwhile))
	log.Error("spool not writable; "+paused, "dir", dir, "err", werr)
	bo := newBackoff(500*time.Millisecond, 10*time.Second)
	for {
		err := probeWrite(dir, spoolProbeBytes)
		if err == nil {
			log.Info("the spool directory can be written again; reopening the spool", "dir", dir)
			return &spoolFullError{err: werr}
		}
		bo.wait(ctx, log, "spool still not writable", err)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// reopenSpool closes failed, the spool that could not be written, and runs
// open, which opens it again, retrying while that fails for lack of space.
// A corrupt spool is not retried.
func reopenSpool(ctx context.Context, log *slog.Logger, failed *spool.Spool, open func() error, setState func(state, msg string), full *spoolFullError) error {
	_ = failed.Close() // it reports the write error again; nothing else to do
	bo := newBackoff(500*time.Millisecond, 10*time.Second)
	for {
		err := open()
		if err == nil {
			return nil
		}
		if errors.Is(err, spool.ErrCorrupt) || !diskFull(err) || ctx.Err() != nil {
			return err
		}
		setState(StateDiskFull, fmt.Sprintf("%v (after %v); retrying", err, full.err))
		bo.wait(ctx, log, "reopen the spool", err)
	}
}

// removeStaleProbes removes the probes a kill interrupted (see probeWrite).
func removeStaleProbes(dir string) {
	stale, _ := filepath.Glob(filepath.Join(dir, probePattern))
	for _, p := range stale {
		_ = os.Remove(p)
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
