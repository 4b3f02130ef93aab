package service

import (
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

// registry is the master's persistent list of slaves (spool.dir/slaves.json).
// Spool retention is the minimum applied position over the slaves in it
// that still count (not needs_resync).
type registry struct {
	mu     sync.Mutex
	path   string
	slaves map[string]*slaveRecord
	saved  time.Time
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
	var list []*slaveRecord
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("slave registry %s is corrupt (%v); move it away and re-sync the slaves", path, err)
	}
	for _, s := range list {
		r.slaves[s.Name] = s
	}
	return r, nil
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
	data, err := json.MarshalIndent(r.list(), "", "  ")
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
