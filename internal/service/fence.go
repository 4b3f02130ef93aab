package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/ship"
)

// FencedError ends a master that learned of a higher generation than its
// own: a promotion replaced it, and it must not serve writes or changes
// any more. errors.Is(err, ship.ErrFenced) holds.
type FencedError struct {
	Node       string // this node
	Generation uint64 // this node's generation
	By         string // who has the higher one: "master NAME at ADDR" or "slave NAME"
	Higher     uint64
	// MasterHost, MasterPort: the new master's sync port, when known.
	MasterHost string
	MasterPort string
	ConfigPath string
}

func (e *FencedError) Error() string {
	cfg := e.ConfigPath
	if cfg == "" {
		cfg = "the config file"
	}
	where := "master.host and master.port naming the new master's sync port"
	if e.MasterHost != "" {
		where = fmt.Sprintf("master.host = %s and master.port = %s", e.MasterHost, e.MasterPort)
	}
	return fmt.Sprintf("fenced: %s has generation %d, higher than this node's (%s) generation %d: this node was replaced as master by a promotion and will not serve; "+
		"to make it a slave of the new master, set node.role = slave and %s in %s, then run: schedsync --config %s resync --force (README: Fail-back)",
		e.By, e.Higher, e.Node, e.Generation, where, cfg, cfg)
}

func (e *FencedError) Is(target error) bool { return target == ship.ErrFenced }

// probeTimeout bounds asking one peer for its generation.
const probeTimeout = 3 * time.Second

// checkPeers asks every failover.peers node that answers on its sync port
// for its generation, and returns a *FencedError if one is higher than
// this master's. A peer that does not answer (down, or a slave, which
// does not listen) is passed over: fencing protects against a master that
// is up. A peer of a lower generation fences itself when asked. A peer
// that is a master of the same generation is refused too: two masters of
// one generation means two nodes configured as master.
func (m *Master) checkPeers(ctx context.Context) error {
	own := m.gen.Load()
	for _, peer := range m.cfg.Failover.Peers {
		w, err := m.probe(ctx, peer)
		if errors.Is(err, ship.ErrFenced) {
			// A master refuses a node of a higher generation than its
			// own and fences itself: this node outranks that peer.
			m.log.Warn("failover peer is a master of a lower generation; it fenced itself", "peer", peer, "err", err)
			continue
		}
		if err != nil {
			m.log.Info("failover peer did not answer; going on", "peer", peer, "err", err)
			continue
		}
		m.mu.Lock()
		id := m.identity
		m.mu.Unlock()
		if w.Name == m.cfg.Node.Name || w.Identity.SameDatabase(id) {
			continue // this node itself: one peers list copied to every node
		}
		switch {
		case w.Generation > own:
			return m.fencedByPeer(peer, w)
		case w.Generation == own:
			return fmt.Errorf("failover peer %s at %s is a master of the same generation %d as this node: two nodes are configured as master; "+
				"make one of them a slave (node.role = slave, then schedsync resync --force on it)", w.Name, peer, own)
		}
		m.log.Info("failover peer is a master of a lower generation; it will fence itself", "peer", peer, "name", w.Name, "generation", w.Generation)
	}
	return nil
}

// fencedByPeer is the FencedError of a master that found peer w, a master
// of a higher generation, at peer's sync port.
func (m *Master) fencedByPeer(peer string, w ship.Welcome) *FencedError {
	host, port, _ := net.SplitHostPort(peer)
	return &FencedError{Node: m.cfg.Node.Name, Generation: m.gen.Load(), By: fmt.Sprintf("master %s at %s", w.Name, peer),
		Higher: w.Generation, MasterHost: host, MasterPort: port, ConfigPath: m.opts.ConfigPath}
}

// probe asks one peer's sync port for its Welcome.
func (m *Master) probe(ctx context.Context, peer string) (ship.Welcome, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	tlsConf, err := ship.ClientTLSConfig(m.cfg.TLS.Cert, m.cfg.TLS.Key, m.cfg.TLS.CA, hostOf(peer))
	if err != nil {
		return ship.Welcome{}, err
	}
	nc, err := ship.Dial(ctx, peer, tlsConf)
	if err != nil {
		return ship.Welcome{}, err
	}
	defer nc.Close()
	m.mu.Lock()
	id := m.identity
	m.mu.Unlock()
	return ship.ClientHandshake(ctx, nc, ship.ClientOptions{
		Token: m.cfg.Sync.Token, Name: m.cfg.Node.Name, Identity: id, Generation: m.gen.Load(),
		Purpose: ship.PurposeProbe, Timeout: probeTimeout,
	})
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// fence stops this master for good: a node of a higher generation exists.
// It runs failover.demote_command, and Run returns err.
func (m *Master) fence(err *FencedError) {
	m.fenceOnce.Do(func() {
		m.setState(StateFenced, err.Error())
		m.log.Error("this master is fenced", "err", err)
		ctx, cancel := context.WithTimeout(context.Background(), hookTimeout)
		defer cancel()
		if herr := RunHook(ctx, m.cfg, m.log, HookFenced, config.RoleMaster, m.gen.Load()); herr != nil {
			m.log.Error("fenced, but failover.demote_command failed: the scheduler may still be running jobs here", "err", herr)
		}
		select {
		case m.halt <- err:
		default:
		}
	})
}

// fenceBySlave fences this master when a connecting node has seen a higher
// generation, and returns the refusal the node gets.
func (m *Master) fenceBySlave(h ship.Hello, addr string) *ship.RefusedError {
	own := m.gen.Load()
	what := "slave"
	if h.Purpose == ship.PurposeProbe {
		what = "node"
	}
	go m.fence(&FencedError{Node: m.cfg.Node.Name, Generation: own,
		By: fmt.Sprintf("%s %s (from %s)", what, h.Name, strings.TrimSpace(addr)), Higher: h.Generation, ConfigPath: m.opts.ConfigPath})
	return ship.RefuseFenced(m.cfg.Node.Name, own, h.Generation)
}

// loadGeneration makes this master's generation: the one persisted, at
// least 1, recorded in node.json as master.
func (m *Master) loadGeneration() error {
	st, ok, err := LoadNodeState(m.cfg.Spool.Dir)
	if err != nil {
		return err
	}
	g := max(st.Generation, 1)
	m.gen.Store(g)
	if ok && st.Role == config.RoleMaster && st.Generation == g {
		return nil
	}
	return SaveNodeState(m.cfg.Spool.Dir, NodeState{Role: config.RoleMaster, Generation: g, Why: "start", Since: time.Now().UTC()})
}

// watchPeers keeps asking failover.peers for their generation while this
// master serves: a slave that promoted itself while cut off from this
// master (but not from the witness) fences it as soon as the two see each
// other again.
func (m *Master) watchPeers(ctx context.Context) error {
	if len(m.cfg.Failover.Peers) == 0 {
		return nil
	}
	// Fencing ends Run, and ctx with it.
	every(ctx, max(m.cfg.Sync.Heartbeat, time.Second), func() {
		for _, peer := range m.cfg.Failover.Peers {
			if w, err := m.probe(ctx, peer); err == nil && w.Generation > m.gen.Load() {
				m.fence(m.fencedByPeer(peer, w))
				return
			}
		}
	})
	return nil
}
