package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/schedsync/schedsync/internal/change"
)

// Reader streams the transactions after a position, in order, each once,
// waiting for new ones as they are synced. It reads only what Sync (or
// sealing a segment) made durable, up to a transaction boundary, so it never
// delivers a transaction that could vanish in a crash or that is not whole.
//
// A Reader is used by one goroutine. Use either Next or NextRecord on it,
// not both.
type Reader struct {
	s     *Spool
	after uint64 // transactions at or before it are not delivered
	mode  readMode

	seg    *segment
	f      *os.File
	off    int64  // offset of the next record in f
	recOff int64  // offset of the current record, for errors
	frame  []byte // the current record as stored: header and body
	raw    []byte // its decompressed payload
	st     txnStream

	cur     change.Change
	names   change.Interner // shares the names of the changes decoded
	src     *txnSource
	shipped bool // NextRecord returned a record: later ones go out as stored
	err     error
	closed  bool
}

type readMode int

const (
	modeUnset readMode = iota
	modeTxns
	modeRecords
)

// NewReader returns a reader of the transactions with positions above pos.
// pos may be beyond LastPosition: the reader then waits for those. If
// transactions above pos were already deleted, the error wraps
// ErrNotRetained.
func (s *Spool) NewReader(pos uint64) (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	i := s.segmentFor(pos)
	if i < 0 {
		return nil, fmt.Errorf("read spool after position %d: oldest retained is %d: %w", pos, s.segs[0].lo, ErrNotRetained)
	}
	g := s.segs[i]
	f, err := os.Open(s.path(g.name)) // under s.mu: a rename cannot slip in
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	return &Reader{s: s, after: pos, seg: g, f: f, off: g.seek(pos)}, nil
}

// Next waits until the transaction after the last one returned is durable
// and returns its position and its changes. The TxnSource streams the
// changes from disk and is valid until the next call to Next; whatever the
// caller did not read of it is skipped. Next returns ctx's error if ctx ends
// first, ErrClosed once the spool is closed, and a *CorruptError on bad data
// (after which the reader only returns that error).
func (r *Reader) Next(ctx context.Context) (uint64, change.TxnSource, error) {
	if err := r.use(modeTxns); err != nil {
		return 0, nil, err
	}
	if r.src != nil {
		r.src.stale, r.src = true, nil
	}
	for {
		if !r.st.more() {
			// Wait only between transactions: inside one, the rest is
			// already durable.
			if err := r.loadRecord(ctx, r.st.open == 0); err != nil {
				return 0, nil, r.fail(err)
			}
			continue
		}
		it, err := r.st.next()
		if err != nil {
			return 0, nil, r.fail(r.corrupt(r.recOff, err))
		}
		if it.kind == itemBegin && it.pos > r.after {
			r.src = &txnSource{r: r, pos: it.pos, header: it.header}
			return it.pos, r.src, nil
		}
		// Items of a transaction at or before r.after, or of one the
		// caller did not read to the end.
	}
}

// Close releases the reader's file.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.f.Close()
}

func (r *Reader) use(m readMode) error {
	switch {
	case r.closed:
		return ErrClosed
	case r.err != nil:
		return r.err
	case r.mode != modeUnset && r.mode != m:
		return errors.New("spool reader: Next and NextRecord cannot be mixed")
	}
	r.mode = m
	return nil
}

// fail makes err sticky unless it only says that waiting was cut short.
func (r *Reader) fail(err error) error {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrClosed) {
		r.err = err
	}
	return err
}

func (r *Reader) corrupt(off int64, err error) error {
	r.s.mu.Lock()
	name := r.seg.name
	r.s.mu.Unlock()
	ce := &CorruptError{File: r.s.path(name), Offset: off, Reason: err.Error()}
	if errors.Is(err, change.ErrCorrupt) {
		ce.Reason, ce.Err = "bad change in record", err
	}
	return ce
}

// loadRecord reads the next record and starts walking its items.
func (r *Reader) loadRecord(ctx context.Context, wait bool) error {
	for {
		h, err := r.nextHeader(ctx, wait)
		if err != nil {
			return err
		}
		if h.last <= r.after {
			// Nothing in it is wanted: not even decompressed.
			r.st.unalign()
			continue
		}
		if err := r.readBody(h); err != nil {
			return err
		}
		raw, err := decodeBody(h, r.frame[frameHeaderSize:], r.raw)
		r.raw = raw
		if err != nil {
			return r.corrupt(r.recOff, err)
		}
		if !r.st.aligned && h.startsMid() && h.first > r.after {
			return r.corrupt(r.recOff, fmt.Errorf("record continues transaction %d, whose beginning is missing", h.first))
		}
		if err := r.st.start(h, raw); err != nil {
			return r.corrupt(r.recOff, err)
		}
		return nil
	}
}

// nextHeader waits for the next visible record, moving on to the next
// segment at the end of a sealed one, and reads the record's header.
func (r *Reader) nextHeader(ctx context.Context, wait bool) (recordHeader, error) {
	for {
		s := r.s
		s.mu.Lock()
		g := r.seg
		visible, closed, notify := g.visible, s.closed, s.notify
		var moved bool
		var err error
		if r.off >= visible && g.sealed && !closed {
			moved, err = r.nextSegment()
		}
		s.mu.Unlock()
		switch {
		case closed:
			return recordHeader{}, ErrClosed
		case err != nil:
			return recordHeader{}, err
		case moved:
			if err := r.checkSegment(); err != nil {
				return recordHeader{}, err
			}
			continue
		case r.off < visible:
			return r.readHeader(visible)
		case !wait:
			return recordHeader{}, r.corrupt(r.off, fmt.Errorf("transaction %d is cut off at the end of the durable data", r.st.open))
		}
		select {
		case <-ctx.Done():
			return recordHeader{}, ctx.Err()
		case <-notify:
		}
	}
}

// nextSegment switches to the segment after the current, sealed one if it
// exists yet. s.mu is held, so the file cannot be renamed under us.
func (r *Reader) nextSegment() (bool, error) {
	s, g := r.s, r.seg
	i := s.segmentFor(g.hi)
	if i < 0 {
		return false, fmt.Errorf("read spool after position %d: oldest retained is %d: %w", g.hi, s.segs[0].lo, ErrNotRetained)
	}
	next := s.segs[i]
	if next == g || next.lo != g.hi+1 {
		return false, nil // not created yet
	}
	f, err := os.Open(s.path(next.name))
	if err != nil {
		return false, fmt.Errorf("open segment: %w", err)
	}
	r.f.Close()
	r.f, r.seg, r.off = f, next, segHeaderSize
	return true, nil
}

// checkSegment checks the header of the segment just switched to.
func (r *Reader) checkSegment() error {
	var b [segHeaderSize]byte
	if _, err := r.f.ReadAt(b[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read segment %s: %w", r.f.Name(), err)
	}
	st, err := r.f.Stat()
	if err != nil {
		return fmt.Errorf("stat segment: %w", err)
	}
	return checkSegHeader(b[:], st.Size(), r.f.Name(), r.seg.lo)
}

func (r *Reader) readHeader(visible int64) (recordHeader, error) {
	if visible-r.off < frameHeaderSize {
		return recordHeader{}, r.corrupt(r.off, errors.New("record header runs past the durable data"))
	}
	r.frame = grow(r.frame, frameHeaderSize)
	if _, err := r.f.ReadAt(r.frame, r.off); err != nil {
		return recordHeader{}, fmt.Errorf("read segment %s: %w", r.f.Name(), err)
	}
	h, err := parseRecordHeader(r.frame)
	if err != nil {
		return h, r.corrupt(r.off, err)
	}
	if r.off+h.frameLen() > visible {
		return h, r.corrupt(r.off, fmt.Errorf("record of %d bytes runs past the durable data", h.frameLen()))
	}
	r.recOff = r.off
	r.off += h.frameLen()
	return h, nil
}

// readBody reads the body of the record whose header was just read, after
// the header in r.frame.
func (r *Reader) readBody(h recordHeader) error {
	r.frame = grow(r.frame, int(h.frameLen()))
	if _, err := r.f.ReadAt(r.frame[frameHeaderSize:], r.recOff+frameHeaderSize); err != nil {
		return fmt.Errorf("read segment %s: %w", r.f.Name(), err)
	}
	return nil
}

// grow returns b resized to n bytes, keeping its first bytes.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		nb := make([]byte, n, max(n, 2*cap(b)))
		copy(nb, b)
		return nb
	}
	return b[:n]
}

// txnSource streams one transaction's changes out of the reader.
type txnSource struct {
	r      *Reader
	pos    uint64
	header change.TxnHeader
	done   bool
	stale  bool
}

func (t *txnSource) Header() change.TxnHeader { return t.header }

// Next returns the next change, valid until the next call, or io.EOF after
// the last one.
func (t *txnSource) Next() (*change.Change, error) {
	r := t.r
	switch {
	case t.done:
		return nil, io.EOF
	case t.stale:
		return nil, fmt.Errorf("read transaction %d: source used after Reader.Next", t.pos)
	}
	if err := r.use(modeTxns); err != nil {
		return nil, err
	}
	for !r.st.more() {
		if err := r.loadRecord(context.Background(), false); err != nil {
			return nil, r.fail(err)
		}
	}
	it, err := r.st.next()
	if err != nil {
		return nil, r.fail(r.corrupt(r.recOff, err))
	}
	if it.kind == itemEnd {
		t.done = true
		return nil, io.EOF
	}
	c, err := decodeChangeItem(&r.names, it.body)
	if err != nil {
		return nil, r.fail(r.corrupt(r.recOff, err))
	}
	r.cur = c
	return &r.cur, nil
}
