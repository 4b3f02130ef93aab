package service

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"
)

// slaveRecord is what a master remembers of one slave across restarts.
type slaveRecord struct {
	Name        string    `json:"name"`
	Applied     uint64    `json:"applied_position"`
	Received    uint64    `json:"received_position"`
	LastSeen    time.Time `json:"last_seen"`
	NeedsResync bool      `json:"needs_resync"`
	// BacklogAtMark is the backlog that got the slave marked needs_resync,
	// reported again after the spool it refers to is gone.
	BacklogAtMark int64 `json:"backlog_at_mark,omitempty"`
	// caughtUp is when the slave last had applied everything the master
	// had captured; the slave's lag is measured from it.
	caughtUp time.Time
}

// backupPin keeps the spool from a backup's position for a while, so that
// a slave restored from the backup finds it there, whatever backlog built
// up during the backup and the restore (spool.backup_pin).
type backupPin struct {
	Position uint64    `json:"position"`
	Until    time.Time `json:"until"`
	// Slave is the slave that fetched the backup (resync), whose catching
	// up releases the pin early; empty for `schedsync backup`.
	Slave string `json:"slave,omitempty"`
}

// registry is the master's persistent list of slaves and backup pins
// (spool.dir/slaves.json). Spool retention keeps what the slaves that
// still count (not needs_resync) have not applied, and what live pins
// hold.
type registry struct {
	mu     sync.Mutex
	path   string
	slaves map[string]*slaveRecord
	pins   []backupPin
	saved  time.Time
}

// registryFile is the file's layout; a file holding only the list of
// slaves is the layout before backup pins.
type registryFile struct {
	Slaves []*slaveRecord `json:"slaves"`
	Pins   []backupPin    `json:"backup_pins,omitempty"`
}

func loadRegistry(path string) (*registry, error) {
	r := &registry{path: path, slaves: map[string]*slaveRecord{}}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read slave registry: %w", err)
	}
	var f registryFile
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '[' {
		err = json.Unmarshal(data, &f.Slaves)
	} else {
		err = json.Unmarshal(data, &f)
	}
	if err != nil {
		return nil, fmt.Errorf("slave registry %s is corrupt (%v); move it away and re-sync the slaves", path, err)
	}
	for _, s := range f.Slaves {
		r.slaves[s.Name] = s
	}
	r.pins = f.Pins
	return r, nil
}

// pin keeps the spool from pos until until. The caller holds r.mu.
func (r *registry) pin(p backupPin) {
	r.pins = append(r.pins, p)
}

// livePins drops the pins that have expired and returns the others. The
// caller holds r.mu.
func (r *registry) livePins(now time.Time) []backupPin {
	live := r.pins[:0]
	for _, p := range r.pins {
		if now.Before(p.Until) {
			live = append(live, p)
		}
	}
	r.pins = live
	return live
}

// pinnedFor reports whether a live pin keeps the spool from at or before
// applied: a slave there is served whatever its backlog. The caller holds
// r.mu.
func (r *registry) pinnedFor(applied uint64, now time.Time) bool {
	for _, p := range r.livePins(now) {
		if p.Position <= applied {
			return true
		}
	}
	return false
}

// releasePins drops the pins taken for a slave's resync, once it has
// caught up within the backlog limit. The caller holds r.mu.
func (r *registry) releasePins(slave string) bool {
	kept := r.pins[:0]
	for _, p := range r.pins {
		if p.Slave != slave {
			kept = append(kept, p)
		}
	}
	released := len(kept) < len(r.pins)
	r.pins = kept
	return released
}

// get returns the record of a slave, creating it.
func (r *registry) get(name string) *slaveRecord {
	s := r.slaves[name]
	if s == nil {
		s = &slaveRecord{Name: name}
		r.slaves[name] = s
	}
	return s
}

// list returns copies of the records, sorted by name.
func (r *registry) list() []slaveRecord {
	out := make([]slaveRecord, 0, len(r.slaves))
	for _, s := range r.slaves {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// save writes the registry atomically: temp file, fsync, rename, fsync dir.
// The caller holds r.mu.
func (r *registry) save() error {
	f := registryFile{Pins: r.pins}
	for _, s := range r.list() {
		f.Slaves = append(f.Slaves, &s)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(r.path, data, 0o600); err != nil {
		return fmt.Errorf("save slave registry: %w", err)
	}
	r.saved = time.Now()
	return nil
}

// saveSoon saves at most once a second: acks arrive far more often, and a
// registry a second old only makes retention keep a little more.
func (r *registry) saveSoon() error {
	if time.Since(r.saved) < time.Second {
		return nil
	}
	return r.save()
}
