package service

import (
	"os"
	"path/filepath"
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
