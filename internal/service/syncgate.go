package service

import (
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Synchronous states, as status and the slaves show them.
const (
	SyncOn       = "on"       // commits wait until failover.synchronous_slaves slaves hold them
	SyncDegraded = "degraded" // no slave for failover.synchronous_timeout: asynchronous for now
)

// syncGate is failover.synchronous on a master (capture.FlushGate):
// capture tells the master's server that its WAL is flushed only up to
// the spool positions that n slaves hold durably in their spools, so that
// the server's synchronous replication (synchronous_standby_names naming
// capture) holds every commit until then.
//
// Without strict, a commit that waits timeout for slaves, or the first
// one after no slave has been connected for timeout, degrades the gate to
// asynchronous: every position is let through. It is synchronous again as
// soon as n slaves hold everything capture had asked for.
type syncGate struct {
	n       int
	strict  bool
	timeout time.Duration
	log     *slog.Logger
	reg     *registry
	// notify is told of every change of state (the slaves are sent it).
	notify func()

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced at every ack
	lastWant uint64        // the position capture last asked for
	// track is a position capture waits for, since trackSince; the clock
	// restarts whenever the slaves reach it, so that it measures how long
	// one commit waits, not how long the slaves are behind under load.
	track        uint64
	trackSince   time.Time
	lastEligible time.Time // n slaves were connected
	degraded     time.Time // since when asynchronous; zero while synchronous
}

func newSyncGate(n int, strict bool, timeout time.Duration, reg *registry, log *slog.Logger, notify func()) *syncGate {
	return &syncGate{n: n, strict: strict, timeout: timeout, reg: reg, log: log.With("stage", "synchronous"),
		notify: notify, changed: make(chan struct{}), lastEligible: time.Now()}
}

// Allowed implements capture.FlushGate.
func (g *syncGate) Allowed(want uint64) (uint64, <-chan struct{}) {
	have, connected := g.reg.durableOn(g.n)
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastWant = max(g.lastWant, want)
	if connected >= g.n {
		g.lastEligible = now
	}
	switch {
	case !g.degraded.IsZero():
		return want, g.changed
	case have >= want:
		g.track = 0
		return want, g.changed
	case g.strict:
	case now.Sub(g.lastEligible) >= g.timeout:
		g.degradeLocked(now, "fewer than failover.synchronous_slaves slaves connected for failover.synchronous_timeout")
		return want, g.changed
	case g.track == 0 || have >= g.track:
		g.track, g.trackSince = want, now
	case now.Sub(g.trackSince) >= g.timeout:
		g.degradeLocked(now, "a commit waited failover.synchronous_timeout for the slaves")
		return want, g.changed
	}
	return have, g.changed
}

func (g *syncGate) degradeLocked(now time.Time, why string) {
	g.degraded, g.track = now, 0
	g.log.Warn("failover.synchronous degraded: commits no longer wait for slaves; synchronous again once enough slaves have caught up",
		"why", why, "synchronous_slaves", g.n, "timeout", g.timeout)
	go g.notify()
}

// acked is called after every slave ack: it wakes capture and, if
// degraded, goes synchronous again once n slaves hold all that capture
// last asked for.
func (g *syncGate) acked() {
	g.mu.Lock()
	close(g.changed)
	g.changed = make(chan struct{})
	degraded := !g.degraded.IsZero()
	g.mu.Unlock()
	if !degraded {
		return // the usual case: no need to rank the slaves on every ack
	}
	have, _ := g.reg.durableOn(g.n)
	g.mu.Lock()
	back := !g.degraded.IsZero() && have >= g.lastWant
	if back {
		g.log.Info("failover.synchronous: synchronous again: enough slaves have caught up",
			"synchronous_slaves", g.n, "was_degraded_for", time.Since(g.degraded).Round(time.Millisecond))
		g.degraded = time.Time{}
	}
	g.mu.Unlock()
	if back {
		g.notify()
	}
}

// state is SyncOn or SyncDegraded, and since when degraded.
func (g *syncGate) state() (string, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.degraded.IsZero() {
		return SyncOn, time.Time{}
	}
	return SyncDegraded, g.degraded
}

// durableOn is the highest position that at least n slaves that count
// (not needs_resync) hold durably, and how many slaves are connected.
func (r *registry) durableOn(n int) (pos uint64, connected int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var held []uint64
	for _, s := range r.slaves {
		if !s.NeedsResync {
			held = append(held, s.Received)
		}
	}
	if len(held) < n {
		return 0, len(r.sessions)
	}
	slices.Sort(held)
	return held[len(held)-n], len(r.sessions)
}

// count is how many slaves the master keeps changes for (not
// needs_resync).
func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.slaves {
		if !s.NeedsResync {
			n++
		}
	}
	return n
}
