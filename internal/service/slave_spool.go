package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/schedsync/schedsync/spool"
)

func (s *Slave) spoolDir() string { return filepath.Join(s.cfg.Spool.Dir, "spool") }

// openSpool opens the slave spool. A corrupt one stops the service with
// the way out.
func (s *Slave) openSpool() error {
	removeStaleProbes(s.spoolDir())
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

// waitForSpoolSpace pauses receiving after the spool could not be written
// (a full disk, a quota, an I/O error). Apply goes on meanwhile, and its
// retention deletes the segments it is done with, while this waits until
// a probe write in the spool directory succeeds. Then it returns a
// *spoolFullError, for Run to reopen the spool.
func (s *Slave) waitForSpoolSpace(ctx context.Context, werr error) error {
	return awaitSpoolSpace(ctx, s.log, s.spoolDir(), werr, s.setState,
		"receiving is paused", "apply goes on and frees the segments it has applied")
}
