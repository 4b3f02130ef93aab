package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
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
	// resyncLaunched: resync.auto started schedsync resync already.
	resyncLaunched atomic.Bool
	// acks wakes the acknowledger: records were appended or applied.
	acks chan struct{}

	mu          sync.Mutex
	state       string
	lastErr     string
	masterState string
	masterLast  uint64
	behindSince time.Time
	startedAt   time.Time
	applyState  string // apply_error or repository_unavailable while apply is stopped
	applyErr    string

	conn    *ship.Conn // the current session, for requests
	applier *apply.Applier
	nextReq uint64
	replies map[uint64]chan ship.Reply
}

// NewSlave checks the configuration of a slave; Run starts it.
func NewSlave(cfg config.Config, log *slog.Logger, o NodeOptions) (*Slave, error) {
	connCfg, err := pgx.ParseConfig(cfg.Repository.URL)
	if err != nil {
		return nil, fmt.Errorf("repository.url: %w", err)
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
	var err error
	if s.sp, err = spool.Open(spoolOptions(s.cfg, filepath.Join(s.cfg.Spool.Dir, "spool"), s.log)); err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer s.sp.Close()
	// Recovering the spool is not retrying: it leaves --wait as it was.
	deadline = deadline.Add(time.Since(opening))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.applyLoop(gctx) })
	g.Go(func() error { return s.connectLoop(gctx, ready, deadline) })
	g.Go(func() error { return s.retentionLoop(gctx) })
	return g.Wait()
}

// connectLoop keeps a session with the master. Before the slave is ready a
// refusal is returned, and so is an unreachable master once deadline has
// passed; afterwards every loss is retried with backoff.
func (s *Slave) connectLoop(ctx context.Context, ready func(), deadline time.Time) error {
	isReady := false
	markReady := func() {
		if !isReady {
			isReady = true
			ready()
		}
	}
	bo := newBackoff(100*time.Millisecond, 10*time.Second)
	for {
		streamed, err := s.session(ctx, markReady)
		if ctx.Err() != nil {
			return nil
		}
		if streamed {
			bo.reset()
		}
		if errors.Is(err, ship.ErrNeedsResync) {
			s.setState(StateNeedsResync, err.Error())
			if s.autoResync() {
				err = fmt.Errorf("%w; resync.auto is on: schedsync resync was started (see %s)", err, s.cfg.LogFilePath())
			}
			if !isReady {
				return fmt.Errorf("slave needs a re-sync: %w", err)
			}
			bo.toMax() // the master will refuse again until a re-sync
		} else {
			if !isReady && (permanent(err) || !time.Now().Before(deadline)) {
				return err
			}
			s.setState(StateConnecting, err.Error())
		}
		bo.wait(ctx, s.log, "connection to the master lost; reconnecting", err)
	}
}

// permanent errors are configuration mistakes that waiting cannot fix.
func permanent(err error) bool {
	return errors.Is(err, ship.ErrAuth) || errors.Is(err, ship.ErrVersion) ||
		errors.Is(err, ship.ErrSameRepository) || errors.Is(err, ship.ErrTLSMismatch)
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
	})
	if err != nil {
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
	applied := s.applied.Load()
	st.Position = applied
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
	s.mu.Unlock()
	if s.sp != nil {
		st.ReceivedPosition = s.sp.DurablePosition()
		st.BacklogBytes = s.sp.BytesAfter(applied)
	}
	return st
}
