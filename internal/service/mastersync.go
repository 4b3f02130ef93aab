package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/schedsync/schedsync/internal/fsutil"
	"github.com/schedsync/schedsync/ship"
)

// masterSyncFile keeps, in a slave's spool.dir, what its master last said
// of failover.synchronous, for promote to tell what a failover may lose.
const masterSyncFile = "master_synchronous.json"

// MasterSync is a master's failover.synchronous state as its slave last
// heard it.
type MasterSync struct {
	// State is "on" or "degraded".
	State string `json:"state"`
	// DegradedSince is when the master went asynchronous (degraded).
	DegradedSince time.Time `json:"degraded_since,omitzero"`
	// SynchronousSlaves is failover.synchronous_slaves; Slaves how many
	// slaves the master kept changes for.
	SynchronousSlaves int `json:"synchronous_slaves"`
	Slaves            int `json:"slaves"`
	// Heard is when the slave last heard it.
	Heard time.Time `json:"heard"`
}

func masterSyncFrom(m ship.MasterStatus) MasterSync {
	s := MasterSync{State: m.Sync, SynchronousSlaves: int(m.SyncSlaves), Slaves: int(m.Slaves), Heard: time.Now().UTC()}
	if m.SyncSince != 0 {
		s.DegradedSince = time.UnixMilli(m.SyncSince).UTC()
	}
	return s
}

// same reports whether two states differ only in when they were heard.
func (s MasterSync) same(o MasterSync) bool {
	s.Heard, o.Heard = time.Time{}, time.Time{}
	return s == o
}

// saveMasterSync records s in dir, or removes the record when the master
// is not synchronous (State empty).
func saveMasterSync(dir string, s MasterSync) error {
	path := filepath.Join(dir, masterSyncFile)
	if s.State == "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return fsutil.WriteJSONAtomic(path, s, 0o600)
}

// LoadMasterSync reads what the slave last heard; nil if its master was
// not synchronous.
func LoadMasterSync(dir string) (*MasterSync, error) {
	data, err := os.ReadFile(filepath.Join(dir, masterSyncFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s MasterSync
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, masterSyncFile), err)
	}
	return &s, nil
}

// recordMasterSync keeps what the master said of failover.synchronous,
// on disk when it changed.
func (s *Slave) recordMasterSync(m ship.MasterStatus) {
	ms := masterSyncFrom(m)
	s.mu.Lock()
	changed := !s.masterSyncKnown || !s.masterSync.same(ms)
	s.masterSync, s.masterSyncKnown = ms, true
	s.mu.Unlock()
	if !changed {
		return
	}
	if err := saveMasterSync(s.cfg.Spool.Dir, ms); err != nil {
		s.log.Warn("could not record the master's synchronous state", "err", err)
	}
	if ms.State == SyncDegraded {
		s.log.Warn("the master is no longer synchronous (failover.synchronous degraded): a failover may lose what it committed since",
			"since", ms.DegradedSince)
	}
}
