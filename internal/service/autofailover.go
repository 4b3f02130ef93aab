package service

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Automatic promotion (failover.auto) and a master's self-fencing.
//
// A slave promotes itself once its master has been unreachable for
// failover.timeout: no frame from it (records, heartbeats) and no
// successful reconnect for that long, and, with failover.probe_url, no
// answer from the master's repository either (a sync service that died on
// a live repository is not a dead master). It does so only if it reaches
// failover.witness, so that a slave cut off from the network does not
// promote itself while the master runs on; and not with changes it cannot
// apply, or more unapplied backlog than failover.max_lag.
//
// A master with failover.witness set that reaches neither a slave nor the
// witness for failover.timeout minus a margin is probably the one cut
// off: before a slave could promote itself it runs demote_command and makes
// its repository read only for the scheduler (state fenced), until it
// reaches one of them again.

// probeWait bounds one check of the witness or of probe_url.
const probeWait = 3 * time.Second

// reachable says whether target answers: a libpq URL (or key=value
// string) must accept a connection and run a query; a host:port must
// accept a TCP connection.
func reachable(ctx context.Context, target string) error {
	ctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	if strings.Contains(target, "://") || strings.Contains(target, "=") {
		cfg, err := pgx.ParseConfig(target)
		if err != nil {
			return err
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var one int
		return conn.QueryRow(ctx, `SELECT 1`).Scan(&one)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	return c.Close()
}

// heard records that the master was heard from, or that its loss was
// just noticed.
func (s *Slave) heard() {
	s.lastHeard.Store(time.Now().UnixNano())
}

// autoFailoverLoop watches the master (failover.auto) and asks Run to
// promote this slave once the master is down for good.
func (s *Slave) autoFailoverLoop(ctx context.Context) error {
	if !s.cfg.Failover.Auto {
		return nil
	}
	s.heard() // the timeout counts from now, not from the last session
	timeout := s.cfg.Failover.Timeout
	var said string
	say := func(msg string, args ...any) {
		if msg != said {
			said = msg
			s.log.Warn(msg, args...)
		}
	}
	// A promotion asked for stops the loops, ctx with them.
	every(ctx, checkEvery(timeout), func() {
		silent := time.Since(time.Unix(0, s.lastHeard.Load()))
		if silent < timeout || ctx.Err() != nil {
			said = ""
			return
		}
		why, ok := s.mayPromote(ctx)
		if !ok {
			say("failover.auto: the master is unreachable, but this slave does not promote itself: "+why, "silent", silent.Round(time.Millisecond))
			s.setAutoFailover(why)
			return
		}
		s.log.Warn("failover.auto: the master has been unreachable for failover.timeout; promoting this slave", "silent", silent.Round(time.Millisecond), "timeout", timeout)
		if _, err := s.startPromote(false); err != nil {
			say("failover.auto: could not start the promotion: "+err.Error(), "silent", silent.Round(time.Millisecond))
		}
	})
	return nil
}

// checkEvery is how often failover.auto and self-fencing look: often
// enough that the timeout is kept to within 5 %.
func checkEvery(timeout time.Duration) time.Duration {
	return max(timeout/20, 50*time.Millisecond)
}

// mayPromote checks the conditions of an automatic promotion besides the
// master's silence, and says which one fails.
func (s *Slave) mayPromote(ctx context.Context) (string, bool) {
	s.mu.Lock()
	applyState, applyErr := s.applyState, s.applyErr
	s.mu.Unlock()
	if applyState != "" {
		return fmt.Sprintf("it has received changes it cannot apply (%s: %s)", applyState, applyErr), false
	}
	if backlog := s.sp.BytesAfter(s.applied.Load()); backlog > int64(s.cfg.Failover.MaxLag) {
		return fmt.Sprintf("its unapplied backlog of %d bytes exceeds failover.max_lag (%d bytes)", backlog, int64(s.cfg.Failover.MaxLag)), false
	}
	if u := s.cfg.Failover.ProbeURL; u != "" {
		if err := reachable(ctx, u); err == nil {
			return "the master's repository still answers on failover.probe_url (only its sync service is down: restart it)", false
		}
	}
	if err := reachable(ctx, s.cfg.Failover.Witness); err != nil {
		return fmt.Sprintf("failover.witness does not answer either (%v): this slave may be the one cut off", err), false
	}
	return "", true
}

func (s *Slave) setAutoFailover(why string) {
	s.mu.Lock()
	s.autoHeld = why
	s.mu.Unlock()
}

// selfFenceLoop is the master's side: with failover.witness set, it fences
// the repository while it reaches neither a slave nor the witness.
func (m *Master) selfFenceLoop(ctx context.Context) error {
	witness := m.cfg.Failover.Witness
	if witness == "" {
		return nil
	}
	// Before a slave's failover.timeout runs out: a quarter of it as
	// margin for the checks themselves.
	limit := m.cfg.Failover.Timeout - m.cfg.Failover.Timeout/4
	lastContact := time.Now()
	every(ctx, checkEvery(m.cfg.Failover.Timeout), func() {
		contact := m.reg.anyConnected() || reachable(ctx, witness) == nil
		fenced := m.selfFenced.Load()
		switch {
		case contact:
			lastContact = time.Now()
			if fenced {
				m.log.Warn("self-fencing lifted: this master reaches a slave or the witness again")
				m.unfenceSelf(ctx)
			}
		case !fenced && time.Since(lastContact) >= limit:
			m.log.Error("self-fencing: this master reached neither a slave nor failover.witness for too long; the scheduler is stopped and the repository read only until it does",
				"for", time.Since(lastContact).Round(time.Millisecond), "limit", limit)
			m.fenceSelf(ctx)
		}
	})
	return nil
}

// fenceSelf runs demote_command and makes the repository read only;
// only then does status say "fenced", so that whoever reads it can rely
// on the repository refusing writes.
func (m *Master) fenceSelf(ctx context.Context) {
	defer m.selfFenced.Store(true)
	if err := RunHook(ctx, m.cfg, m.log, HookFenced, "master", m.gen.Load()); err != nil {
		m.log.Error("self-fencing: failover.demote_command failed", "err", err)
	}
	if err := m.freeze(ctx); err != nil {
		m.log.Error("self-fencing: could not make the repository read only", "err", err)
	}
}

// unfenceSelf undoes fenceSelf; a repository it cannot make writable
// stays fenced, and the next check tries again.
func (m *Master) unfenceSelf(ctx context.Context) {
	if err := m.thaw(ctx); err != nil {
		m.log.Error("self-fencing lifted, but the repository could not be made writable", "err", err)
		return
	}
	if err := RunHook(ctx, m.cfg, m.log, HookPromote, "master", m.gen.Load()); err != nil {
		m.log.Error("self-fencing lifted, but failover.promote_command failed", "err", err)
	}
	m.selfFenced.Store(false)
}
