// Package spool is the durable, ordered log of source transactions that sits
// between capture and the network on the master, and between the network and
// apply on the slave.
//
// It owns the segment files in its directory: their format (zstd-compressed
// records framed with a length and CRC32C checksums), their fsync
// discipline, crash recovery, and retention. Every transaction gets a
// position, a uint64 that only grows and survives restarts. Readers see only
// transactions that were synced, whole, in position order, each once, and
// can tail the spool live.
//
// The spool must never lose, reorder, duplicate or silently skip a
// transaction. Bad bytes anywhere but in a tail torn by a crash stop it with
// a *CorruptError naming the file and offset: it never skips them and never
// repairs them by guessing. It must never hold a whole transaction in memory
// either: large transactions stream through in records of about
// Options.RecordSize bytes, on the way in and on the way out.
package spool

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/schedsync/schedsync/internal/fsutil"
)

// Options configure a spool. Only Dir is required.
type Options struct {
	// Dir holds the segment files (and a lock file). Created if missing.
	Dir string
	// SegmentSize is the size at which the active segment is sealed and a
	// new one started, at the next transaction boundary: a transaction is
	// never split across segments, so one larger than this makes a larger
	// segment. Default 64 MiB.
	SegmentSize int64
	// RecordSize is the payload bytes gathered before they are compressed
	// into a record; larger records compress better, smaller ones bound
	// memory more tightly. Sync also ends a record. Default 256 KiB.
	RecordSize int
	// Level is the zstd level of new records. Default zstd.SpeedFastest.
	Level zstd.EncoderLevel
	// Logger receives recovery and retention events. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultSegmentSize = 64 << 20
	defaultRecordSize  = 256 << 10
	maxRecordSize      = 64 << 20
	lockName           = "spool.lock"
)

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, fmt.Errorf("spool directory not set")
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = defaultSegmentSize
	}
	if o.RecordSize == 0 {
		o.RecordSize = defaultRecordSize
	}
	if o.Level == 0 {
		o.Level = zstd.SpeedFastest
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.SegmentSize < 1<<10:
		return o, fmt.Errorf("spool segment size %d is below the minimum of 1 KiB", o.SegmentSize)
	case o.RecordSize < 1<<10 || o.RecordSize > maxRecordSize:
		return o, fmt.Errorf("spool record size %d is outside 1 KiB..64 MiB", o.RecordSize)
	case o.Level < zstd.SpeedFastest || o.Level > zstd.SpeedBestCompression:
		return o, fmt.Errorf("spool zstd level %d is not a valid level", o.Level)
	}
	return o, nil
}

// Spool is an open spool directory. One goroutine may append at a time
// (Append, AppendAt, AppendRecord, Sync and Rollback serialise on a mutex);
// any number of Readers may read concurrently.
type Spool struct {
	opts Options
	log  *slog.Logger
	lock *os.File

	syncMu sync.Mutex // serialises Sync calls, taken before wmu
	wmu    sync.Mutex // serialises writers; guards w
	w      writer

	mu      sync.Mutex // guards what follows and the mutable fields of segments
	segs    []*segment // oldest first; the last one is the active segment
	last    uint64     // last complete transaction appended
	durable uint64     // last complete transaction synced
	notify  chan struct{}
	closed  bool
}

// Open opens the spool in opts.Dir, creating it if needed, and recovers it
// from a crash: a tail torn in the middle of an append, and any transaction
// that was not completely written, are cut off (neither was ever reported
// durable). Any other damage is a *CorruptError wrapping ErrCorrupt.
func Open(opts Options) (*Spool, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{opts: opts, log: opts.Logger.With("stage", "spool", "dir", opts.Dir), lock: lock, notify: make(chan struct{})}
	if s.w.enc, err = newEncoder(opts.Level); err != nil {
		lock.Close()
		return nil, fmt.Errorf("create zstd encoder: %w", err)
	}
	if err := s.recover(); err != nil {
		if s.w.f != nil {
			s.w.f.Close()
		}
		lock.Close()
		return nil, err
	}
	return s, nil
}

// Close syncs what was appended, closes the files and wakes every waiting
// reader with ErrClosed. A transaction received with AppendRecord and not
// finished is not made visible; the next Open cuts it off.
func (s *Spool) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil
	}
	var err error
	if s.w.failed == nil {
		err = s.syncLocked()
	}
	if cerr := s.w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close segment: %w", cerr)
	}
	s.lock.Close() // releases the directory lock
	s.mu.Lock()
	s.closed = true
	close(s.notify)
	s.mu.Unlock()
	return err
}

func (s *Spool) path(name string) string { return filepath.Join(s.opts.Dir, name) }

// LastPosition is the position of the last complete transaction appended
// (0 if none). It may not be durable yet.
func (s *Spool) LastPosition() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// DurablePosition is the position of the last transaction that Sync made
// durable; readers see transactions up to it.
func (s *Spool) DurablePosition() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

// FirstPosition is the oldest retained position: every transaction at or
// after it is still in the spool, and NewReader accepts any position from
// FirstPosition()-1 on.
func (s *Spool) FirstPosition() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.segs[0].lo
}

// Size is the bytes written to the spool's segment files (the active
// one's write buffer excluded) and the number of segments, from memory.
func (s *Spool) Size() (bytes int64, segments int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		bytes += g.size
	}
	return bytes, len(s.segs)
}

// BytesAfter is the number of spool bytes on disk (compressed, framing
// and segment headers included) that a reader which has consumed pos
// still reads: every byte from the start of the first record holding any
// part of a transaction after pos to the end of what was written. It is
// exact at any size: the in-memory index finds the nearest transaction
// boundary before pos, and the record headers from there on (at most
// indexInterval bytes of file, one read) find the record. A record ends a
// sync, so a transaction synced on its own is counted exactly. A
// transaction still in the write buffer is not on disk and not counted.
func (s *Spool) BytesAfter(pos uint64) int64 {
	s.mu.Lock()
	bound, g, from, end := s.backlogBound(pos)
	if g == nil {
		s.mu.Unlock()
		return bound
	}
	size := g.size
	// Opened under s.mu, like NewReader: sealing renames the file under it.
	f, err := os.Open(s.path(g.name))
	s.mu.Unlock()
	if err != nil {
		return bound // deleted meanwhile by retention
	}
	off, ok := firstRecordAfter(f, from, size, pos)
	f.Close()
	if !ok {
		return bound // never undercount
	}
	s.mu.Lock()
	g.cache = bytesCache{valid: true, pos: pos, off: off}
	s.mu.Unlock()
	return g.bytesFrom(off, end)
}

// BacklogWithin reports whether BytesAfter(pos) is at most limit, and
// reads the spool only when the in-memory bound cannot tell: the master
// asks it at every ack of every slave.
func (s *Spool) BacklogWithin(pos uint64, limit int64) bool {
	s.mu.Lock()
	bound, _, _, _ := s.backlogBound(pos)
	s.mu.Unlock()
	return bound <= limit || s.BytesAfter(pos) <= limit
}

// backlogBound is BytesAfter(pos) without I/O, or a bound that is never
// less: counted from the nearest known record boundary (the index, or
// BytesAfter's last answer) at or before the first record after pos. When
// it is only a bound, it returns the segment and that boundary, from which
// BytesAfter reads on, and the spool-wide end of what was written. s.mu is
// held.
func (s *Spool) backlogBound(pos uint64) (bound int64, g *segment, from, end int64) {
	act := s.segs[len(s.segs)-1]
	end = act.start + act.size
	if pos >= s.last {
		return 0, nil, 0, end
	}
	i := s.segmentFor(pos)
	if i < 0 {
		return end - s.segs[0].start, nil, 0, end
	}
	g = s.segs[i]
	from = g.seek(pos)
	if c := g.cache; c.valid && c.pos <= pos && c.off > from {
		from = c.off
	}
	return g.bytesFrom(from, end), g, from, end
}

// bytesFrom is the spool bytes from offset off of g, a record boundary, to
// end (spool-wide): from the segment's start, header included, when off
// is its first record.
func (g *segment) bytesFrom(off, end int64) int64 {
	if off <= segHeaderSize {
		off = 0
	}
	return end - (g.start + off)
}

// firstRecordAfter walks the record headers of a segment from off, a
// record boundary, up to size, and returns the offset of the first record
// whose last position is after pos (size if none is). ok is false if a
// header cannot be read or fails its checksum: readers report that.
func firstRecordAfter(f *os.File, off, size int64, pos uint64) (int64, bool) {
	// Small reads: the records after a slave's position are mostly near
	// the end, and acks ask often.
	w := &window{r: f, size: 4 << 10}
	for off < size {
		if size-off < frameHeaderSize {
			return 0, false
		}
		b, err := w.read(off, frameHeaderSize)
		if err != nil {
			return 0, false
		}
		h, err := parseRecordHeader(b)
		if err != nil {
			return 0, false
		}
		if h.last > pos {
			return off, true
		}
		off += h.frameLen()
	}
	return size, true
}

// segmentFor returns the index of the segment that holds the transactions
// right after pos, or -1 if pos is before the oldest retained one. s.mu is
// held.
func (s *Spool) segmentFor(pos uint64) int {
	// The first segment starting beyond pos+1, minus one.
	return sort.Search(len(s.segs), func(i int) bool { return s.segs[i].lo-1 > pos }) - 1
}

// TruncateBefore deletes the sealed segments that hold only positions
// before pos: call it with one past the lowest position anyone still needs.
// It never deletes the active segment. Readers already reading a deleted
// segment finish it; new readers get ErrNotRetained for its positions.
func (s *Spool) TruncateBefore(pos uint64) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	n := 0
	for n < len(s.segs)-1 && s.segs[n].sealed && s.segs[n].hi < pos {
		n++
	}
	var names []string
	for _, g := range s.segs[:n] {
		names = append(names, g.name)
	}
	s.segs = slices.Delete(s.segs, 0, n)
	s.mu.Unlock()
	for _, name := range names {
		if err := os.Remove(s.path(name)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("delete segment: %w", err)
		}
	}
	if len(names) == 0 {
		return nil
	}
	s.log.Info("deleted spool segments", "count", len(names), "before", pos)
	return fsutil.SyncDir(s.opts.Dir)
}

// publish makes the active segment readable up to visible, holding
// transactions up to pos, and wakes waiting readers.
func (s *Spool) publish(visible int64, pos uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.w.seg
	if visible == g.visible && pos == s.durable {
		return
	}
	g.visible, s.durable = visible, pos
	close(s.notify)
	s.notify = make(chan struct{})
}
