package service

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The registry reads the file of earlier versions (a plain list of
// slaves), keeps backup pins across a save and a load, and lets pins go
// when they expire or when the slave they were taken for has caught up.
func TestRegistryPins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slaves.json")
	if err := os.WriteFile(path, []byte(`[{"name": "old", "applied_position": 7, "needs_resync": true}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := loadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	if s := r.slaves["old"]; s == nil || s.Applied != 7 || !s.NeedsResync {
		t.Fatalf("old-format registry read as %+v", r.slaves)
	}
	now := time.Now()
	r.pin(backupPin{Position: 100, Until: now.Add(time.Hour), Slave: "s1"})
	r.pin(backupPin{Position: 200, Until: now.Add(time.Minute)})
	r.pin(backupPin{Position: 50, Until: now.Add(-time.Second)}) // expired
	if err := r.save(); err != nil {
		t.Fatal(err)
	}
	if r, err = loadRegistry(path); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		applied uint64
		at      time.Time
		pinned  bool
	}{
		{99, now, false},                      // before every live pin (50 expired)
		{100, now, true},                      // at the resync's pin
		{150, now.Add(2 * time.Minute), true}, // the CLI's pin expired, the resync's holds
		{250, now.Add(2 * time.Hour), false},  // every pin expired
	} {
		if got := r.pinnedFor(tc.applied, tc.at); got != tc.pinned {
			t.Errorf("pinnedFor(%d, now+%s) = %v, want %v", tc.applied, tc.at.Sub(now).Round(time.Second), got, tc.pinned)
		}
	}
	r, _ = loadRegistry(path)
	if !r.releasePins("s1") || r.releasePins("s1") {
		t.Error("releasePins(s1) did not release its pin exactly once")
	}
	if r.pinnedFor(150, now) || !r.pinnedFor(200, now) {
		t.Errorf("after the release, pins left: %+v", r.pins)
	}
	if s := r.slaves["old"]; s == nil || s.Applied != 7 {
		t.Errorf("slaves lost across save and load: %+v", r.slaves)
	}
}

// fixedSpool is a spool whose extent a test sets: every position after
// first-1 holds perPos bytes.
type fixedSpool struct{ first, last, perPos uint64 }

func (s fixedSpool) FirstPosition() uint64   { return s.first }
func (s fixedSpool) DurablePosition() uint64 { return s.last }
func (s fixedSpool) BytesAfter(pos uint64) int64 {
	if pos >= s.last {
		return 0
	}
	return int64((s.last - max(pos, s.first-1)) * s.perPos)
}

func (s fixedSpool) BacklogWithin(pos uint64, limit int64) bool { return s.BytesAfter(pos) <= limit }

// Sessions of one slave racing to be admitted: one is attached, the others
// are told the name is busy, and the one attached is the one a backlog
// mark refuses and the one a detach lets go.
func TestRegistryAdmitsOneSessionPerSlave(t *testing.T) {
	r, err := loadRegistry(filepath.Join(t.TempDir(), "slaves.json"))
	if err != nil {
		t.Fatal(err)
	}
	sessions := make([]*masterSession, 8)
	busy := make([]bool, len(sessions))
	var wg sync.WaitGroup
	for i := range sessions {
		sessions[i] = &masterSession{name: "s1", addr: fmt.Sprintf("10.0.0.%d:1", i)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if busy[i], err = r.admit(sessions[i], 5, 6, nil, 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var attached *masterSession
	for i, b := range busy {
		if !b {
			if attached != nil {
				t.Fatal("two sessions of one slave admitted")
			}
			attached = sessions[i]
		}
	}
	if attached == nil || !r.connected("s1") {
		t.Fatal("no session admitted")
	}
	if recs, addrs := r.list(); len(recs) != 1 || recs[0].Applied != 5 || recs[0].Received != 6 || addrs["s1"] != attached.addr {
		t.Fatalf("after admit: %+v, %v", recs, addrs)
	}

	// 10 positions of 100 bytes behind, over a limit of 500: marked and
	// refused.
	out, err := r.ack("s1", 6, 5, fixedSpool{first: 1, last: 15, perPos: 100}, 500)
	if err != nil || !out.marked || out.backlog != 1000 {
		t.Fatalf("ack over the backlog limit = %+v, %v", out, err)
	}
	for _, s := range sessions {
		if (s.refusal != nil) != (s == attached) {
			t.Errorf("session %s refused: %v", s.addr, s.refusal)
		}
	}
	if !r.record("s1").NeedsResync {
		t.Error("slave not marked needs_resync")
	}

	for _, s := range sessions {
		if s != attached {
			if err := r.detach(s); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !r.connected("s1") {
		t.Error("detaching a session that was refused as busy detached the slave's")
	}
	if err := r.detach(attached); err != nil || r.connected("s1") {
		t.Errorf("slave still connected after its session was detached (%v)", err)
	}
}
