package service

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/fsutil"
	"github.com/schedsync/schedsync/ship"
	"github.com/schedsync/schedsync/spool"
)

// Master is the master's sync service: it captures the repository's changes
// into the spool and serves them to slaves over the sync port.
type Master struct {
	cfg     config.Config
	log     *slog.Logger
	opts    NodeOptions
	connCfg *pgx.ConnConfig
	tlsConf *tls.Config

	// gen is this master's generation; halt receives what ends Run: a
	// *FencedError once a node of a higher one is known, or a *demotion
	// after a switchover.
	gen       atomic.Uint64
	halt      chan error
	fenceOnce sync.Once
	// selfFenced: reaching neither a slave nor the witness, the master
	// fenced its repository (selfFenceLoop).
	selfFenced atomic.Bool
	// capResume restarts capture after pauseCapture (a switchover that
	// did not complete).
	capResume chan struct{}

	sp   *spool.Spool
	sink *spoolSink
	reg  *registry
	// gate is failover.synchronous (nil when off).
	gate *syncGate
	// epoch is the capture history capture spools into (0 until capture
	// first connected); kept in identity.json for a master whose
	// repository is down.
	epoch atomic.Uint64

	mu      sync.Mutex
	state   string
	lastErr string
	// ddlWarnings are the last tables a schema change made that capture
	// could not take (ddl_warnings.go).
	ddlWarnings []string
	warnings    []string // set at start: the sync port in clear text
	identity    ship.Identity
	fork        capture.Fork   // where capture's history forked from the old master's
	reader      capture.Reader // while capture is connected; verify and backup use it
	slot        slotReporter   // logical mode: the slot's figures for status
	slotName    string         // slot.Slot() as read after Connect returned
	changed     chan struct{}  // closed and replaced when state changes
	capCancel   func()         // stops the current run of captureLoop
	capDone     chan struct{}  // closed when it has stopped
	capPaused   bool
	startedAt   time.Time
	addr        string
}

// NewMaster checks the configuration of a master; Run starts it.
func NewMaster(cfg config.Config, log *slog.Logger, o NodeOptions) (*Master, error) {
	connCfg, err := MasterConnConfig(cfg.Repository.URL, "master")
	if err != nil {
		return nil, err
	}
	tlsConf, err := ship.ServerTLSConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA)
	if err != nil {
		return nil, err
	}
	return &Master{
		cfg: cfg, log: log.With("role", "master"), opts: o, connCfg: connCfg, tlsConf: tlsConf,
		state: StateStarting, changed: make(chan struct{}), halt: make(chan error, 1), capResume: make(chan struct{}, 1),
	}, nil
}

func (m *Master) spoolDir() string { return filepath.Join(m.cfg.Spool.Dir, "spool") }

func (m *Master) identityPath() string { return filepath.Join(m.cfg.Spool.Dir, "identity.json") }

// Run serves until ctx is done.
func (m *Master) Run(ctx context.Context, ready func()) error {
	m.startedAt = time.Now()
	if err := m.openSpool(); err != nil {
		return err
	}
	defer func() { m.sp.Close() }()
	reg, err := loadRegistry(filepath.Join(m.cfg.Spool.Dir, "slaves.json"))
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.reg = reg
	m.mu.Unlock()
	if m.cfg.Failover.Synchronous && m.cfg.Capture.Mode == config.CaptureLogical {
		f := m.cfg.Failover
		m.gate = newSyncGate(f.SynchronousSlaves, f.SynchronousStrict, f.SynchronousTimeout, m.reg, m.log, m.stateChanged)
	}
	m.loadIdentity()
	if err := m.loadGeneration(); err != nil {
		return err
	}
	if err := m.checkPeers(ctx); err != nil {
		var f *FencedError
		if errors.As(err, &f) {
			m.fence(f)
		}
		return err
	}
	ln, err := m.listen()
	if err != nil {
		return err
	}
	if err := m.waitRepository(ctx); err != nil {
		ln.Close()
		return err
	}
	m.log.Info("master sync service listening", "addr", m.addr, "tls", m.tlsConf != nil)
	if w := clearTextWarning(ln.Addr(), m.tlsConf != nil); w != "" {
		m.log.Warn(w)
		m.mu.Lock()
		m.warnings = append(m.warnings, w)
		m.mu.Unlock()
	}
	ready()
	for {
		err := m.serve(ctx, ln)
		var full *spoolFullError
		if !errors.As(err, &full) || ctx.Err() != nil {
			return err
		}
		// The spool takes writes again: everything starts over on the
		// spool reopened, as after a restart of the service.
		if err := reopenSpool(ctx, m.log, m.sp, m.openSpool, m.setState, full); err != nil {
			return err
		}
		if ln, err = m.listen(); err != nil {
			return err
		}
	}
}

// openSpool opens the master spool and the capture sink that writes it.
func (m *Master) openSpool() error {
	removeStaleProbes(m.spoolDir())
	sp, err := spool.Open(spoolOptions(m.cfg, m.spoolDir(), m.log))
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	m.mu.Lock()
	m.sp, m.sink = sp, &spoolSink{sp: sp, met: m.opts.Metrics}
	m.mu.Unlock()
	return nil
}

// listen opens the sync port.
func (m *Master) listen() (net.Listener, error) {
	ln, err := ship.Listen(m.cfg.Sync.Listen, m.tlsConf)
	if err != nil {
		return nil, fmt.Errorf("listen on sync.listen %s: %w", m.cfg.Sync.Listen, err)
	}
	m.addr = ln.Addr().String()
	return ln, nil
}

// serve runs capture, retention and the slaves' sessions on ln until ctx
// ends or one of them fails. A *spoolFullError means that the spool could
// not be written and now can: Run reopens it and serves again.
func (m *Master) serve(ctx context.Context, ln net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.runCapture(gctx) })
	g.Go(func() error { return m.retentionLoop(gctx) })
	g.Go(func() error { return m.ddlWarningsLoop(gctx) })
	g.Go(func() error { return m.selfFenceLoop(gctx) })
	g.Go(func() error { return m.watchPeers(gctx) })
	var sessions sync.WaitGroup
	g.Go(func() error {
		<-gctx.Done()
		return ln.Close()
	})
	g.Go(func() error { return m.acceptLoop(gctx, ln, &sessions) })
	g.Go(func() error {
		select {
		case err := <-m.halt:
			return err
		case <-gctx.Done():
			return nil
		}
	})
	err := g.Wait()
	sessions.Wait()
	if d, ok := err.(*demotion); ok {
		if serr := m.reg.save(); serr != nil {
			m.log.Warn("could not save the slave registry", "err", serr)
		}
		return m.completeDemote(d)
	}
	if serr := m.reg.save(); serr != nil && err == nil {
		err = serr
	}
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) && !errors.Is(err, ship.ErrFenced) {
		err = nil
	}
	return err
}

// slotReporter is the logical reader as status sees it.
type slotReporter interface {
	Slot() string
	SlotRetainedWAL() int64
}

// newReader makes the capture reader of the configured mode.
func (m *Master) newReader() capture.Reader {
	if m.cfg.Capture.Mode == config.CaptureLogical {
		opts := capture.LogicalOptions{
			ConnConfig: m.connCfg, PollInterval: m.cfg.Capture.PollInterval, Logger: m.log,
			SequenceSchemas: m.cfg.Repository.Schemas,
		}
		if m.gate != nil {
			opts.Gate = m.gate
		}
		return capture.NewLogicalReader(opts, m.sink)
	}
	return capture.NewTriggerReader(capture.TriggerOptions{
		ConnConfig: m.connCfg, BatchChanges: m.cfg.Capture.BatchSize,
		PollInterval: m.cfg.Capture.PollInterval, Logger: m.log,
		SequenceSchemas: m.cfg.Repository.Schemas,
	}, m.sink)
}

// runCapture runs captureLoop until ctx ends, and again after each pause
// once resumed.
func (m *Master) runCapture(ctx context.Context) error {
	for {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		m.mu.Lock()
		m.capCancel, m.capDone = cancel, done
		m.mu.Unlock()
		err := m.captureLoop(cctx)
		cancel()
		close(done)
		if err != nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.capResume:
		}
	}
}

// pauseCapture stops capture and waits until it has: nothing more is
// spooled until resumeCapture.
func (m *Master) pauseCapture() {
	m.mu.Lock()
	cancel, done := m.capCancel, m.capDone
	m.capPaused = cancel != nil
	m.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (m *Master) resumeCapture() {
	m.mu.Lock()
	paused := m.capPaused
	m.capPaused = false
	m.mu.Unlock()
	if !paused {
		return
	}
	select {
	case m.capResume <- struct{}{}:
	default:
	}
}

// captureLoop runs capture, reconnecting with capped exponential backoff
// while the repository is unavailable. Only a spool failure ends it.
func (m *Master) captureLoop(ctx context.Context) error {
	backoff := newBackoff(100*time.Millisecond, 30*time.Second)
	for ctx.Err() == nil {
		r := m.newReader()
		sr, _ := r.(slotReporter)
		if sr != nil {
			m.mu.Lock()
			m.slot, m.slotName = sr, ""
			m.mu.Unlock()
		}
		err := m.refreshIdentity(ctx)
		if err == nil {
			err = r.Connect(ctx)
		}
		if sr != nil {
			// Connect sets the slot's name: it is read here, after
			// Connect, rather than by Status while Connect writes it.
			name := sr.Slot()
			m.mu.Lock()
			m.slotName = name
			m.mu.Unlock()
		}
		if err == nil {
			m.setState(StateStreaming, "")
			backoff.reset()
			m.log.Info("capturing from the master repository", "mode", m.cfg.Capture.Mode)
			m.setEpoch(r.Epoch())
			m.mu.Lock()
			m.reader = r
			m.mu.Unlock()
			err = r.Serve(ctx)
			m.mu.Lock()
			m.reader = nil
			m.mu.Unlock()
		}
		if ctx.Err() != nil {
			return nil
		}
		if serr := m.sink.err(); serr != nil {
			if werr := m.sp.WriteErr(); werr != nil {
				// What was not spooled is still in the repository: capture
				// confirms a change there only once it is in the spool.
				return awaitSpoolSpace(ctx, m.log, m.spoolDir(), werr, m.setState,
					"capture is paused (the changes wait in the master repository, none is lost)",
					"slaves go on receiving what the spool holds, and retention frees what they have applied")
			}
			m.setState(StateFailed, serr.Error())
			return fmt.Errorf("spool failed, capture stopped: %w", serr)
		}
		m.setState(StateMasterUnavailable, err.Error())
		backoff.wait(ctx, m.log, "master repository unavailable; retrying", err)
	}
	return nil
}

// refreshIdentity reads the repository's identity and caches it in
// spool.dir, so that slaves can be checked while the database is down. It
// refuses a repository other than the one the spool was captured from:
// the spool's positions and transaction ids belong to that one, and
// capture's crash recovery matches transaction ids.
func (m *Master) refreshIdentity(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, m.connCfg)
	if err != nil {
		return fmt.Errorf("connect to master repository: %w", err)
	}
	defer conn.Close(context.Background())
	id, err := repositoryIdentity(ctx, conn)
	if err != nil {
		return err
	}
	fork, err := capture.ReadFork(ctx, conn)
	if err != nil {
		return err
	}
	g, err := syncRepositoryGeneration(ctx, conn, m.gen.Load())
	if err != nil {
		return err
	}
	if g > m.gen.Load() {
		// node.json was lost or is older than the repository's record.
		m.log.Warn("the repository records a higher generation than spool.dir; taking it", "generation", g, "was", m.gen.Load())
		m.gen.Store(g)
		if err := SaveNodeState(m.cfg.Spool.Dir, NodeState{Role: config.RoleMaster, Generation: g, Why: "start", Since: time.Now().UTC()}); err != nil {
			return err
		}
	}
	m.mu.Lock()
	old := m.identity
	if old.IsZero() || (old.SystemID == id.SystemID && old.DatabaseOID == id.DatabaseOID) {
		m.identity = id
		m.fork = fork
	}
	m.mu.Unlock()
	if !old.IsZero() && (old.SystemID != id.SystemID || old.DatabaseOID != id.DatabaseOID) {
		return fmt.Errorf("repository.url now points at %s, but %s was captured from %s: move %s away (its slaves will need schedsync resync) or point repository.url back",
			id, m.spoolDir(), old, m.cfg.Spool.Dir)
	}
	m.saveIdentity()
	return nil
}

// identityFile is spool.dir/identity.json: what the master knows of its
// repository while the repository is down.
type identityFile struct {
	ship.Identity
	CaptureEpoch uint64 `json:"capture_epoch,omitempty"`
	ForkParent   uint64 `json:"fork_parent,omitempty"`
	ForkPosition uint64 `json:"fork_position,omitempty"`
}

func (m *Master) saveIdentity() {
	m.mu.Lock()
	f := identityFile{Identity: m.identity, CaptureEpoch: m.epoch.Load(), ForkParent: m.fork.Parent, ForkPosition: m.fork.Position}
	m.mu.Unlock()
	data, err := json.Marshal(f)
	if err == nil {
		err = fsutil.WriteFileAtomic(m.identityPath(), data, 0o600)
	}
	if err != nil {
		// Only a master whose repository is down at its next start needs
		// the file; capture rewrites it on connect.
		m.log.Warn("save the repository's identity", "path", m.identityPath(), "err", err)
	}
}

// setEpoch records the capture history capture connected with.
func (m *Master) setEpoch(epoch uint64) {
	if old := m.epoch.Swap(epoch); old != epoch {
		if old != 0 {
			m.log.Warn("capture history changed: capture was installed again; slaves of the old history need schedsync resync",
				"capture_epoch", fmt.Sprintf("%016x", epoch), "was", fmt.Sprintf("%016x", old), "from_position", m.sink.LastPosition()+1)
			// Sessions admitted under the old history reconnect and are
			// checked against the new one.
			m.reg.disconnectAll()
		}
		m.saveIdentity()
	}
}

func (m *Master) loadIdentity() {
	data, err := os.ReadFile(m.identityPath())
	if err != nil {
		return
	}
	var f identityFile
	if json.Unmarshal(data, &f) == nil {
		m.identity = f.Identity
		m.epoch.Store(f.CaptureEpoch)
		m.fork = capture.Fork{Parent: f.ForkParent, Position: f.ForkPosition}
	}
}

func (m *Master) setState(state, errText string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastErr = errText
	if m.state == state {
		return
	}
	m.state = state
	close(m.changed)
	m.changed = make(chan struct{})
}

// waitRepository checks that the repository answers before the master
// reports ready. With --wait (NodeOptions.Wait) it retries until then and
// fails after it; without, one failed try leaves the master up, retrying
// in capture, and in state master_unavailable with the reason, which
// start shows.
func (m *Master) waitRepository(ctx context.Context) error {
	deadline := time.Now().Add(m.opts.Wait)
	bo := newBackoff(200*time.Millisecond, 5*time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.ConnectConfig(cctx, m.connCfg)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		err = fmt.Errorf("cannot connect to the master repository (repository.url): %w", err)
		if m.opts.Wait <= 0 {
			m.setState(StateMasterUnavailable, err.Error())
			m.log.Error("the master repository is unreachable; the service starts anyway and retries", "err", err)
			return nil
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return fmt.Errorf("%w (waited --wait %s)", err, m.opts.Wait)
		}
		m.setState(StateMasterUnavailable, err.Error())
		bo.wait(ctx, m.log, "master repository unavailable; waiting for it (--wait)", err)
	}
}

// stateChanged tells the slaves' sessions to send the master's state again
// (the synchronous state changed).
func (m *Master) stateChanged() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.changed)
	m.changed = make(chan struct{})
}

// syncState is the synchronous state status and the slaves are told.
func (m *Master) syncState() (string, time.Time) {
	if m.gate == nil {
		return "", time.Time{}
	}
	return m.gate.state()
}

// wireState is the state slaves are told: whether the master repository is
// reachable.
func (m *Master) wireState() (string, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == StateMasterUnavailable {
		return ship.StateMasterUnavailable, m.changed
	}
	return ship.StateStreaming, m.changed
}

// retentionLoop enforces spool.max_backlog on slaves that stay away and
// deletes the segments no slave that still counts needs.
func (m *Master) retentionLoop(ctx context.Context) error {
	every(ctx, 2*time.Second, func() {
		if err := m.retain(); err != nil {
			m.log.Warn("spool retention", "err", err)
		}
	})
	return nil
}

// retain runs a retention pass (see registry.retain) and deletes the
// segments before its cut.
func (m *Master) retain() error {
	cut, marked, err := m.reg.retain(m.sp, int64(m.cfg.Spool.MaxBacklog), time.Now())
	for _, s := range marked {
		m.logNeedsResync(s.Name, s.BacklogAtMark)
	}
	if cut+1 > m.sp.FirstPosition() {
		if terr := m.sp.TruncateBefore(cut + 1); terr != nil {
			return terr
		}
	}
	return err
}

// logNeedsResync reports a slave that the registry marked needs_resync for
// its backlog.
func (m *Master) logNeedsResync(slave string, backlog int64) {
	m.log.Warn("slave needs a re-sync; no longer keeping spool for it", "slave", slave, "backlog_bytes", backlog)
}

// Status reports the master's state and its slaves.
func (m *Master) Status() Status {
	m.mu.Lock()
	st := Status{
		Role: "master", Name: m.cfg.Node.Name, Running: true, State: m.state, Error: m.lastErr,
		PID: os.Getpid(), StartedAt: m.startedAt, UpdatedAt: time.Now(),
	}
	if m.selfFenced.Load() {
		st.State, st.Error = StateFenced, "self-fenced: this master reaches neither a slave nor failover.witness; the scheduler was stopped and the repository is read only until it does"
	}
	st.CaptureMode = string(m.cfg.Capture.Mode)
	st.Warnings = append(append([]string(nil), m.warnings...), m.ddlWarnings...)
	st.Synchronous, st.SynchronousSince = m.syncState()
	st.Generation = m.gen.Load()
	st.CaptureEpoch = epochText(m.epoch.Load())
	if m.slot != nil {
		st.Slot = m.slotName
		if b := m.slot.SlotRetainedWAL(); b >= 0 {
			st.SlotRetainedWALBytes = &b
		}
	}
	sp, reg := m.sp, m.reg
	m.mu.Unlock()
	if sp == nil || reg == nil {
		return st
	}
	st.Position = sp.DurablePosition()
	st.SpoolBytes, st.SpoolSegments = sp.Size()
	recs, connected := reg.list()
	for _, r := range recs {
		addr, ok := connected[r.Name]
		ss := SlaveStatus{
			Name: r.Name, Connected: ok, AppliedPosition: r.Applied, ReceivedPosition: r.Received,
			NeedsResync: r.NeedsResync, LastSeen: r.LastSeen, Address: addr,
		}
		if !r.NeedsResync {
			ss.BacklogBytes = sp.BytesAfter(r.Applied)
			st.BacklogBytes = max(st.BacklogBytes, ss.BacklogBytes)
			if r.Applied < st.Position && !r.caughtUp.IsZero() {
				st.LagSeconds = max(st.LagSeconds, time.Since(r.caughtUp).Seconds())
			}
		}
		st.Slaves = append(st.Slaves, ss)
	}
	return st
}
