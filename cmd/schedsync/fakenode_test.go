package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
	"github.com/schedsync/schedsync/ship"
)

// fakeNodeEnv makes the test binary act as schedsync with a fake node: the
// lifecycle tests run the test binary itself as the CLI, and a detached
// start re-executes os.Executable(), that is the test binary again, with
// the same environment. The real master and slave are tested elsewhere;
// here the processes, pid lock, socket, signals and files are real.
const fakeNodeEnv = "SCHEDSYNCTEST_FAKE_NODE" // not SCHEDSYNC_: those must name config keys

// Fake node modes.
const (
	fakeOK     = "ok"     // ready after 100ms, streaming at position 42, stops when asked
	fakeFail   = "fail"   // fails before ready with an error naming its --wait
	fakeResync = "resync" // refused for its backlog before ready (exit 3)
	fakeCrash  = "crash"  // panics before ready, saying nothing on the pipe
	fakeSlow   = "slow"   // never gets ready; stops when asked
	fakeHang   = "hang"   // like ok, but ignores the stop (for the forced exit)
)

const fakePosition = 42

func init() {
	mode := os.Getenv(fakeNodeEnv)
	if mode == "" {
		return
	}
	a := newApp(os.Stdout, os.Stderr)
	a.readyGrace = 0 // the tests give --wait as the whole budget (the default --wait is 0)
	a.newNode = func(cfg config.Config, _ *slog.Logger, o service.NodeOptions) (service.Node, error) {
		return &fakeNode{mode: mode, cfg: cfg, wait: o.Wait}, nil
	}
	os.Exit(a.run(os.Args[1:]))
}

type fakeNode struct {
	mode string
	cfg  config.Config
	wait time.Duration // start --wait

	mu sync.Mutex
	st service.Status
}

func (n *fakeNode) Status() service.Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.st
	st.Role, st.Name = string(n.cfg.Node.Role), n.cfg.Node.Name
	if n.cfg.Node.Role == config.RoleMaster {
		st.Slaves = []service.SlaveStatus{{Name: "replica9", Connected: st.State == service.StateStreaming,
			AppliedPosition: fakePosition - 2, BacklogBytes: 2048, LastSeen: time.Now().UTC()}}
	} else {
		st.Master = n.cfg.Master.Addr()
	}
	return st
}

func (n *fakeNode) set(state string, pos uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.st.State, n.st.Position, n.st.ReceivedPosition = state, pos, pos
	n.st.BacklogBytes = 1536
}

func (n *fakeNode) Run(ctx context.Context, ready func()) error {
	n.set(service.StateConnecting, 0)
	switch n.mode {
	case fakeFail:
		return fmt.Errorf("fake node: cannot connect to repository database (wait=%s)", n.wait)
	case fakeResync:
		return fmt.Errorf("slave %s has 5000 bytes of changes to be processed since last disconnection: %w",
			n.cfg.Node.Name, ship.ErrNeedsResync)
	case fakeCrash:
		panic("fake node crashed")
	case fakeSlow:
		<-ctx.Done()
		return nil
	}
	select {
	case <-time.After(100 * time.Millisecond):
	case <-ctx.Done():
		return nil
	}
	n.set(service.StateStreaming, fakePosition)
	ready()
	<-ctx.Done()
	if n.mode == fakeHang {
		select {}
	}
	return nil
}
