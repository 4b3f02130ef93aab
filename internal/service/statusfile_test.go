package service

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestSaveLoadStatus(t *testing.T) {
	dir := t.TempDir()
	st := Status{Role: "master", Name: "node01", Running: true, State: StateStreaming, Position: 7,
		BacklogBytes: 100, PID: 12, StartedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		Slaves: []SlaveStatus{{Name: "node02", Connected: true, AppliedPosition: 5}}}
	if err := SaveStatus(dir, st); err != nil {
		t.Fatal(err)
	}
	st.Position = 8 // a second save replaces the first
	if err := SaveStatus(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := LoadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("loaded %+v, want %+v", got, st)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != StatusFileName {
		t.Errorf("dir holds %v, want only %s", entries, StatusFileName)
	}
}

func TestLastKnownStatus(t *testing.T) {
	save := func(t *testing.T, st Status) string {
		dir := t.TempDir()
		if err := SaveStatus(dir, st); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	fresh := Status{Role: "slave", Name: "node02", State: StateStopped}
	tests := []struct {
		name string
		dir  func(t *testing.T) string
		want Status
		err  bool
	}{
		{"never ran", func(t *testing.T) string { return t.TempDir() }, fresh, false},
		{"killed while streaming", func(t *testing.T) string {
			return save(t, Status{Role: "slave", Name: "node02", Running: true, PID: 9, State: StateStreaming, Position: 5, ReceivedPosition: 6})
		}, Status{Role: "slave", Name: "node02", State: StateStopped, Position: 5, ReceivedPosition: 6}, false},
		{"ended needing a re-sync", func(t *testing.T) string {
			return save(t, Status{Role: "slave", Name: "node02", State: StateNeedsResync, Position: 5, Error: "refused"})
		}, Status{Role: "slave", Name: "node02", State: StateNeedsResync, Position: 5, Error: "refused"}, false},
		{"written as master", func(t *testing.T) string {
			return save(t, Status{Role: "master", Name: "node02", State: StateStopped, Position: 99})
		}, fresh, false},
		{"corrupt", func(t *testing.T) string {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, StatusFileName), []byte("{"), 0o644)
			return dir
		}, fresh, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LastKnownStatus(tt.dir(t), "slave", "node02")
			if (err != nil) != tt.err {
				t.Errorf("error %v, want error: %v", err, tt.err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
