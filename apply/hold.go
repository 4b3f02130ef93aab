package apply

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Hold makes apply stop exactly at position pos and waits until it has
// applied everything up to it, so that the slave repository shows the state
// of that position (verify compares it with the master's). release lets
// apply go on; call it in every case.
func (a *Applier) Hold(ctx context.Context, pos uint64) (release func(), err error) {
	a.holdMu.Lock()
	if a.holdCh != nil {
		a.holdMu.Unlock()
		return nil, errors.New("apply is already held by another verify; try again when it is done")
	}
	a.holdAt, a.holdCh = pos, make(chan struct{})
	a.holdMu.Unlock()
	release = func() {
		a.holdMu.Lock()
		defer a.holdMu.Unlock()
		if a.holdCh != nil {
			close(a.holdCh)
			a.holdAt, a.holdCh = 0, nil
		}
	}
	if err := a.WaitApplied(ctx, pos); err != nil {
		release()
		return nil, err
	}
	if applied := a.applied.Load(); applied > pos {
		release()
		return nil, fmt.Errorf("slave applied position %d is past %d", applied, pos)
	}
	return release, nil
}

// WaitApplied waits until apply has committed position pos.
func (a *Applier) WaitApplied(ctx context.Context, pos uint64) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for a.applied.Load() < pos {
		select {
		case <-ctx.Done():
			return fmt.Errorf("slave did not reach position %d (applied %d): %w", pos, a.applied.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// waitHold blocks before applying the transaction at pos while a hold
// stops apply before it.
func (a *Applier) waitHold(ctx context.Context, pos uint64) error {
	for {
		a.holdMu.Lock()
		at, ch := a.holdAt, a.holdCh
		a.holdMu.Unlock()
		if ch == nil || pos <= at {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// heldAt reports whether a group must end at pos because of a hold.
func (a *Applier) heldAt(pos uint64) bool {
	a.holdMu.Lock()
	defer a.holdMu.Unlock()
	return a.holdCh != nil && pos >= a.holdAt
}
