package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/metrics"
	"github.com/schedsync/schedsync/internal/web"
	"github.com/schedsync/schedsync/ship"
)

var (
	// ErrStopTimeout: the node did not return from Run within StopTimeout
	// after it was asked to stop.
	ErrStopTimeout = errors.New("the sync service did not stop in time")
	// ErrForced: the stop was cut short (a second SIGTERM or SIGINT).
	ErrForced = errors.New("the sync service was forced to exit before it had stopped")
)

// Defaults of Options.
const (
	DefaultStopTimeout  = 30 * time.Second
	DefaultPersistEvery = 5 * time.Second
)

// Options are how cmd/ runs a service process.
type Options struct {
	Log *slog.Logger // the service's logger; nil discards
	// Ready is called once when the node is serving, after the status file
	// says so; a detached `start` returns then.
	Ready func()
	// Wait is passed to the node as NodeOptions.Wait.
	Wait time.Duration
	// ConfigPath is passed to the node as NodeOptions.ConfigPath.
	ConfigPath string
	// NewNode builds the node; nil means NewNode, the master or slave of
	// cfg.Node.Role. Tests run a fake node through it.
	NewNode func(cfg config.Config, log *slog.Logger, o NodeOptions) (Node, error)
	// StopTimeout bounds a graceful stop once ctx is cancelled; after it,
	// RunService returns ErrStopTimeout without waiting for the node.
	StopTimeout time.Duration
	// Force, when closed after ctx is cancelled, makes RunService return
	// ErrForced at once: the operator's second signal.
	Force <-chan struct{}
	// PersistEvery is how often the status file is rewritten while running.
	PersistEvery time.Duration
	// Version is the binary's version, shown in schedsync_info.
	Version string
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Ready == nil {
		o.Ready = func() {}
	}
	if o.NewNode == nil {
		o.NewNode = NewNode
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.PersistEvery <= 0 {
		o.PersistEvery = DefaultPersistEvery
	}
	return o
}

// RunService runs this node's sync service in the calling process until
// ctx is cancelled or the node fails: it takes the pid lock in spool.dir
// (*AlreadyRunningError if another service holds it), builds the node with
// o.NewNode, serves the control socket, keeps spool.dir/status.json current,
// and on the way out records the final status (state stopped, or
// needs_resync or failed with the error) before it drops the lock, so
// that whoever waits for the lock (`stop`) then reads the final status.
//
// It returns nil after a clean stop, or the error that ended the service:
// one wrapping ship.ErrNeedsResync must exit 3.
func RunService(ctx context.Context, cfg config.Config, o Options) error {
	o = o.withDefaults()
	dir := cfg.Spool.Dir
	if _, err := SocketPath(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create spool.dir: %w", err)
	}
	pidFile, err := AcquirePidFile(dir)
	if err != nil {
		return err
	}
	defer func() {
		if err := pidFile.Release(); err != nil {
			o.Log.Warn("release pid file", "err", err)
		}
	}()

	// One set of counters for the process, across role changes; every
	// warning and error logged counts in it.
	met := metrics.New()
	o.Log = slog.New(met.LogHandler(o.Log.Handler(), cfg.Sync.Token, cfg.HTTP.Token))
	s := &supervisor{
		dir:        dir,
		o:          o,
		pid:        os.Getpid(),
		started:    time.Now().UTC(),
		configRole: cfg.Node.Role,
		last:       Status{Role: string(cfg.Node.Role), Name: cfg.Node.Name, State: StateStarting},
		met:        met,
	}
	stopHTTP, err := s.serveHTTP(ctx, cfg)
	if err != nil {
		s.persist(s.final(err))
		return err
	}
	defer stopHTTP()
	for {
		eff, ns, err := Effective(cfg)
		if err != nil {
			s.persist(s.final(err))
			return err
		}
		o.Log.Info("sync service starting", "role", eff.Node.Role, "generation", ns.Generation, "name", eff.Node.Name,
			"pid", s.pid, "spool_dir", dir)
		node, err := o.NewNode(eff, o.Log, NodeOptions{Wait: o.Wait, ConfigPath: o.ConfigPath, Metrics: met})
		if err != nil {
			err = fmt.Errorf("set up the %s: %w", eff.Node.Role, err)
			s.persist(s.final(err))
			return err
		}
		s.mu.Lock()
		s.node = node
		s.mu.Unlock()
		err = s.serve(ctx)
		if !errors.Is(err, ErrRoleChanged) || ctx.Err() != nil {
			return err
		}
		// The node took another role (promote, switchover): the node of
		// that role takes over in this process, under the same pid lock.
	}
}

// supervisor runs one node and keeps its status visible.
type supervisor struct {
	dir     string
	node    Node
	o       Options
	pid     int
	started time.Time
	// configRole is node.role in the config file.
	configRole config.Role
	readyOnce  sync.Once

	mu   sync.Mutex
	last Status // last status persisted; role and name fill a node's gaps

	met *metrics.Metrics
}

func (s *supervisor) serve(ctx context.Context) error {
	ctl, err := ListenControl(s.dir, s.handle, s.o.Log)
	if err != nil {
		s.persist(s.final(err))
		return err
	}
	s.persist(s.status())

	readyCh := make(chan struct{})
	var readyOnce sync.Once
	ready := func() { readyOnce.Do(func() { close(readyCh) }) }
	done := make(chan error, 1)
	nodeCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { done <- s.node.Run(nodeCtx, ready) }()

	err = s.wait(ctx, readyCh, done)
	if errors.Is(err, ErrStopTimeout) || errors.Is(err, ErrForced) {
		// The node is stuck: neither its Status nor a command still
		// running on the socket may return, so use what was last saved.
		_ = ctl.abandon()
		s.persist(s.finalFrom(s.lastStatus(), err))
		return err
	}
	if cerr := ctl.Close(); cerr != nil {
		s.o.Log.Warn("close control socket", "err", cerr)
	}
	s.persist(s.final(err))
	if errors.Is(err, ErrRoleChanged) {
		s.o.Log.Info("the node changed role; starting as its new role")
	} else if err != nil {
		s.o.Log.Error("sync service failed", "err", err)
	} else {
		s.o.Log.Info("sync service stopped")
	}
	return err
}

// wait runs until the node returns, or until a stop that was asked for
// takes longer than StopTimeout or is forced.
func (s *supervisor) wait(ctx context.Context, readyCh <-chan struct{}, done <-chan error) error {
	tick := time.NewTicker(s.o.PersistEvery)
	defer tick.Stop()
	stopping := ctx.Done()
	var stopTimeout <-chan time.Time
	for {
		select {
		case err := <-done:
			return err
		case <-readyCh:
			readyCh = nil
			s.persist(s.status())
			s.o.Log.Info("sync service ready")
			s.readyOnce.Do(s.o.Ready)
		case <-tick.C:
			s.persist(s.status())
		case <-stopping:
			stopping = nil
			s.o.Log.Info("sync service stopping", "timeout", s.o.StopTimeout)
			t := time.NewTimer(s.o.StopTimeout)
			defer t.Stop()
			stopTimeout = t.C
		case <-stopTimeout:
			return fmt.Errorf("%w: still running %s after it was asked to stop", ErrStopTimeout, s.o.StopTimeout)
		case <-s.o.Force:
			return ErrForced
		}
	}
}

// handle answers the control socket.
func (s *supervisor) handle(ctx context.Context, name string, args []string) (any, error) {
	if name == "status" {
		return s.status(), nil
	}
	if c, ok := s.node.(Commander); ok {
		return c.Command(ctx, name, args)
	}
	return nil, fmt.Errorf("unknown command %q; this service answers: status", name)
}

// current is the status while a node runs, and the last one saved
// before and between nodes (the HTTP endpoint asks at any time).
func (s *supervisor) current() Status {
	s.mu.Lock()
	n := s.node
	s.mu.Unlock()
	if n == nil {
		st := s.lastStatus()
		st.Running, st.PID = true, s.pid
		return st
	}
	return s.statusOf(n)
}

// serveHTTP starts the http.listen endpoint, if configured, and the lag
// history it charts; the returned func stops both.
func (s *supervisor) serveHTTP(ctx context.Context, cfg config.Config) (func(), error) {
	if cfg.HTTP.Listen == "" {
		return func() {}, nil
	}
	var tlsConf *tls.Config
	if cfg.TLS.Cert != "" {
		var err error
		if tlsConf, err = ship.ServerTLSConfig(cfg.TLS.Cert, cfg.TLS.Key, ""); err != nil {
			return nil, fmt.Errorf("http.listen: %w", err)
		}
	}
	s.met.Registry().MustRegister(&statusCollector{status: s.current, version: s.o.Version})
	hist := web.NewHistory(time.Hour, historyEvery)
	srv, err := web.Start(web.Options{
		Listen: cfg.HTTP.Listen, Token: cfg.HTTP.Token, TLS: tlsConf,
		Status:   func() any { return s.current() },
		Registry: s.met.Registry(), Events: s.met.Events(), History: hist, Log: s.o.Log,
	})
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		hist.Run(hctx, func() float64 { return s.current().LagSeconds })
	}()
	s.o.Log.Info("serving metrics and the status page", "http_listen", srv.Addr().String(), "tls", tlsConf != nil)
	return func() {
		cancel()
		<-done
		if err := srv.Close(); err != nil {
			s.o.Log.Warn("close the HTTP endpoint", "err", err)
		}
	}, nil
}

// historyEvery is how often the lag history samples: an hour is 1,800
// samples.
const historyEvery = 2 * time.Second

// status is the node's status with what the service itself knows.
func (s *supervisor) status() Status { return s.statusOf(s.node) }

func (s *supervisor) statusOf(n Node) Status {
	st := s.fill(n.Status())
	if st.State == "" {
		st.State = StateStarting
	}
	st.Running = true
	st.PID = s.pid
	return st
}

// final is the status recorded when the service ends with err.
func (s *supervisor) final(err error) Status {
	st := s.lastStatus()
	if s.node != nil {
		st = s.fill(s.node.Status())
	}
	if errors.Is(err, ErrRoleChanged) {
		return st
	}
	return s.finalFrom(st, err)
}

func (s *supervisor) finalFrom(st Status, err error) Status {
	st.Running = false
	st.PID = 0
	st.UpdatedAt = time.Now().UTC()
	st.Error = ""
	switch {
	case err == nil:
		st.State = StateStopped
	case errors.Is(err, ship.ErrNeedsResync):
		st.State, st.Error = StateNeedsResync, err.Error()
	case errors.Is(err, ship.ErrFenced) && st.Role == string(config.RoleMaster):
		st.State, st.Error = StateFenced, err.Error()
	default:
		st.State, st.Error = StateFailed, err.Error()
	}
	for i := range st.Slaves {
		st.Slaves[i].Connected = false
	}
	return st
}

// fill completes what the node left out.
func (s *supervisor) fill(st Status) Status {
	last := s.lastStatus()
	if st.Role == "" {
		st.Role = last.Role
	}
	if st.Name == "" {
		st.Name = last.Name
	}
	if st.Role != string(s.configRole) {
		st.ConfigRole = string(s.configRole)
	}
	if st.StartedAt.IsZero() {
		st.StartedAt = s.started
	}
	st.UpdatedAt = time.Now().UTC()
	return st
}

func (s *supervisor) lastStatus() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.last
	st.Slaves = append([]SlaveStatus(nil), st.Slaves...)
	return st
}

// persist saves st; a failure is logged, not fatal: the status file is
// for people, and the service must not stop because a disk is full.
func (s *supervisor) persist(st Status) {
	s.mu.Lock()
	s.last = st
	s.mu.Unlock()
	if err := SaveStatus(s.dir, st); err != nil {
		s.o.Log.Warn("could not save the status file", "err", err)
	}
}
