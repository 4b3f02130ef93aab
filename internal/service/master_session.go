package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/schedsync/schedsync/ship"
)

// masterSession is one connected slave.
type masterSession struct {
	name string
	addr string
	conn *ship.Conn
	// chunk is the most record data one frame to this slave may carry.
	chunk int

	mu      sync.Mutex
	refusal *ship.RefusedError // set when the master disconnects the slave
	cancel  context.CancelFunc
}

// refuse disconnects the slave with a refusal it will show.
func (s *masterSession) refuse(r *ship.RefusedError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refusal == nil {
		s.refusal = r
	}
	if s.cancel != nil {
		s.cancel()
	}
}

// disconnect ends the session; the slave reconnects.
func (s *masterSession) disconnect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}

func (m *Master) acceptLoop(ctx context.Context, ln net.Listener, sessions *sync.WaitGroup) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			m.log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			m.serveSlave(ctx, nc)
		}()
	}
}

// serveSlave runs the handshake and then streams to the slave until it
// disconnects or is disconnected.
func (m *Master) serveSlave(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	addr := nc.RemoteAddr().String()
	var sess *masterSession
	hello, err := ship.ServerHandshake(ctx, nc, ship.ServerOptions{Token: m.cfg.Sync.Token},
		func(h ship.Hello) (ship.Welcome, *ship.RefusedError) {
			var w ship.Welcome
			var r *ship.RefusedError
			sess, w, r = m.admit(h, addr)
			return w, r
		})
	if err != nil {
		if sess != nil {
			m.dropSession(sess)
		}
		m.log.Info("slave refused or handshake failed", "addr", addr, "err", err)
		return
	}
	switch hello.Purpose {
	case ship.PurposeBackup:
		m.serveBackup(ctx, nc, hello)
		return
	case ship.PurposeProbe:
		return
	case ship.PurposeSwitchover:
		m.serveSwitchover(ctx, nc, hello, addr)
		return
	}
	log := m.log.With("slave", hello.Name, "addr", addr)
	log.Info("slave connected", "applied", hello.Applied, "received", hello.Received)
	sess.conn = ship.NewConn(nc, ship.ConnOptions{
		Heartbeat: m.cfg.Sync.Heartbeat, PeerMaxFrame: hello.MaxFrame, Peer: "slave " + hello.Name,
	})
	err = m.stream(ctx, sess, max(hello.Received, hello.Applied))
	m.dropSession(sess)
	if ctx.Err() == nil {
		log.Info("slave disconnected", "err", err)
	}
}

// admit decides whether a slave that proved the token may stream, and
// registers its session. See docs/DESIGN.md for the refusals.
func (m *Master) admit(h ship.Hello, addr string) (*masterSession, ship.Welcome, *ship.RefusedError) {
	m.mu.Lock()
	id := m.identity
	m.mu.Unlock()
	if h.Generation > m.gen.Load() {
		return nil, ship.Welcome{}, m.fenceBySlave(h, addr)
	}
	if h.Purpose == ship.PurposeProbe {
		return nil, ship.Welcome{Name: m.cfg.Node.Name, Identity: id, LastPosition: m.sp.DurablePosition(),
			Epoch: m.epoch.Load(), Generation: m.gen.Load(), Heartbeat: m.cfg.Sync.Heartbeat}, nil
	}
	if id.IsZero() {
		return nil, ship.Welcome{}, ship.RefuseNotReady("the master has not reached its repository yet")
	}
	if h.Identity.SameDatabase(id) {
		return nil, ship.Welcome{}, ship.RefuseSameRepository(id)
	}
	if h.Purpose == ship.PurposeBackup || h.Purpose == ship.PurposeSwitchover {
		// A backup is for re-seeding: no backlog or duplicate check, no
		// streaming session.
		m.mu.Lock()
		fork := m.fork
		m.mu.Unlock()
		return nil, ship.Welcome{Name: m.cfg.Node.Name, Identity: id, LastPosition: m.sp.DurablePosition(),
			Generation: m.gen.Load(), Heartbeat: m.cfg.Sync.Heartbeat,
			ForkEpoch: fork.Parent, ForkPosition: fork.Position}, nil
	}
	// Checked first so that a duplicate leaves the record alone; the
	// registry checks again as it attaches the session.
	if m.reg.connected(h.Name) {
		return nil, ship.Welcome{}, ship.RefuseDuplicateName(h.Name)
	}
	r, backlog := m.checkServable(h, m.reg.record(h.Name))
	adopt := false
	if r == nil {
		adopt, r = m.checkHistory(h)
	}
	peerMax := h.MaxFrame
	if peerMax <= 0 {
		peerMax = ship.DefaultMaxFrame
	}
	sess := &masterSession{name: h.Name, addr: addr, chunk: peerMax - ship.RecordsOverhead}
	received := max(h.Received, h.Applied)
	busy, err := m.reg.admit(sess, h.Applied, received, r, backlog)
	if err != nil {
		m.log.Warn("could not save the slave registry", "err", err)
	}
	switch {
	case busy:
		return nil, ship.Welcome{}, ship.RefuseDuplicateName(h.Name)
	case r != nil:
		return nil, ship.Welcome{}, r
	}
	if backlog > int64(m.cfg.Spool.MaxBacklog) {
		m.log.Info("slave admitted from a backup's position: spool.max_backlog does not apply while spool.backup_pin keeps the spool for it",
			"slave", h.Name, "applied", h.Applied, "backlog_bytes", backlog, "max_backlog", int64(m.cfg.Spool.MaxBacklog))
	}
	return sess, ship.Welcome{
		Name: m.cfg.Node.Name, Identity: id, LastPosition: m.sp.DurablePosition(),
		StartAfter: received, Epoch: m.epoch.Load(), Generation: m.gen.Load(), Adopt: adopt,
		Heartbeat: m.cfg.Sync.Heartbeat,
	}, nil
}

// checkServable refuses a slave whose changes the master no longer has, or
// whose backlog exceeds spool.max_backlog (unless a backup's pin keeps the
// spool for it: it was just restored), and says how big the backlog is.
// rec is the slave's record, for the backlog it had when it was marked.
func (m *Master) checkServable(h ship.Hello, rec slaveRecord) (*ship.RefusedError, int64) {
	last := m.sp.DurablePosition()
	maxBacklog := m.cfg.Spool.MaxBacklog
	if h.Applied > last || h.Received > last {
		return &ship.RefusedError{Code: ship.CodeBacklog, Message: fmt.Sprintf(
			"slave %s has position %d but the master's last position is %d: the master's spool was replaced; run backup and restore (schedsync resync) to re-sync the slave",
			h.Name, max(h.Applied, h.Received), last)}, 0
	}
	backlog := m.sp.BytesAfter(h.Applied)
	if first := m.sp.FirstPosition(); h.Applied+1 < first {
		// The changes right after Applied are gone: the backlog is at
		// least what is left, and what it was when the slave was marked.
		backlog = max(m.sp.BytesAfter(first-1), rec.BacklogAtMark, int64(maxBacklog)+1)
		return ship.RefuseBacklog(h.Name, uint64(backlog), uint64(maxBacklog)), backlog
	}
	if backlog > int64(maxBacklog) && !m.reg.pinnedFor(h.Applied, time.Now()) {
		return ship.RefuseBacklog(h.Name, uint64(backlog), uint64(maxBacklog)), backlog
	}
	return nil, backlog
}

// checkHistory refuses a slave whose data is of another capture history
// than the changes it would stream: the first one it would apply, and the
// ones capture spools now. Capture was installed again on the master since
// (its spool goes on, its history does not), or the slave's data predates
// histories. A slave with nothing applied and no history starts empty,
// with the history of the master's first transaction, which must then be
// the master's current one. Streaming up to where its history ends would
// only leave the slave stuck there: it is refused now, and re-seeded.
//
// A promoted master's history forks from its old master's after the
// position it had applied: a slave whose data is of the old history and
// ends exactly there (the old master after a switchover) is admitted, and
// adopts the new history (adopt).
func (m *Master) checkHistory(h ship.Hello) (adopt bool, _ *ship.RefusedError) {
	first, err := m.epochAt(h.Applied + 1)
	if err != nil {
		return false, ship.RefuseNotReady(fmt.Sprintf("the master could not read its spool at position %d: %v", h.Applied+1, err))
	}
	current := m.epoch.Load()
	m.mu.Lock()
	fork := m.fork
	m.mu.Unlock()
	if current == 0 && fork.Parent != 0 {
		// A promoted master's spool ends with its old master's history:
		// only capture knows the new one.
		return false, ship.RefuseNotReady("the promoted master's capture has not started yet")
	}
	if current == 0 && m.sp.DurablePosition() > 0 {
		// Capture has not connected yet: the spool's last transaction
		// says what it captured last.
		if current, err = m.epochAt(m.sp.DurablePosition()); err != nil {
			return false, ship.RefuseNotReady(fmt.Sprintf("the master could not read its spool at position %d: %v", m.sp.DurablePosition(), err))
		}
	}
	slave := h.Epoch
	if slave == 0 && h.Applied == 0 {
		slave = first
	}
	if fork.Parent != 0 && h.Epoch == fork.Parent && h.Applied == fork.Position && first == current {
		return true, nil
	}
	for _, e := range []uint64{first, current} {
		if e != 0 && e != slave {
			return false, ship.RefuseHistory(h.Name, h.Epoch, e, h.Applied)
		}
	}
	return false, nil
}

// epochAt is the capture history of the first transaction at or after pos:
// from the spool when it holds one, else the history capture spools into.
func (m *Master) epochAt(pos uint64) (uint64, error) {
	if pos > m.sp.DurablePosition() {
		return m.epoch.Load(), nil
	}
	r, err := m.sp.NewReader(pos - 1)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, src, err := r.Next(ctx)
	if err != nil {
		return 0, err
	}
	return src.Header().Epoch, nil
}

func (m *Master) dropSession(sess *masterSession) {
	if err := m.reg.detach(sess); err != nil {
		m.log.Warn("could not save the slave registry", "err", err)
	}
}

// stream sends spool records after startAfter, relays the master's state,
// and takes the slave's acks, until either side stops.
func (m *Master) stream(ctx context.Context, sess *masterSession, startAfter uint64) error {
	ctx, cancel := context.WithCancel(ctx)
	sess.mu.Lock()
	sess.cancel = cancel
	refused := sess.refusal
	sess.mu.Unlock()
	defer cancel()
	if refused != nil {
		return refused
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.sendRecords(gctx, sess, startAfter) })
	g.Go(func() error { return m.receiveAcks(gctx, sess) })
	g.Go(func() error { return m.sendMasterStatus(gctx, sess) })
	g.Go(func() error {
		return sess.conn.SendHeartbeats(gctx, func() ship.Heartbeat {
			return ship.Heartbeat{Time: time.Now(), Position: m.sp.DurablePosition()}
		})
	})
	err := g.Wait()
	sess.mu.Lock()
	refused = sess.refusal
	sess.mu.Unlock()
	if refused != nil {
		// Tell the slave why, on a fresh deadline: the stream was cancelled.
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = sess.conn.Send(sctx, refused)
		scancel()
		return refused
	}
	return err
}

// sendRecords ships spool records as they become durable. One record is in
// flight at a time, so memory stays bounded whatever the backlog; TCP flow
// control paces it to the slave.
func (m *Master) sendRecords(ctx context.Context, sess *masterSession, after uint64) error {
	r, err := m.sp.NewReader(after)
	if err != nil {
		return fmt.Errorf("read spool after %d: %w", after, err)
	}
	defer r.Close()
	chunk := sess.chunk
	shipped := after
	for {
		rec, err := r.NextRecord(ctx)
		if err != nil {
			return err
		}
		// A transaction spanning records counts once, with its first.
		m.opts.Metrics.Shipped(max(rec.Last, shipped)-shipped, len(rec.Data))
		shipped = max(rec.Last, shipped)
		data := rec.Data
		for len(data) > 0 {
			n := min(len(data), chunk)
			msg := ship.Records{First: rec.First, Last: rec.Last, More: n < len(data), Data: data[:n]}
			if err := sess.conn.Send(ctx, msg); err != nil {
				return err
			}
			data = data[n:]
		}
	}
}

func (m *Master) receiveAcks(ctx context.Context, sess *masterSession) error {
	for {
		msg, err := sess.conn.Receive(ctx)
		if err != nil {
			return err
		}
		var received, applied uint64
		switch v := msg.(type) {
		case ship.Ack:
			received, applied = v.Received, v.Applied
		case ship.Heartbeat:
			received, applied = v.Position, v.Applied
		case ship.Request:
			if v.Kind != ship.RequestVerify {
				return fmt.Errorf("slave %s sent an unknown request %q", sess.name, v.Kind)
			}
			go m.answerVerify(ctx, sess, v)
			continue
		default:
			return fmt.Errorf("slave %s sent an unexpected %T", sess.name, msg)
		}
		m.ack(sess, received, applied)
	}
}

// ack records a slave's positions and enforces the backlog limit while it
// is connected.
func (m *Master) ack(sess *masterSession, received, applied uint64) {
	out, err := m.reg.ack(sess.name, received, applied, m.sp, int64(m.cfg.Spool.MaxBacklog))
	if m.gate != nil {
		m.gate.acked()
	}
	if out.released {
		m.log.Info("slave caught up within spool.max_backlog after its resync; its backup's pin is released", "slave", sess.name)
	}
	if out.marked {
		m.logNeedsResync(sess.name, out.backlog)
	}
	if err != nil {
		m.log.Warn("could not save the slave registry", "err", err)
	}
}

// sendMasterStatus tells the slave whether the master repository is
// reachable, now and whenever that changes.
func (m *Master) sendMasterStatus(ctx context.Context, sess *masterSession) error {
	for {
		state, changed := m.wireState()
		ms := ship.MasterStatus{State: state, LastPosition: m.sp.DurablePosition()}
		if m.gate != nil {
			var since time.Time
			ms.Sync, since = m.gate.state()
			if !since.IsZero() {
				ms.SyncSince = since.UnixMilli()
			}
			ms.SyncSlaves, ms.Slaves = uint16(m.gate.n), uint16(m.reg.count())
		}
		if err := sess.conn.Send(ctx, ms); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
