package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/klauspost/compress/zstd"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/fsutil"
)

// writer is the appending side of the spool, touched only under Spool.wmu.
//
// Payload items gather in buf and are compressed into a record once buf
// reaches RecordSize, at Sync, and before a segment is sealed. A transaction
// that outgrows a record first pushes the complete transactions ahead of it
// into a record of their own, so that everything in the file after boundary
// belongs to the open transaction and aborting it is one truncate.
type writer struct {
	f        *os.File
	seg      *segment
	enc      *zstd.Encoder
	size     int64  // bytes written to f
	synced   int64  // bytes of f known durable
	boundary int64  // end of the last record that ends a transaction
	bpos     uint64 // last complete position at boundary

	buf      []byte // payload items not yet in a record
	bufFirst uint64 // position owning buf's first item
	bufMid   bool   // buf starts inside transaction bufFirst
	open     uint64 // transaction being appended, 0 if none
	openAt   int    // offset of open's begin item in buf, -1 once part of it is in the file
	count    uint64 // changes of open so far
	last     uint64 // last complete transaction appended
	frame    []byte // compressed record being written
	failed   error  // sticky: after a failed write or sync nothing more is written
}

// Append writes the transaction src yields, streaming its changes, and
// returns its position, one past LastPosition. It is not durable until Sync.
// If src fails or ctx ends midway, nothing of the transaction stays and the
// spool remains usable; if writing fails (a full disk), the spool refuses
// further writes until it is reopened.
func (s *Spool) Append(ctx context.Context, src change.TxnSource) (uint64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return 0, err
	}
	if s.w.last == math.MaxUint64 {
		return 0, errors.New("append transaction: positions exhausted")
	}
	pos := s.w.last + 1
	if err := s.appendTxn(ctx, pos, src); err != nil {
		return 0, err
	}
	return pos, nil
}

// AppendAt is Append at a position chosen by the caller, for a slave that
// keeps the master's positions. pos must be above LastPosition, or the
// error wraps ErrOutOfOrder.
func (s *Spool) AppendAt(ctx context.Context, pos uint64, src change.TxnSource) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if pos <= s.w.last {
		return fmt.Errorf("append transaction %d after %d: %w", pos, s.w.last, ErrOutOfOrder)
	}
	return s.appendTxn(ctx, pos, src)
}

// Sync makes everything appended so far durable and visible to readers. It
// returns once the data is on disk.
//
// The fdatasync runs without the writer lock: appends go on meanwhile (a
// slave receiving the next records while the last are synced, capture
// spooling the next transactions), and are covered by the next Sync. What
// it publishes is what was appended before it started.
func (s *Spool) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.wmu.Lock()
	if err := s.recordWritable(ctx); err != nil {
		s.wmu.Unlock()
		return err
	}
	w := &s.w
	if err := s.flushBuf(); err != nil {
		s.wmu.Unlock()
		return err
	}
	f, seg, size, boundary, bpos := w.f, w.seg, w.size, w.boundary, w.bpos
	if size <= w.synced {
		s.publish(boundary, bpos)
		s.wmu.Unlock()
		return nil
	}
	s.wmu.Unlock()
	err := fdatasync(f)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	switch {
	case s.isClosed():
		return ErrClosed // Close synced and published what there was
	case w.seg != seg && (err == nil || errors.Is(err, os.ErrClosed)):
		return nil // a roll synced, sealed and published the segment meanwhile
	case err != nil:
		// After a failed fsync the kernel may have dropped the dirty
		// pages: retrying could report data durable that is not.
		w.failed = err
		return fmt.Errorf("sync segment %s: %w", seg.name, err)
	}
	// Past boundary lies an open transaction, which an abort may cut and
	// rewrite: only what precedes it stays durable for sure.
	w.synced = max(w.synced, boundary)
	s.publish(boundary, bpos)
	return nil
}

// WriteErr is the write or sync error that stopped the spool's writes, or
// nil. Once set, nothing more is written until the spool is reopened
// (Open cuts what the failed write left).
func (s *Spool) WriteErr() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.w.failed
}

// isClosed reports whether Close ran.
func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

var errRecordTxnOpen = errors.New("a transaction received with AppendRecord is unfinished")

// writable reports why nothing can be written now. s.wmu is held.
func (s *Spool) writable() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case s.w.failed != nil:
		return fmt.Errorf("spool stopped by an earlier write error, reopen it: %w", s.w.failed)
	case s.w.open != 0:
		return errRecordTxnOpen
	}
	return nil
}

func (s *Spool) appendTxn(ctx context.Context, pos uint64, src change.TxnSource) error {
	w := &s.w
	if len(w.buf) == 0 {
		w.bufFirst, w.bufMid = pos, false
	}
	w.open, w.openAt, w.count = pos, len(w.buf), 0
	w.buf = appendBeginItem(w.buf, pos, src.Header())
	for {
		if w.count%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return s.abortTxn(fmt.Errorf("append transaction %d: %w", pos, err))
			}
		}
		c, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return s.abortTxn(fmt.Errorf("read transaction %d: %w", pos, err))
		}
		// A change that does not validate would not decode either, and
		// would stop every reader at this transaction.
		if err := c.Validate(); err != nil {
			return s.abortTxn(fmt.Errorf("append transaction %d: %w", pos, err))
		}
		if w.buf, err = appendChangeItem(w.buf, c); err != nil {
			return s.abortTxn(fmt.Errorf("append transaction %d: %w", pos, err))
		}
		w.count++
		if len(w.buf) >= s.opts.RecordSize {
			if err := s.spill(); err != nil {
				return err
			}
		}
	}
	w.buf = appendEndItem(w.buf, pos, w.count)
	w.open, w.last = 0, pos
	s.mu.Lock()
	s.last = pos
	s.mu.Unlock()
	if len(w.buf) >= s.opts.RecordSize {
		if err := s.flushBuf(); err != nil {
			return err
		}
	}
	return s.maybeRoll()
}

// spill writes buf out in the middle of transaction w.open.
func (s *Spool) spill() error {
	w := &s.w
	if w.openAt > 0 {
		if err := s.writeRecord(w.buf[:w.openAt], w.bufFirst, w.last, w.bufMid, true); err != nil {
			return err
		}
		n := copy(w.buf, w.buf[w.openAt:])
		w.buf, w.openAt, w.bufFirst, w.bufMid = w.buf[:n], 0, w.open, false
		if len(w.buf) < s.opts.RecordSize {
			return nil
		}
	}
	if err := s.writeRecord(w.buf, w.bufFirst, w.open, w.bufMid, false); err != nil {
		return err
	}
	w.buf, w.openAt, w.bufFirst, w.bufMid = w.buf[:0], -1, w.open, true
	return nil
}

// abortTxn removes every trace of the open transaction and returns err.
func (s *Spool) abortTxn(err error) error {
	w := &s.w
	if w.openAt >= 0 {
		w.buf = w.buf[:w.openAt]
	} else {
		w.buf = w.buf[:0] // after a spill buf holds only the open transaction
	}
	w.open, w.openAt = 0, -1
	if w.size > w.boundary {
		if terr := w.f.Truncate(w.boundary); terr != nil {
			w.failed = terr
			return errors.Join(err, fmt.Errorf("cut off unfinished transaction: %w", terr))
		}
		w.size, w.synced = w.boundary, min(w.synced, w.boundary)
		s.mu.Lock()
		w.seg.size = w.size
		s.mu.Unlock()
	}
	return err
}

// flushBuf writes buf, which ends on a transaction boundary, as a record.
func (s *Spool) flushBuf() error {
	w := &s.w
	if len(w.buf) == 0 {
		return nil
	}
	if err := s.writeRecord(w.buf, w.bufFirst, w.last, w.bufMid, true); err != nil {
		return err
	}
	w.buf = w.buf[:0]
	return nil
}

// writeRecord compresses raw into a record at the end of the active segment.
func (s *Spool) writeRecord(raw []byte, first, last uint64, mid, ends bool) error {
	h := recordHeader{first: first, last: last}
	if mid {
		h.flags |= flagStartsMid
	}
	if ends {
		h.flags |= flagEndsTxn
	}
	s.w.frame = encodeRecord(s.w.frame, s.w.enc, raw, h)
	return s.writeFrame(s.w.frame, h)
}

// writeFrame appends a framed record to the active segment.
func (s *Spool) writeFrame(frame []byte, h recordHeader) error {
	w := &s.w
	if _, err := w.f.WriteAt(frame, w.size); err != nil {
		// Part of the record may be in the file: only a reopen, which cuts
		// the torn tail, can make appending safe again.
		w.failed = err
		return fmt.Errorf("write segment %s: %w", w.seg.name, err)
	}
	w.size += int64(len(frame))
	if h.endsTxn() {
		w.boundary, w.bpos = w.size, h.last
	}
	s.mu.Lock()
	w.seg.size = w.size
	if h.endsTxn() {
		w.seg.hi = h.last
		w.seg.index = addBoundary(w.seg.index, h.last, w.size)
	}
	s.mu.Unlock()
	return nil
}

// syncLocked flushes buf, makes the active segment durable and publishes it
// to readers up to the last transaction boundary. s.wmu is held.
func (s *Spool) syncLocked() error {
	w := &s.w
	if err := s.flushBuf(); err != nil {
		return err
	}
	if w.size > w.synced {
		if err := fdatasync(w.f); err != nil {
			// After a failed fsync the kernel may have dropped the dirty
			// pages: retrying could report data durable that is not.
			w.failed = err
			return fmt.Errorf("sync segment %s: %w", w.seg.name, err)
		}
		w.synced = w.size
	}
	s.publish(w.boundary, w.bpos)
	return nil
}

// maybeRoll seals the active segment once it is full; it is called only on
// a transaction boundary.
func (s *Spool) maybeRoll() error {
	w := &s.w
	if w.size+int64(len(w.buf)) < s.opts.SegmentSize {
		return nil
	}
	if err := s.syncLocked(); err != nil {
		return err
	}
	old := w.seg
	lo := w.bpos + 1
	f, err := s.createSegment(lo)
	if err != nil {
		w.failed = err
		return err
	}
	sealed := sealedName(old.lo, w.bpos)
	g := &segment{lo: lo, hi: w.bpos, name: activeName(lo), start: old.start + w.size,
		size: segHeaderSize, visible: segHeaderSize}
	s.mu.Lock()
	// Rename under s.mu so that a reader opening the segment by name never
	// misses it.
	err = os.Rename(s.path(old.name), s.path(sealed))
	if err == nil {
		old.name, old.sealed, old.visible = sealed, true, w.size
		s.segs = append(s.segs, g)
		close(s.notify)
		s.notify = make(chan struct{})
	}
	s.mu.Unlock()
	if err == nil {
		err = fsutil.SyncDir(s.opts.Dir)
	}
	if err != nil {
		f.Close()
		w.failed = err
		return fmt.Errorf("seal segment %s: %w", old.name, err)
	}
	w.f.Close()
	w.f, w.seg = f, g
	w.size, w.synced, w.boundary = segHeaderSize, segHeaderSize, segHeaderSize
	return nil
}

// createSegment makes a new active segment starting at lo: written under a
// temporary name and synced before it is renamed into place, so that a
// segment file never has a partial header.
func (s *Spool) createSegment(lo uint64) (*os.File, error) {
	name := activeName(lo)
	a, err := fsutil.CreateAtomic(s.path(name), 0o640)
	if err != nil {
		return nil, fmt.Errorf("create segment %s: %w", name, err)
	}
	if _, err := a.Write(appendSegHeader(nil, lo)); err != nil {
		a.Abort()
		return nil, fmt.Errorf("create segment %s: %w", name, err)
	}
	if err := a.Commit(); err != nil {
		return nil, fmt.Errorf("create segment %s: %w", name, err)
	}
	// Reopened under its final name, which errors then show.
	f, err := os.OpenFile(s.path(name), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open segment %s: %w", name, err)
	}
	return f, nil
}
