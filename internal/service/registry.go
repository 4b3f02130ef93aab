package service

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/schedsync/schedsync/internal/fsutil"
	"github.com/schedsync/schedsync/ship"
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

// registry is the master's list of slaves and backup pins, persistent in
// spool.dir/slaves.json, and of the sessions of the slaves connected now.
// Spool retention keeps what the slaves that still count (not
// needs_resync) have not applied, and what live pins hold.
//
// The registry owns its lock: each method takes it for one whole step
// (admit a slave, record an ack, a retention pass), so that a slave is
// never marked needs_resync while a session of it is being admitted, nor
// admitted twice. Under its lock it takes only the spool's (to measure a
// backlog) and a session's own (to refuse or disconnect it), never the
// master's: there is no lock order to keep.
type registry struct {
	mu       sync.Mutex
	path     string
	slaves   map[string]*slaveRecord
	pins     []backupPin
	sessions map[string]*masterSession // the connected slaves, by name
	saved    time.Time                 // last save, or last attempt of saveSoon
}

// registryFile is the file's layout; a file holding only the list of
// slaves is the layout before backup pins.
type registryFile struct {
	Slaves []*slaveRecord `json:"slaves"`
	Pins   []backupPin    `json:"backup_pins,omitempty"`
}

// spoolExtent is what the registry needs to know of the master's spool.
type spoolExtent interface {
	FirstPosition() uint64
	DurablePosition() uint64
	BytesAfter(pos uint64) int64
	BacklogWithin(pos uint64, limit int64) bool
}

func loadRegistry(path string) (*registry, error) {
	r := &registry{path: path, slaves: map[string]*slaveRecord{}, sessions: map[string]*masterSession{}}
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

// connected reports whether a session of the slave is attached.
// anyConnected says whether any slave is connected.
func (r *registry) anyConnected() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions) > 0
}

func (r *registry) connected(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[name] != nil
}

// record returns a copy of a slave's record; a slave never seen has a
// zero one.
func (r *registry) record(name string) slaveRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.slaves[name]; s != nil {
		return *s
	}
	return slaveRecord{Name: name}
}

// admit records the master's decision on sess's slave, which announced
// the positions applied and received: a refusal marks it needs_resync
// (with backlog, the backlog it was found to have); else the slave, which
// the master can serve, has been re-seeded if it was marked, its positions
// are recorded and sess is attached. If a session of the slave is
// attached already, admit does neither and reports busy: the duplicate
// check and the attaching are one step.
func (r *registry) admit(sess *masterSession, applied, received uint64, refusal *ship.RefusedError, backlog int64) (busy bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[sess.name] != nil {
		return true, nil
	}
	rec := r.getLocked(sess.name)
	if refusal != nil {
		if rec.NeedsResync {
			return false, nil
		}
		rec.NeedsResync, rec.BacklogAtMark = true, backlog
		return false, r.saveLocked()
	}
	rec.NeedsResync = false
	rec.Applied, rec.Received, rec.LastSeen = applied, received, time.Now()
	r.sessions[sess.name] = sess
	return false, r.saveLocked()
}

// detach records that sess's slave was seen until now and, if sess is its
// attached session, detaches it.
func (r *registry) detach(sess *masterSession) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[sess.name] == sess {
		delete(r.sessions, sess.name)
	}
	r.getLocked(sess.name).LastSeen = time.Now()
	return r.saveLocked()
}

// disconnectAll ends every attached session; the slaves reconnect.
func (r *registry) disconnectAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sess := range r.sessions {
		sess.disconnect()
	}
}

// ackOutcome is what an ack changed that the master reports.
type ackOutcome struct {
	// marked: the slave was marked needs_resync, with backlog, and
	// disconnected.
	marked  bool
	backlog int64
	// released: the slave caught up after its resync, and the pins taken
	// for it were released.
	released bool
}

// ack records the positions a connected slave acknowledged, and enforces
// spool.max_backlog (maxBacklog) on it while it is connected: a slave
// whose backlog exceeds it, where no pin keeps the spool for it, is
// marked needs_resync and disconnected.
func (r *registry) ack(name string, received, applied uint64, sp spoolExtent, maxBacklog int64) (ackOutcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.getLocked(name)
	rec.Received = max(rec.Received, received)
	rec.Applied = max(rec.Applied, applied)
	rec.LastSeen = time.Now()
	if rec.Applied >= sp.DurablePosition() {
		rec.caughtUp = rec.LastSeen
	} else if rec.caughtUp.IsZero() {
		rec.caughtUp = rec.LastSeen
	}
	var out ackOutcome
	switch {
	case sp.BacklogWithin(rec.Applied, maxBacklog):
		if r.releasePinsLocked(name) {
			out.released = true
			if err := r.saveLocked(); err != nil {
				return out, err
			}
		}
	case !r.pinnedForLocked(rec.Applied, time.Now()):
		b := sp.BytesAfter(rec.Applied)
		r.markLocked(rec, b, maxBacklog)
		out.marked, out.backlog = true, b
		return out, r.saveLocked()
	}
	return out, r.saveSoonLocked()
}

// retain is one retention pass: it marks needs_resync the slaves that
// still count but whose changes the spool no longer has, or whose backlog
// exceeds maxBacklog where no pin keeps the spool for them (and
// disconnects them), and returns them with cut, the position up to which
// the spool may go. With no slave that counts, cut keeps what a slave
// arriving within maxBacklog could still use.
func (r *registry) retain(sp spoolExtent, maxBacklog int64, now time.Time) (cut uint64, marked []slaveRecord, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cut = sp.DurablePosition()
	counting := 0
	for _, s := range r.slaves {
		if s.NeedsResync {
			continue
		}
		b := sp.BytesAfter(s.Applied)
		if s.Applied+1 < sp.FirstPosition() || (b > maxBacklog && !r.pinnedForLocked(s.Applied, now)) {
			r.markLocked(s, b, maxBacklog)
			marked = append(marked, *s)
			continue
		}
		counting++
		cut = min(cut, s.Applied)
	}
	if counting == 0 {
		// No slave to keep it for: keep what a slave arriving within the
		// backlog limit could still use.
		cut = positionWithin(sp, maxBacklog)
	}
	for _, p := range r.livePinsLocked(now) {
		cut = min(cut, p.Position)
	}
	if len(marked) > 0 {
		return cut, marked, r.saveLocked()
	}
	return cut, nil, r.saveSoonLocked()
}

// markLocked stops keeping spool for a slave whose backlog is too big, and
// disconnects it with the refusal it will show if it is connected.
func (r *registry) markLocked(s *slaveRecord, backlog, maxBacklog int64) {
	s.NeedsResync, s.BacklogAtMark = true, backlog
	if sess := r.sessions[s.Name]; sess != nil {
		sess.refuse(ship.RefuseBacklog(s.Name, uint64(backlog), uint64(maxBacklog)))
	}
}

// positionWithin is the lowest position p with BytesAfter(p) within limit.
func positionWithin(sp spoolExtent, limit int64) uint64 {
	lo, hi := sp.FirstPosition()-1, sp.DurablePosition()
	for lo < hi {
		mid := lo + (hi-lo)/2
		if sp.BytesAfter(mid) <= limit {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// pin keeps the spool from p.Position until p.Until, and saves.
func (r *registry) pin(p backupPin) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pins = append(r.pins, p)
	return r.saveLocked()
}

// unpin takes back a pin that pin took, and saves.
func (r *registry) unpin(p backupPin) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, q := range r.pins {
		if q == p {
			r.pins = append(r.pins[:i], r.pins[i+1:]...)
			return r.saveLocked()
		}
	}
	return nil
}

// livePinsLocked drops the pins that have expired and returns the others.
func (r *registry) livePinsLocked(now time.Time) []backupPin {
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
// applied: a slave there is served whatever its backlog.
func (r *registry) pinnedFor(applied uint64, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pinnedForLocked(applied, now)
}

func (r *registry) pinnedForLocked(applied uint64, now time.Time) bool {
	for _, p := range r.livePinsLocked(now) {
		if p.Position <= applied {
			return true
		}
	}
	return false
}

// releasePins drops the pins taken for a slave's resync, once it has
// caught up within the backlog limit.
func (r *registry) releasePins(slave string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.releasePinsLocked(slave)
}

func (r *registry) releasePinsLocked(slave string) bool {
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

// getLocked returns the record of a slave, creating it.
func (r *registry) getLocked(name string) *slaveRecord {
	s := r.slaves[name]
	if s == nil {
		s = &slaveRecord{Name: name}
		r.slaves[name] = s
	}
	return s
}

// list returns copies of the records, sorted by name, and the addresses
// of the slaves connected now.
func (r *registry) list() ([]slaveRecord, map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	connected := make(map[string]string, len(r.sessions))
	for name, sess := range r.sessions {
		connected[name] = sess.addr
	}
	return r.listLocked(), connected
}

func (r *registry) listLocked() []slaveRecord {
	out := make([]slaveRecord, 0, len(r.slaves))
	for _, s := range r.slaves {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// save writes the registry atomically: temp file, fsync, rename, fsync dir.
func (r *registry) save() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.saveLocked()
}

func (r *registry) saveLocked() error {
	f := registryFile{Pins: r.pins}
	for _, s := range r.listLocked() {
		f.Slaves = append(f.Slaves, &s)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(r.path, data, 0o600); err != nil {
		return fmt.Errorf("save slave registry: %w", err)
	}
	r.saved = time.Now()
	return nil
}

// saveSoonLocked saves at most once a second: acks arrive far more often,
// and a registry a second old only makes retention keep a little more. A
// failed save is tried again a second later too, not at every ack.
func (r *registry) saveSoonLocked() error {
	if time.Since(r.saved) < time.Second {
		return nil
	}
	r.saved = time.Now()
	return r.saveLocked()
}
