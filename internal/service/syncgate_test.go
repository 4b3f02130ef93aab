package service

import (
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// gateRig is a registry with slaves at given received positions, and a
// gate on it.
func gateRig(t *testing.T, n int, strict bool, timeout time.Duration, received map[string]uint64) (*syncGate, *registry, *atomic.Int32) {
	t.Helper()
	reg, err := loadRegistry(filepath.Join(t.TempDir(), "slaves.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, pos := range received {
		reg.slaves[name] = &slaveRecord{Name: name, Received: pos}
		reg.sessions[name] = &masterSession{name: name}
	}
	var notified atomic.Int32
	g := newSyncGate(n, strict, timeout, reg, slog.New(slog.DiscardHandler), func() { notified.Add(1) })
	return g, reg, &notified
}

func setReceived(reg *registry, name string, pos uint64) {
	reg.mu.Lock()
	reg.slaves[name].Received = pos
	reg.mu.Unlock()
}

// disconnect drops the slave's session: its received position still counts.
func disconnect(reg *registry, name string) {
	reg.mu.Lock()
	delete(reg.sessions, name)
	reg.mu.Unlock()
}

func TestSyncGateHoldsUntilSlavesHaveIt(t *testing.T) {
	g, reg, _ := gateRig(t, 2, false, time.Hour, map[string]uint64{"a": 10, "b": 7, "c": 3})
	if got, _ := g.Allowed(12); got != 7 {
		t.Fatalf("two of three slaves hold 7: allowed %d, want 7", got)
	}
	_, ch := g.Allowed(12)
	setReceived(reg, "c", 12)
	g.acked()
	select {
	case <-ch:
	default:
		t.Fatal("an ack did not wake capture")
	}
	if got, _ := g.Allowed(12); got != 10 {
		t.Fatalf("slaves at 10, 7, 12: allowed %d, want 10", got)
	}
	setReceived(reg, "a", 12)
	if got, _ := g.Allowed(12); got != 12 {
		t.Fatalf("two slaves at 12: allowed %d, want 12", got)
	}
	if st, _ := g.state(); st != SyncOn {
		t.Fatalf("state %q, want on", st)
	}
}

func TestSyncGateDegradesAfterTimeoutAndComesBack(t *testing.T) {
	g, reg, notified := gateRig(t, 1, false, 50*time.Millisecond, map[string]uint64{"a": 5})
	if got, _ := g.Allowed(9); got != 5 {
		t.Fatalf("allowed %d, want 5", got)
	}
	time.Sleep(80 * time.Millisecond)
	if got, _ := g.Allowed(9); got != 9 {
		t.Fatalf("after the timeout: allowed %d, want 9 (degraded)", got)
	}
	st, since := g.state()
	if st != SyncDegraded || since.IsZero() {
		t.Fatalf("state %q since %v, want degraded", st, since)
	}
	if got, _ := g.Allowed(20); got != 20 {
		t.Fatalf("degraded: allowed %d, want 20", got)
	}
	setReceived(reg, "a", 15)
	g.acked()
	if st, _ := g.state(); st != SyncDegraded {
		t.Fatal("synchronous again before the slave had what capture asked for")
	}
	setReceived(reg, "a", 20)
	g.acked()
	if st, _ := g.state(); st != SyncOn {
		t.Fatalf("state %q once the slave caught up, want on", st)
	}
	time.Sleep(10 * time.Millisecond) // the notify of degrading runs on its own goroutine
	if notified.Load() < 2 {
		t.Fatalf("the slaves were told %d times, want both changes", notified.Load())
	}
}

func TestSyncGateProgressKeepsItSynchronous(t *testing.T) {
	g, reg, _ := gateRig(t, 1, false, 60*time.Millisecond, map[string]uint64{"a": 0})
	// A slave always a little behind, but reaching each wait: no degrade.
	want := uint64(10)
	for i := 0; i < 10; i++ {
		g.Allowed(want)
		time.Sleep(15 * time.Millisecond)
		setReceived(reg, "a", want) // the slave reaches what was asked...
		want += 10                  // ...while more is captured
	}
	if st, _ := g.state(); st != SyncOn {
		t.Fatalf("a slave that keeps up under load degraded the gate (%s)", st)
	}
}

func TestSyncGateStrictNeverDegrades(t *testing.T) {
	g, reg, _ := gateRig(t, 1, true, 10*time.Millisecond, map[string]uint64{"a": 1})
	disconnect(reg, "a")
	g.Allowed(5)
	time.Sleep(30 * time.Millisecond)
	if got, _ := g.Allowed(5); got != 1 {
		t.Fatalf("strict: allowed %d, want 1", got)
	}
	if st, _ := g.state(); st != SyncOn {
		t.Fatalf("strict gate degraded: %s", st)
	}
}

func TestSyncGateNoSlaveConnectedDegradesAtOnce(t *testing.T) {
	g, reg, _ := gateRig(t, 1, false, 20*time.Millisecond, map[string]uint64{"a": 1})
	disconnect(reg, "a")
	time.Sleep(30 * time.Millisecond) // no slave connected for the timeout
	if got, _ := g.Allowed(5); got != 5 {
		t.Fatalf("first commit after no slave for the timeout: allowed %d, want 5 at once", got)
	}
}
