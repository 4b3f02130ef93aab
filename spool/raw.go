package spool

import (
	"context"
	"errors"
	"fmt"
)

// Record is one record as stored in a segment, for shipping to a slave
// without decompressing and recompressing it.
type Record struct {
	// First and Last are the positions of the transactions owning the
	// record's first and last items: a transaction larger than a record
	// spans several, so First may be a transaction begun in the record
	// before, and Last one that continues in the next.
	First, Last uint64
	// Data is the framed record, checksums included; it is valid until the
	// next call on the reader.
	Data []byte
}

// NextRecord waits for the next durable record holding transactions after
// the reader's position and returns it. Records come out exactly as stored,
// except the first one when it also holds transactions at or before the
// reader's position: it is cut to start at the first transaction after it,
// so that a slave never receives a transaction twice.
func (r *Reader) NextRecord(ctx context.Context) (Record, error) {
	if err := r.use(modeRecords); err != nil {
		return Record{}, err
	}
	for {
		h, err := r.nextHeader(ctx, true)
		if err != nil {
			return Record{}, r.fail(err)
		}
		if !r.shipped && h.last <= r.after {
			continue
		}
		if err := r.readBody(h); err != nil {
			return Record{}, r.fail(err)
		}
		if err := checkBody(h, r.frame[frameHeaderSize:]); err != nil {
			return Record{}, r.fail(r.corrupt(r.recOff, err))
		}
		if !r.shipped && h.first <= r.after {
			if err := r.trimRecord(h); err != nil {
				return Record{}, r.fail(err)
			}
			h, _ = parseRecordHeader(r.frame)
		} else if !r.shipped && h.startsMid() {
			return Record{}, r.fail(r.corrupt(r.recOff, fmt.Errorf("record continues transaction %d, whose beginning is missing", h.first)))
		}
		r.shipped = true
		return Record{First: h.first, Last: h.last, Data: r.frame}, nil
	}
}

// trimRecord replaces r.frame by a record holding only the items of the
// transactions after r.after.
func (r *Reader) trimRecord(h recordHeader) error {
	raw, err := decodeBody(h, r.frame[frameHeaderSize:], r.raw)
	r.raw = raw
	if err != nil {
		return r.corrupt(r.recOff, err)
	}
	var st txnStream
	if err := st.start(h, raw); err != nil {
		return r.corrupt(r.recOff, err)
	}
	for st.more() {
		at := st.rp
		it, err := st.next()
		if err != nil {
			return r.corrupt(r.recOff, err)
		}
		if it.kind == itemBegin && it.pos > r.after {
			nh := recordHeader{first: it.pos, last: h.last, flags: h.flags &^ flagStartsMid}
			r.frame = encodeRecord(r.frame, r.s.w.enc, raw[at:], nh)
			return nil
		}
	}
	return r.corrupt(r.recOff, fmt.Errorf("record ends at position %d but holds no transaction after %d", h.last, r.after))
}

// AppendRecord appends a record read with NextRecord on another spool (the
// master's), keeping its positions. The record's checksums are verified and
// its positions must follow the spool's: the first must be above
// LastPosition, or continue the transaction left open by the previous
// record. Bad bytes wrap ErrCorrupt, bad positions ErrOutOfOrder; in both
// cases nothing is written.
//
// Transactions become visible to LastPosition and readers once a record
// ending on a transaction boundary is appended (and synced). Until then,
// Rollback drops the unfinished records, for instance when the connection
// they came from broke.
func (s *Spool) AppendRecord(ctx context.Context, data []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.recordWritable(ctx); err != nil {
		return err
	}
	h, err := parseRecordHeader(data)
	if err == nil && int64(len(data)) != h.frameLen() {
		err = fmt.Errorf("record is %d bytes, its header says %d", len(data), h.frameLen())
	}
	if err == nil {
		err = checkBody(h, data[frameHeaderSize:])
	}
	if err != nil {
		return fmt.Errorf("append record: %w: %v", ErrCorrupt, err)
	}
	w := &s.w
	switch {
	case w.open != 0 && (!h.startsMid() || h.first != w.open):
		return fmt.Errorf("append record at position %d while transaction %d is unfinished: %w", h.first, w.open, ErrOutOfOrder)
	case w.open == 0 && h.startsMid():
		return fmt.Errorf("append record continuing transaction %d, which was not begun: %w", h.first, ErrOutOfOrder)
	case w.open == 0 && h.first <= w.last:
		return fmt.Errorf("append record at position %d after %d: %w", h.first, w.last, ErrOutOfOrder)
	}
	if err := s.flushBuf(); err != nil { // transactions from Append come first
		return err
	}
	if err := s.writeFrame(data, h); err != nil {
		return err
	}
	if !h.endsTxn() {
		w.open, w.openAt = h.last, -1
		return nil
	}
	w.open, w.last = 0, h.last
	s.mu.Lock()
	s.last = h.last
	s.mu.Unlock()
	return s.maybeRoll()
}

// recordWritable is writable for the calls that may come while a shipped
// transaction is still open (AppendRecord, Sync), and checks ctx.
func (s *Spool) recordWritable(ctx context.Context) error {
	if err := s.writable(); err != nil && !errors.Is(err, errRecordTxnOpen) {
		return err
	}
	return ctx.Err()
}

// Rollback drops the records of a transaction that AppendRecord began and
// did not finish. It does nothing if there is none.
func (s *Spool) Rollback(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); !errors.Is(err, errRecordTxnOpen) {
		return err
	}
	return s.abortTxn(nil)
}
