package main

import (
	"context"
	"fmt"
	"time"
)

// system is a replication system under measurement, between the world's
// master and slave.
type system interface {
	// setup installs and starts it; the caller then waits for a probe.
	setup(ctx context.Context) error
	// procs are its processes outside PostgreSQL, for CPU accounting.
	procs(ctx context.Context) ([]proc, error)
	// stopSlave stops applying; startSlave resumes.
	stopSlave(ctx context.Context) error
	startSlave(ctx context.Context) error
	// waitCaptured returns once the master holds every change committed
	// before the call in the form it ships (for schedsync: spooled, which
	// trigger capture shows by an empty audit table and logical capture by
	// its slot's confirmed position).
	waitCaptured(ctx context.Context) error
	// catchUpWatch returns a function that reports, each time it is
	// called, system-specific progress of a catch-up (may be nil).
	catchUpWatch(ctx context.Context) (func(context.Context) (catchUpState, error), error)
	close()
}

// catchUpState is a catch-up's progress as the system itself reports it:
// positions from From (applied when the slave stopped) to Target.
type catchUpState struct {
	From, Received, Applied, Target uint64
}

// newSystem makes the system of a mode: native, or schedsync with mode
// as its capture.mode.
func newSystem(mode string, w *world, o options) system {
	if mode == "native" {
		return &native{w: w}
	}
	return &schedsync{w: w, opts: o, capture: mode}
}

// poll calls f every interval until it reports done, an error, or limit.
func poll(ctx context.Context, every, limit time.Duration, what string, f func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %s", what, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}
