package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/ship"
	"github.com/schedsync/schedsync/spool"
)

// maxJoinedRecord bounds a spool record reassembled from Records frames:
// records hold at most a few MiB of compressed changes, plus one large value.
const maxJoinedRecord = 1 << 30

// Slave is the slave's sync service: it connects to the master, receives
// spool records into its own spool and acknowledges them once durable.
type Slave struct {
	cfg     config.Config
	log     *slog.Logger
	connCfg *pgx.ConnConfig
	tlsConf *tls.Config
	addr    string
	opts    NodeOptions

	sp       *spool.Spool
	identity ship.Identity
	applied  atomic.Uint64
	// epoch is the capture history of the slave's data, as read at start
	// and as apply commits it.
	epoch atomic.Uint64
	// generation is the highest generation the node has seen (node.json,
	// schedsync.state, its masters' welcomes).
	generation atomic.Uint64
	// isReady: the slave streamed once; later losses are retried.
	isReady atomic.Bool
	// lastHeard is when the master was last heard from (UnixNano), for
	// failover.auto.
	lastHeard atomic.Int64
	// resyncLaunched: resync.auto started schedsync resync already.
	resyncLaunched atomic.Bool
	// acks wakes the acknowledger: records were appended or applied.
	acks chan struct{}

	mu     sync.Mutex
	spView *spool.Spool // s.sp, for readers outside the loops (Status)
	// masterSync is what the master last said of failover.synchronous.
	masterSync      MasterSync
	masterSyncKnown bool
	state           string
	lastErr         string
	masterState     string
	masterLast      uint64
	behindSince     time.Time
	startedAt       time.Time
	applyState      string // apply_error or repository_unavailable while apply is stopped
	applyErr        string

	conn    *ship.Conn // the current session, for requests
	applier *apply.Applier
	// lastCommit is the master's commit time of the last transaction
	// applied, for promote's report.
	lastCommit time.Time
	// stopLoops ends the receiving and applying of the current run of the
	// loops; promoting is set first when promote is what ends them.
	stopLoops func()
	promoting *promoteRequest
	// autoHeld says why failover.auto does not promote a slave whose
	// master is unreachable.
	autoHeld string
	nextReq  uint64
	replies  map[uint64]chan ship.Reply
}

// NewSlave checks the configuration of a slave; Run starts it.
func NewSlave(cfg config.Config, log *slog.Logger, o NodeOptions) (*Slave, error) {
	connCfg, err := RepositoryConnConfig(cfg.Repository.URL, "slave")
	if err != nil {
		return nil, err
	}
	tlsConf, err := ship.ClientTLSConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA, cfg.Master.Host)
	if err != nil {
		return nil, err
	}
	return &Slave{
		cfg: cfg, log: log.With("role", "slave"), connCfg: connCfg, tlsConf: tlsConf, opts: o,
		addr: net.JoinHostPort(cfg.Master.Host, strconv.Itoa(cfg.Master.Port)), state: StateStarting,
		acks: make(chan struct{}, 1),
	}, nil
}

// Run connects to the master and streams until ctx is done. Before it is
// ready, a refusal or an unreachable master (unless NodeOptions.Wait allows
// waiting) is returned; afterwards every loss is retried with backoff.
func (s *Slave) Run(ctx context.Context, ready func()) error {
	s.startedAt = time.Now()
	// One deadline for all the retrying before ready: reaching the slave
	// repository and then the master share --wait, rather than each
	// having all of it.
	deadline := s.startedAt.Add(s.opts.Wait)
	for bo := newBackoff(200*time.Millisecond, 5*time.Second); ; {
		err := s.readRepository(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return err
		}
		s.setState(StateRepositoryUnavailable, err.Error())
		bo.wait(ctx, s.log, "slave repository unavailable; retrying", err)
	}
	opening := time.Now()
	if err := s.openSpool(); err != nil {
		return err
	}
	defer func() { s.sp.Close() }()
	// Recovering the spool is not retrying: it leaves --wait as it was.
	deadline = deadline.Add(time.Since(opening))
	// A slave must not run jobs: the scheduler stays stopped here.
	if err := RunHook(ctx, s.cfg, s.log, HookDemote, config.RoleSlave, s.generation.Load()); err != nil {
		s.log.Error("this node runs as a slave, but failover.demote_command failed: the scheduler may still be running jobs here", "err", err)
	}
	for {
		loopCtx, stop := context.WithCancel(ctx)
		s.mu.Lock()
		s.stopLoops = stop
		s.mu.Unlock()
		g, gctx := errgroup.WithContext(loopCtx)
		g.Go(func() error { return s.applyLoop(gctx) })
		g.Go(func() error { return s.connectLoop(gctx, ready, deadline) })
		g.Go(func() error { return s.retentionLoop(gctx) })
		g.Go(func() error { return s.autoFailoverLoop(gctx) })
		err := g.Wait()
		stop()
		var full *spoolFullError
		if errors.As(err, &full) && ctx.Err() == nil {
			if err := reopenSpool(ctx, s.log, s.sp, s.openSpool, s.setState, full); err != nil {
				return err
			}
			continue
		}
		s.mu.Lock()
		req := s.promoting
		s.promoting, s.stopLoops = nil, nil
		s.mu.Unlock()
		if req == nil || ctx.Err() != nil {
			if req != nil {
				req.done <- promoteReply{err: errors.New("the slave service is stopping")}
			}
			return err
		}
		res, perr := s.promoteNow(ctx, req.force)
		req.done <- promoteReply{res: res, err: perr}
		if perr == nil {
			return ErrRoleChanged
		}
		s.log.Error("promote failed; this node stays a slave", "err", perr)
		if err := s.openSpool(); err != nil {
			return err
		}
	}
}

// connectLoop keeps a session with the master. Before the slave is ready a
// refusal is returned, and so is an unreachable master once deadline has
// passed; afterwards every loss is retried with backoff.
func (s *Slave) connectLoop(ctx context.Context, ready func(), deadline time.Time) error {
	markReady := func() {
		if !s.isReady.Swap(true) {
			ready()
		}
	}
	bo := newBackoff(100*time.Millisecond, 10*time.Second)
	for {
		streamed, err := s.session(ctx, markReady)
		if ctx.Err() != nil {
			return nil
		}
		if werr := s.sp.WriteErr(); werr != nil {
			return s.waitForSpoolSpace(ctx, werr)
		}
		if streamed {
			// failover.timeout counts from when the loss was noticed: the
			// master was alive after its last frame.
			s.heard()
		}
		if streamed {
			bo.reset()
		}
		if errors.Is(err, ship.ErrNeedsResync) {
			s.setState(StateNeedsResync, err.Error())
			if s.autoResync() {
				err = fmt.Errorf("%w; resync.auto is on: schedsync resync was started (see %s)", err, s.cfg.LogFilePath())
			}
			if !s.isReady.Load() {
				return fmt.Errorf("slave needs a re-sync: %w", err)
			}
			bo.toMax() // the master will refuse again until a re-sync
		} else {
			if !s.isReady.Load() && (permanent(err) || !time.Now().Before(deadline)) {
				return err
			}
			s.setState(StateConnecting, err.Error())
		}
		s.opts.Metrics.Reconnected()
		bo.wait(ctx, s.log, "connection to the master lost; reconnecting", err)
	}
}

// permanent errors are configuration mistakes that waiting cannot fix.
func permanent(err error) bool {
	return errors.Is(err, ship.ErrAuth) || errors.Is(err, ship.ErrVersion) ||
		errors.Is(err, ship.ErrSameRepository) || errors.Is(err, ship.ErrTLSMismatch) ||
		errors.Is(err, ship.ErrFenced)
}

// readRepository reads the slave repository's identity and applied position.
func (s *Slave) readRepository(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg)
	if err != nil {
		return fmt.Errorf("cannot connect to the slave repository (repository.url): %w", err)
	}
	defer conn.Close(context.Background())
	if s.identity, err = repositoryIdentity(ctx, conn); err != nil {
		return err
	}
	var applied, epoch int64
	err = conn.QueryRow(ctx, `SELECT applied_position, capture_epoch FROM schedsync.state WHERE id = 1`).Scan(&applied, &epoch)
	if err != nil {
		return fmt.Errorf("read schedsync.state in the slave repository (run schedsync install on the slave): %w", err)
	}
	s.applied.Store(uint64(applied))
	s.epoch.Store(uint64(epoch))
	st, _, err := LoadNodeState(s.cfg.Spool.Dir)
	if err != nil {
		return err
	}
	g, err := syncRepositoryGeneration(ctx, conn, st.Generation)
	if err != nil {
		return err
	}
	s.generation.Store(g)
	return nil
}

// session runs one connection to the master. streamed reports whether the
// handshake succeeded.
func (s *Slave) session(ctx context.Context, markReady func()) (streamed bool, err error) {
	s.setState(StateConnecting, "")
	nc, err := ship.Dial(ctx, s.addr, s.tlsConf)
	if err != nil {
		return false, fmt.Errorf("master sync service at %s is not reachable; start the master first: %w", s.addr, err)
	}
	defer nc.Close()
	// The last session may have ended mid-transaction or before its last
	// sync: drop an unfinished transaction and make the whole ones durable,
	// so that the position announced is exactly what the spool holds.
	if err := s.sp.Rollback(ctx); err != nil {
		return false, fmt.Errorf("roll back the spool's unfinished transaction: %w", err)
	}
	if err := s.sp.Sync(ctx); err != nil {
		return false, fmt.Errorf("sync spool: %w", err)
	}
	w, err := ship.ClientHandshake(ctx, nc, ship.ClientOptions{
		Token: s.cfg.Sync.Token, Name: s.cfg.Node.Name, Identity: s.identity,
		Applied: s.applied.Load(), Received: s.sp.DurablePosition(), Epoch: s.epoch.Load(),
		Generation: s.generation.Load(),
	})
	if err != nil {
		return false, err
	}
	if err := s.checkMaster(ctx, w); err != nil {
		return false, err
	}
	conn := ship.NewConn(nc, ship.ConnOptions{Heartbeat: w.Heartbeat, PeerMaxFrame: w.MaxFrame, Peer: "master at " + s.addr})
	s.mu.Lock()
	s.masterLast = w.LastPosition
	s.mu.Unlock()
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
	}()
	s.setState(StateStreaming, "")
	s.heard()
	s.setAutoFailover("")
	s.log.Info("streaming from the master", "master", s.addr, "master_name", w.Name, "after", w.StartAfter,
		"capture_epoch", fmt.Sprintf("%016x", s.epoch.Load()), "master_capture_epoch", fmt.Sprintf("%016x", w.Epoch))
	markReady()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.receive(gctx, conn) })
	g.Go(func() error { return s.syncAndAck(gctx, conn) })
	g.Go(func() error {
		return conn.SendHeartbeats(gctx, func() ship.Heartbeat {
			return ship.Heartbeat{Time: time.Now(), Position: s.sp.DurablePosition(), Applied: s.applied.Load()}
		})
	})
	return true, g.Wait()
}

// receive appends the records the master sends to the spool and wakes the
// syncer. Records split across frames are joined first.
func (s *Slave) receive(ctx context.Context, conn *ship.Conn) error {
	var joined []byte
	for {
		msg, err := conn.Receive(ctx)
		if err != nil {
			return err
		}
		s.heard()
		switch v := msg.(type) {
		case ship.Records:
			data := v.Data
			if v.More || joined != nil {
				if len(joined)+len(v.Data) > maxJoinedRecord {
					return fmt.Errorf("master sent a record larger than %d bytes", maxJoinedRecord)
				}
				joined = append(joined, v.Data...)
				if v.More {
					continue
				}
				data, joined = joined, nil
			}
			if err := s.sp.AppendRecord(ctx, data); err != nil {
				return fmt.Errorf("append record %d-%d to the spool: %w", v.First, v.Last, err)
			}
			s.wakeAcks()
		case ship.MasterStatus:
			s.mu.Lock()
			s.masterState, s.masterLast = v.State, max(s.masterLast, v.LastPosition)
			s.mu.Unlock()
			s.recordMasterSync(v)
		case ship.Heartbeat:
			s.mu.Lock()
			s.masterLast = max(s.masterLast, v.Position)
			s.mu.Unlock()
		case ship.Reply:
			s.deliverReply(v)
		default:
			return fmt.Errorf("master sent an unexpected %T", msg)
		}
	}
}

func (s *Slave) wakeAcks() {
	select {
	case s.acks <- struct{}{}:
	default:
	}
}

// syncAndAck makes appended records durable and acknowledges them, with the
// applied position. One fsync covers every record appended since the last,
// so a backlog streams at disk bandwidth rather than one fsync per record.
func (s *Slave) syncAndAck(ctx context.Context, conn *ship.Conn) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.acks:
		}
		if err := s.sp.Sync(ctx); err != nil {
			return fmt.Errorf("sync spool: %w", err)
		}
		if err := conn.Send(ctx, ship.Ack{Received: s.sp.DurablePosition(), Applied: s.applied.Load()}); err != nil {
			return err
		}
	}
}

func (s *Slave) setState(state, errText string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.lastErr = state, errText
}

// Status reports the slave's state and positions.
func (s *Slave) Status() Status {
	s.mu.Lock()
	st := Status{
		Role: "slave", Name: s.cfg.Node.Name, Running: true, State: s.state, Error: s.lastErr,
		Master: s.addr, PID: os.Getpid(), StartedAt: s.startedAt, UpdatedAt: time.Now(),
	}
	if st.State == StateStreaming && s.masterState == ship.StateMasterUnavailable {
		st.State = StateMasterUnavailable
	}
	if s.applyState != "" {
		st.State, st.Error = s.applyState, s.applyErr
	}
	st.AutoFailoverHeld = s.autoHeld
	st.Synchronous, st.SynchronousSince = s.masterSync.State, s.masterSync.DegradedSince
	applied := s.applied.Load()
	st.Position = applied
	st.Generation = s.generation.Load()
	st.CaptureEpoch = epochText(s.epoch.Load())
	// Lag: how long the slave has been behind what the master had; 0 when
	// it has applied everything the master captured.
	if applied >= s.masterLast {
		s.behindSince = time.Time{}
	} else {
		if s.behindSince.IsZero() {
			s.behindSince = time.Now()
		}
		st.LagSeconds = time.Since(s.behindSince).Seconds()
	}
	sp := s.spView
	s.mu.Unlock()
	if sp != nil {
		// What is applied was received, even when a restore or a refetch
		// left the spool empty.
		st.ReceivedPosition = max(sp.DurablePosition(), applied)
		st.BacklogBytes = sp.BytesAfter(applied)
		st.SpoolBytes, st.SpoolSegments = sp.Size()
	}
	return st
}

// checkMaster refuses a master of a lower generation than this node has
// seen (it was replaced by a promotion), records a higher one, and takes
// the history the master says this slave's data continues into.
func (s *Slave) checkMaster(ctx context.Context, w ship.Welcome) error {
	own := s.generation.Load()
	if w.Generation < own {
		return fmt.Errorf("%w: master %s at %s has generation %d, lower than generation %d, which this node has seen: it was replaced by a promotion and must not be followed; point master.host and master.port at the current master",
			ship.ErrFenced, w.Name, s.addr, w.Generation, own)
	}
	if w.Generation > own {
		if err := s.raiseGeneration(ctx, w.Generation); err != nil {
			return err
		}
	}
	if w.Adopt && w.Epoch != s.epoch.Load() {
		if err := s.adoptHistory(ctx, w.Epoch); err != nil {
			return err
		}
	}
	return nil
}

// raiseGeneration records a higher generation learned from the master.
func (s *Slave) raiseGeneration(ctx context.Context, g uint64) error {
	st, _, err := LoadNodeState(s.cfg.Spool.Dir)
	if err != nil {
		return err
	}
	if st.Role == "" {
		st = NodeState{Role: config.RoleSlave, Why: "start", Since: time.Now().UTC()}
	}
	st.Generation = max(st.Generation, g)
	if err := SaveNodeState(s.cfg.Spool.Dir, st); err != nil {
		return err
	}
	s.generation.Store(st.Generation)
	conn, err := pgx.ConnectConfig(ctx, s.connCfg)
	if err != nil {
		s.log.Warn("could not record the generation in the slave repository; node.json has it", "generation", g, "err", err)
		return nil
	}
	defer conn.Close(context.Background())
	if _, err := syncRepositoryGeneration(ctx, conn, g); err != nil {
		s.log.Warn("could not record the generation in the slave repository; node.json has it", "generation", g, "err", err)
	}
	return nil
}

// adoptHistory takes the master's capture history as the slave's data's:
// the master said the slave's data ends exactly where that history forked
// from the slave's (a promoted master, and its old master as its slave).
// It is guarded by the position, so an apply committed meanwhile refuses it.
func (s *Slave) adoptHistory(ctx context.Context, epoch uint64) error {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg)
	if err != nil {
		return fmt.Errorf("connect to the slave repository: %w", err)
	}
	defer conn.Close(context.Background())
	old, applied := s.epoch.Load(), s.applied.Load()
	tag, err := conn.Exec(ctx, `UPDATE schedsync.state SET capture_epoch = $1, updated_at = now()
		WHERE id = 1 AND applied_position = $2 AND capture_epoch = $3`, int64(epoch), int64(applied), int64(old))
	if err != nil {
		return fmt.Errorf("take the master's capture history: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("take the master's capture history: the slave is no longer at position %d of history %016x", applied, old)
	}
	s.epoch.Store(epoch)
	s.log.Info("the master's capture history continues this slave's data", "capture_epoch", epochText(epoch),
		"was", epochText(old), "at_position", applied)
	return nil
}

// promoteRequest is a promote asked on the control socket, handed to Run.
type promoteRequest struct {
	force bool
	done  chan promoteReply
}

type promoteReply struct {
	res PromoteResult
	err error
}

// promote stops receiving and applying, and has Run promote the node.
func (s *Slave) promote(ctx context.Context, force bool) (PromoteResult, error) {
	req, err := s.startPromote(force)
	if err != nil {
		return PromoteResult{}, err
	}
	select {
	case r := <-req.done:
		return r.res, r.err
	case <-ctx.Done():
		// Run hands the reply over before it returns, and the control
		// socket cancels its commands only after that.
		select {
		case r := <-req.done:
			return r.res, r.err
		default:
			return PromoteResult{}, ctx.Err()
		}
	}
}

// startPromote stops the loops and hands Run a promotion, whose outcome
// the returned request receives; one of the loops may call it, and then
// must not wait for that outcome.
func (s *Slave) startPromote(force bool) (*promoteRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.promoting != nil || s.stopLoops == nil {
		return nil, errors.New("the slave service is busy (promoting, or starting): try again in a moment")
	}
	if s.conn != nil && !force {
		return nil, fmt.Errorf("the master at %s is still streaming to this slave: promoting now would leave two masters; for a planned change run schedsync switchover, or stop the master first; promote --force promotes anyway", s.addr)
	}
	req := &promoteRequest{force: force, done: make(chan promoteReply, 1)}
	s.promoting = req
	s.stopLoops()
	return req, nil
}

// promoteNow promotes once the loops stopped.
func (s *Slave) promoteNow(ctx context.Context, force bool) (PromoteResult, error) {
	s.mu.Lock()
	last := s.lastCommit
	s.mu.Unlock()
	s.setState(StatePromoting, "")
	p := &promoter{cfg: s.cfg, log: s.log, connCfg: s.connCfg, sp: s.sp,
		generation: s.generation.Load(), lastCommit: last, force: force}
	return p.run(ctx)
}
