package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
	"github.com/schedsync/schedsync/ship"
)

// A switchover is a planned, zero-loss role swap, driven by the slave
// over a connection of its own (ship.PurposeSwitchover):
//
//  1. The slave asks (RequestSwitchover). The master runs demote_command,
//     makes its repository read only for every session but schedsync's
//     (default_transaction_read_only, and the other sessions of the
//     database ended), takes the final position P from capture (a
//     snapshot after which nothing can commit), and waits until the slave
//     acknowledged applying P. It answers with P.
//  2. The slave promotes itself: nothing to apply past P, a capture
//     history that forks at P, generation + 1.
//  3. The slave says commit: the master stops, clears its capture state,
//     records that its data ends at P of its history, and becomes a slave
//     of the new master, whose history it adopts at P: no re-seed.
//
// A failure before the commit undoes the master's side (its repository
// writable again, promote_command run to bring the scheduler back): both
// nodes keep their roles. A master that loses the slave after answering
// asks the slave's sync port for its generation: if the slave took over,
// it demotes; otherwise it undoes.

// Switchover bounds.
const (
	switchoverApplyWait = time.Minute     // the slave applying up to P
	switchoverVerdict   = 3 * time.Minute // the master waiting for commit or abort
	switchoverRequest   = 2 * time.Minute // the slave waiting for P
)

type switchoverAsk struct {
	Port int `json:"port"` // the slave's sync.listen port; the host is where it connects from
}

type switchoverReady struct {
	Position   uint64 `json:"position"`
	Epoch      uint64 `json:"epoch"`
	Generation uint64 `json:"generation"`
}

// SwitchoverResult is what `schedsync switchover` reports.
type SwitchoverResult struct {
	Promote PromoteResult `json:"promote"`
	// FinalPosition is the old master's last position, all applied here.
	FinalPosition uint64  `json:"final_position"`
	OldMaster     string  `json:"old_master"`
	TookSeconds   float64 `json:"took_seconds"`
}

// demotion ends a master's Run after a committed switchover.
type demotion struct {
	host  string
	port  int
	ready switchoverReady
}

func (d *demotion) Error() string {
	return fmt.Sprintf("switched over: this node becomes a slave of %s", net.JoinHostPort(d.host, strconv.Itoa(d.port)))
}

// serveSwitchover is the master's side of a switchover connection.
func (m *Master) serveSwitchover(ctx context.Context, nc net.Conn, hello ship.Hello, addr string) {
	log := m.log.With("slave", hello.Name, "purpose", "switchover")
	conn := ship.NewConn(nc, ship.ConnOptions{
		Heartbeat: m.cfg.Sync.Heartbeat, PeerMaxFrame: hello.MaxFrame, Peer: "slave " + hello.Name,
	})
	hbctx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go conn.SendHeartbeats(hbctx, func() ship.Heartbeat { return ship.Heartbeat{Position: m.sp.DurablePosition()} })
	req, err := receive[ship.Request](ctx, conn, 30*time.Second)
	if err != nil || req.Kind != ship.RequestSwitchover {
		log.Info("switchover connection without a switchover request", "err", err)
		return
	}
	var ask switchoverAsk
	if err := json.Unmarshal(req.Body, &ask); err != nil || ask.Port < 1 || ask.Port > 65535 {
		_ = conn.Send(ctx, ship.Reply{ID: req.ID, Kind: req.Kind, Error: "switchover: the slave did not say its sync.listen port"})
		return
	}
	host := hostOf(addr)
	log.Warn("switchover asked: demoting this master", "new_master", net.JoinHostPort(host, strconv.Itoa(ask.Port)))
	ready, err := m.prepareDemote(ctx, hello.Name)
	if err != nil {
		log.Error("switchover failed on the master; it stays master", "err", err)
		_ = conn.Send(ctx, ship.Reply{ID: req.ID, Kind: req.Kind, Error: err.Error()})
		return
	}
	body, _ := json.Marshal(ready)
	if err := conn.Send(ctx, ship.Reply{ID: req.ID, Kind: req.Kind, Body: body}); err != nil {
		m.settleSwitchover(ctx, log, host, ask.Port, ready, false)
		return
	}
	verdict, err := receive[ship.Request](ctx, conn, switchoverVerdict)
	committed := err == nil && verdict.Kind == ship.RequestSwitchoverCommit
	if committed {
		_ = conn.Send(ctx, ship.Reply{ID: verdict.ID, Kind: verdict.Kind})
	}
	if err != nil {
		log.Warn("lost the slave during the switchover; asking its sync port who is master", "err", err)
	}
	m.settleSwitchover(ctx, log, host, ask.Port, ready, committed)
}

// settleSwitchover demotes this master if the slave took over (it said so,
// or its sync port answers with a higher generation), and undoes the
// demotion otherwise.
func (m *Master) settleSwitchover(ctx context.Context, log *slog.Logger, host string, port int, ready switchoverReady, committed bool) {
	if !committed {
		peer := net.JoinHostPort(host, strconv.Itoa(port))
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
			if w, err := m.probe(ctx, peer); err == nil && w.Generation > m.gen.Load() {
				committed = true
				break
			}
		}
	}
	if !committed {
		log.Warn("switchover did not complete; this node stays master")
		m.undoDemote(context.WithoutCancel(ctx))
		return
	}
	select {
	case m.halt <- &demotion{host: host, port: port, ready: ready}:
	default:
	}
}

// receive waits for the peer's next message of type T (a Request or a
// Reply), passing heartbeats.
func receive[T ship.Message](ctx context.Context, conn *ship.Conn, wait time.Duration) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		msg, err := conn.Receive(ctx)
		if err != nil {
			var zero T
			return zero, err
		}
		if m, ok := msg.(T); ok {
			return m, nil
		}
	}
}

// prepareDemote is step 1 on the master; on failure it undoes what it did.
func (m *Master) prepareDemote(ctx context.Context, slave string) (ready switchoverReady, err error) {
	if !m.reg.connected(slave) {
		return ready, fmt.Errorf("slave %s is not streaming from this master; start it and let it catch up first", slave)
	}
	// Before the demote hook stops the scheduler: this master must be
	// able to fence its repository and then to apply as a slave.
	if err := checkGrants(ctx, m.connCfg, grantsFor(m.cfg, false, true), "a switchover (this master fences its repository, drops its capture objects and becomes a slave)"); err != nil {
		return ready, fmt.Errorf("on the master: %w", err)
	}
	if err := RunHook(ctx, m.cfg, m.log, HookDemote, config.RoleMaster, m.gen.Load()); err != nil {
		m.undoDemote(context.WithoutCancel(ctx))
		return ready, fmt.Errorf("on the master: %w", err)
	}
	defer func() {
		if err != nil {
			m.undoDemote(context.WithoutCancel(ctx))
		}
	}()
	if err := m.freeze(ctx); err != nil {
		return ready, fmt.Errorf("on the master: stop new writes: %w", err)
	}
	r := m.waitReader(ctx, 10*time.Second)
	if r == nil {
		return ready, errors.New("on the master: capture is not connected to its repository")
	}
	var res capture.SnapshotResult
	select {
	case res = <-r.RequestSnapshot(func(context.Context, pgx.Tx) error { return nil }):
	case <-ctx.Done():
		return ready, ctx.Err()
	}
	if res.Err != nil {
		return ready, fmt.Errorf("on the master: take the final position: %w", res.Err)
	}
	// Every transaction committed before the freeze is spooled (the
	// snapshot's position); capture stops now, and what it spooled since
	// (sequence samples) is made durable: the spool's end is final.
	m.pauseCapture()
	if err := m.sp.Sync(ctx); err != nil {
		return ready, fmt.Errorf("on the master: sync the spool: %w", err)
	}
	ready = switchoverReady{Position: max(res.Position, m.sp.DurablePosition()), Epoch: res.Epoch, Generation: m.gen.Load()}
	deadline := time.Now().Add(switchoverApplyWait)
	for m.reg.record(slave).Applied < ready.Position {
		if !time.Now().Before(deadline) {
			return ready, fmt.Errorf("slave %s did not apply up to the final position %d within %s (it is at %d)",
				slave, ready.Position, switchoverApplyWait, m.reg.record(slave).Applied)
		}
		select {
		case <-ctx.Done():
			return ready, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	m.log.Warn("switchover: the slave applied the final position", "position", ready.Position)
	return ready, nil
}

// freeze makes the repository read only for every session but
// schedsync's, which RepositoryConnConfig keeps writable: new sessions by
// default_transaction_read_only, the ones already there by ending them.
func (m *Master) freeze(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, m.connCfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// Fencing must be quick: the privileges are checked up front by the
	// switchover and by start (failover.witness), and here only to
	// explain a failure.
	if err := setReadOnly(ctx, conn, true); err != nil {
		if missing := grants.Check(ctx, conn, grants.Request{Fence: true}, "fencing the repository"); missing != nil {
			return missing
		}
		return err
	}
	var since time.Time
	if err := conn.QueryRow(ctx, `SELECT now()`).Scan(&since); err != nil {
		return err
	}
	const others = `FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
		AND backend_type = 'client backend' AND coalesce(application_name, '') NOT LIKE 'schedsync%' AND backend_start <= $1`
	for attempt := 0; ; attempt++ {
		var left int
		if err := conn.QueryRow(ctx, `SELECT count(*) `+others, since).Scan(&left); err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if attempt == 50 {
			return fmt.Errorf("%d session(s) of the repository opened before it was made read only could not be ended; let schedsync's database user end them (pg_signal_backend) or stop the scheduler in failover.demote_command", left)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) `+others, since); err != nil {
			return fmt.Errorf("end the repository's other sessions: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setReadOnly sets or resets default_transaction_read_only on the
// repository database. Resetting a database that does not have it set does
// nothing, so that a user who does not own the database can promote a
// node that was never frozen.
func setReadOnly(ctx context.Context, conn *pgx.Conn, on bool) error {
	var db string
	var set bool
	err := conn.QueryRow(ctx, `SELECT quote_ident(current_database()), EXISTS (SELECT 1 FROM pg_db_role_setting s
		JOIN pg_database d ON d.oid = s.setdatabase
		WHERE d.datname = current_database() AND s.setrole = 0
		  AND 'default_transaction_read_only=on' = ANY (s.setconfig))`).Scan(&db, &set)
	if err != nil {
		return err
	}
	if !on && !set {
		return nil
	}
	sql := `ALTER DATABASE ` + db + ` RESET default_transaction_read_only`
	if on {
		sql = `ALTER DATABASE ` + db + ` SET default_transaction_read_only = on`
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// thaw undoes freeze.
func (m *Master) thaw(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, m.connCfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return setReadOnly(ctx, conn, false)
}

// undoDemote makes the repository writable again and brings the
// scheduler back: the master stays master.
func (m *Master) undoDemote(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	if err := m.thaw(ctx); err != nil {
		m.log.Error("switchover undone, but the repository could not be made writable again: run ALTER DATABASE ... RESET default_transaction_read_only", "err", err)
	}
	m.resumeCapture()
	if err := RunHook(ctx, m.cfg, m.log, HookPromote, config.RoleMaster, m.gen.Load()); err != nil {
		m.log.Error("switchover undone, but failover.promote_command failed: start the scheduler here", "err", err)
	}
}

// completeDemote is step 3 on the master, once Run's loops stopped: the
// capture state goes, the repository records that its data ends at the
// final position of its history, and node.json makes this node a slave of
// the new master.
func (m *Master) completeDemote(d *demotion) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, m.connCfg)
	if err != nil {
		return fmt.Errorf("switchover: connect to the repository to become a slave: %w", err)
	}
	defer conn.Close(context.Background())
	if err := capture.Demote(ctx, conn, m.cfg.Repository.Schemas); err != nil {
		return fmt.Errorf("switchover: %w", err)
	}
	if _, err := conn.Exec(ctx, `UPDATE schedsync.state SET applied_position = $1, capture_epoch = $2, needs_resync = false,
		generation = GREATEST(generation, $3), updated_at = now() WHERE id = 1`,
		int64(d.ready.Position), int64(d.ready.Epoch), int64(d.ready.Generation)); err != nil {
		return fmt.Errorf("switchover: record the position: %w", err)
	}
	for _, f := range []string{"slaves.json", "identity.json"} {
		if err := os.Remove(filepath.Join(m.cfg.Spool.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := SaveNodeState(m.cfg.Spool.Dir, NodeState{Role: config.RoleSlave, Generation: d.ready.Generation,
		MasterHost: d.host, MasterPort: d.port, Why: "switchover", Since: time.Now().UTC()}); err != nil {
		return err
	}
	m.log.Warn("switched over: this node is now a slave", "master", net.JoinHostPort(d.host, strconv.Itoa(d.port)),
		"position", d.ready.Position)
	return ErrRoleChanged
}

// switchover is the slave's side, asked on the control socket.
func (s *Slave) switchover(ctx context.Context) (SwitchoverResult, error) {
	start := time.Now()
	res := SwitchoverResult{OldMaster: s.addr}
	_, portText, err := net.SplitHostPort(s.cfg.Sync.Listen)
	port, _ := strconv.Atoi(portText)
	if err != nil || port == 0 {
		return res, fmt.Errorf("sync.listen %q names no port: the new master serves there", s.cfg.Sync.Listen)
	}
	s.mu.Lock()
	streaming := s.conn != nil
	s.mu.Unlock()
	if !streaming {
		return res, fmt.Errorf("the slave is not streaming from its master at %s: a switchover needs both up; if the master is gone, run schedsync promote", s.addr)
	}
	// Before the master is asked to demote: this node must be able to
	// install capture as master.
	if err := checkGrants(ctx, s.connCfg, grantsFor(s.cfg, true, false), "a switchover (this slave becomes master)"); err != nil {
		return res, fmt.Errorf("%w; both nodes keep their roles", err)
	}
	nc, err := ship.Dial(ctx, s.addr, s.tlsConf)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	w, err := ship.ClientHandshake(ctx, nc, ship.ClientOptions{
		Token: s.cfg.Sync.Token, Name: s.cfg.Node.Name, Identity: s.identity, Applied: s.applied.Load(),
		Epoch: s.epoch.Load(), Generation: s.generation.Load(), Purpose: ship.PurposeSwitchover,
	})
	if err != nil {
		return res, err
	}
	conn := ship.NewConn(nc, ship.ConnOptions{Heartbeat: w.Heartbeat, PeerMaxFrame: w.MaxFrame, Peer: "master at " + s.addr})
	hbctx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go conn.SendHeartbeats(hbctx, func() ship.Heartbeat { return ship.Heartbeat{Applied: s.applied.Load()} })
	body, _ := json.Marshal(switchoverAsk{Port: port})
	if err := conn.Send(ctx, ship.Request{ID: 1, Kind: ship.RequestSwitchover, Body: body}); err != nil {
		return res, err
	}
	reply, err := receive[ship.Reply](ctx, conn, switchoverRequest)
	if err != nil {
		return res, fmt.Errorf("no answer from the master: %w; both nodes keep their roles", err)
	}
	if reply.Error != "" {
		return res, fmt.Errorf("switchover failed %s; both nodes keep their roles", reply.Error)
	}
	var ready switchoverReady
	if err := json.Unmarshal(reply.Body, &ready); err != nil {
		return res, err
	}
	res.FinalPosition = ready.Position
	abort := func(cause error) (SwitchoverResult, error) {
		_ = conn.Send(context.WithoutCancel(ctx), ship.Request{ID: 2, Kind: ship.RequestSwitchoverAbort})
		return res, fmt.Errorf("%w; the master was told to stay master, and this node stays a slave", cause)
	}
	deadline := time.Now().Add(switchoverApplyWait)
	for s.applied.Load() < ready.Position {
		if !time.Now().Before(deadline) {
			return abort(fmt.Errorf("this slave did not apply up to the master's final position %d within %s", ready.Position, switchoverApplyWait))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res.Promote, err = s.promote(ctx, true); err != nil {
		return abort(fmt.Errorf("promote: %w", err))
	}
	if res.Promote.AppliedPosition != ready.Position {
		// Cannot happen while the master is read only; say so if it did.
		s.log.Error("switchover: promoted at another position than the master's final one", "applied", res.Promote.AppliedPosition, "final", ready.Position)
	}
	if err := conn.Send(ctx, ship.Request{ID: 3, Kind: ship.RequestSwitchoverCommit}); err == nil {
		_, _ = receive[ship.Reply](ctx, conn, 10*time.Second)
	}
	res.TookSeconds = time.Since(start).Seconds()
	return res, nil
}
