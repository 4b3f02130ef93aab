package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/ship"
)

// lifecycleNode is a Node whose Run is given by the test.
type lifecycleNode struct {
	run  func(ctx context.Context, ready func(), n *lifecycleNode) error
	opts NodeOptions // what it was built with
	mu   sync.Mutex
	st   Status
}

func (n *lifecycleNode) Run(ctx context.Context, ready func()) error { return n.run(ctx, ready, n) }

func (n *lifecycleNode) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st
}

func (n *lifecycleNode) set(state string, pos uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.st.State, n.st.Position = state, pos
}

func (n *lifecycleNode) Command(_ context.Context, name string, args []string) (any, error) {
	if name == "verify" {
		return map[string]any{"equal": true, "args": args}, nil
	}
	return nil, fmt.Errorf("unknown command %q", name)
}

// buildNode is an Options.NewNode that builds n, or fails with err.
func buildNode(n *lifecycleNode, err error) func(config.Config, *slog.Logger, NodeOptions) (Node, error) {
	return func(_ config.Config, _ *slog.Logger, o NodeOptions) (Node, error) {
		if err != nil {
			return nil, err
		}
		n.opts = o
		return n, nil
	}
}

func testConfig(t *testing.T) config.Config {
	c := config.DefaultConfig()
	c.Node.Role, c.Node.Name = config.RoleSlave, "node02"
	c.Spool.Dir = t.TempDir()
	return c
}

// serveInBackground runs RunService and returns its result channel.
func serveInBackground(ctx context.Context, cfg config.Config, o Options) <-chan error {
	done := make(chan error, 1)
	go func() { done <- RunService(ctx, cfg, o) }()
	return done
}

func TestRunServiceCleanStop(t *testing.T) {
	cfg := testConfig(t)
	var gotWait time.Duration
	n := &lifecycleNode{run: func(ctx context.Context, ready func(), n *lifecycleNode) error {
		gotWait = n.opts.Wait
		n.set(StateStreaming, 17)
		ready()
		<-ctx.Done()
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyCh := make(chan struct{})
	done := serveInBackground(ctx, cfg, Options{Wait: 3 * time.Second, Ready: func() { close(readyCh) }, NewNode: buildNode(n, nil)})
	<-readyCh

	if pid, running, _ := Running(cfg.Spool.Dir); !running || pid == 0 {
		t.Errorf("pid lock not held while running")
	}
	st, err := QueryStatus(ctx, cfg.Spool.Dir)
	if err != nil || !st.Running || st.State != StateStreaming || st.Position != 17 || st.Role != "slave" ||
		st.Name != "node02" || st.PID == 0 || st.StartedAt.IsZero() {
		t.Errorf("status while running = %+v, %v", st, err)
	}
	if saved, err := LoadStatus(cfg.Spool.Dir); err != nil || saved.Position != 17 || !saved.Running {
		t.Errorf("status file once ready = %+v, %v", saved, err)
	}
	if raw, err := Request(ctx, cfg.Spool.Dir, "verify", "x"); err != nil || string(raw) != `{"args":["x"],"equal":true}` {
		t.Errorf("verify through the node's Commander = %s, %v", raw, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunService after cancel = %v", err)
	}
	if gotWait != 3*time.Second {
		t.Errorf("node saw Wait %v", gotWait)
	}
	saved, err := LoadStatus(cfg.Spool.Dir)
	if err != nil || saved.Running || saved.State != StateStopped || saved.Position != 17 || saved.PID != 0 {
		t.Errorf("final status = %+v, %v", saved, err)
	}
	if _, running, _ := Running(cfg.Spool.Dir); running {
		t.Error("pid lock held after RunService returned")
	}
}

func TestRunServiceFailures(t *testing.T) {
	resync := fmt.Errorf("refused by the master: %w", ship.ErrNeedsResync)
	tests := []struct {
		name     string
		newErr   error
		runErr   error
		state    string
		wantErrs error
	}{
		{"needs resync", nil, resync, StateNeedsResync, ship.ErrNeedsResync},
		{"fails", nil, errors.New("connection refused"), StateFailed, nil},
		{"cannot be built", errors.New("open spool: disk full"), nil, StateFailed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			n := &lifecycleNode{run: func(context.Context, func(), *lifecycleNode) error { return tt.runErr }}
			err := RunService(context.Background(), cfg, Options{NewNode: buildNode(n, tt.newErr)})
			if err == nil || (tt.wantErrs != nil && !errors.Is(err, tt.wantErrs)) {
				t.Fatalf("RunService = %v", err)
			}
			saved, lerr := LoadStatus(cfg.Spool.Dir)
			if lerr != nil || saved.Running || saved.State != tt.state || saved.Error != err.Error() ||
				saved.Role != "slave" || saved.Name != "node02" {
				t.Errorf("final status = %+v, %v; want state %s and error %q", saved, lerr, tt.state, err)
			}
		})
	}
}

// A node that does not return once asked to stop is given up on: after
// StopTimeout, or at once when forced.
func TestRunServiceBoundedStop(t *testing.T) {
	for _, forced := range []bool{false, true} {
		t.Run(fmt.Sprintf("forced=%v", forced), func(t *testing.T) {
			cfg := testConfig(t)
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			n := &lifecycleNode{run: func(ctx context.Context, ready func(), n *lifecycleNode) error {
				n.set(StateStreaming, 5)
				ready()
				<-release // ignores ctx
				return nil
			}}
			ctx, cancel := context.WithCancel(context.Background())
			readyCh := make(chan struct{})
			force := make(chan struct{})
			o := Options{Ready: func() { close(readyCh) }, Force: force, StopTimeout: time.Hour, NewNode: buildNode(n, nil)}
			want := ErrForced
			if !forced {
				o.StopTimeout, want = 50*time.Millisecond, ErrStopTimeout
			}
			done := serveInBackground(ctx, cfg, o)
			<-readyCh
			cancel()
			if forced {
				close(force)
			}
			if err := <-done; !errors.Is(err, want) {
				t.Fatalf("RunService = %v, want %v", err, want)
			}
			saved, _ := LoadStatus(cfg.Spool.Dir)
			if saved.Running || saved.State != StateFailed || saved.Position != 5 {
				t.Errorf("final status = %+v", saved)
			}
		})
	}
}

func TestRunServiceOnePerSpoolDir(t *testing.T) {
	cfg := testConfig(t)
	p, err := AcquirePidFile(cfg.Spool.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	var already *AlreadyRunningError
	if err := RunService(context.Background(), cfg, Options{NewNode: buildNode(&lifecycleNode{}, nil)}); !errors.As(err, &already) {
		t.Errorf("RunService beside a running service = %v, want *AlreadyRunningError", err)
	}
}
