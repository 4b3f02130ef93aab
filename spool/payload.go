package spool

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/schedsync/schedsync/internal/change"
)

// The raw payload of the spool is a stream of items, cut into records only
// between items:
//
//	begin   'H' uint64 position, change.TxnHeader (32 bytes, with the epoch)
//	change  'C' uint32 length, change encoding (change.AppendChange)
//	end     'E' uint64 position, uint64 number of changes
//
// Spools written before capture epochs existed begin transactions with
// 'B' and a 24-byte header without the epoch; they are still read, with
// epoch 0, which no slave's data belongs to.
//
// Every transaction is a begin item, its changes and an end item; nothing
// lies between transactions. A transaction larger than a record spans
// several consecutive records; it is complete only once its end item is
// read, so a reader never mistakes a cut-off transaction for a whole one.
const (
	itemBegin   = 'H'
	itemBeginV1 = 'B'
	itemChange  = 'C'
	itemEnd     = 'E'

	beginItemSize      = 1 + 8 + change.HeaderSize
	beginItemSizeV1    = 1 + 8 + change.HeaderSizeV1
	endItemSize        = 1 + 8 + 8
	changeItemOverhead = 1 + 4

	// maxChangeSize is the largest change encoding accepted. A record is
	// written once it reaches RecordSize (at most 64 MiB), so with one
	// change this large on top it stays below maxRecordRaw.
	maxChangeSize = maxRecordRaw / 2
)

func appendBeginItem(buf []byte, pos uint64, h change.TxnHeader) []byte {
	buf = append(buf, itemBegin)
	buf = binary.BigEndian.AppendUint64(buf, pos)
	return change.AppendHeader(buf, h)
}

// appendChangeItem encodes c in place and patches its length in front, so
// the change is encoded once, straight into the record buffer.
func appendChangeItem(buf []byte, c *change.Change) ([]byte, error) {
	n := len(buf)
	buf = append(buf, itemChange, 0, 0, 0, 0)
	buf = change.AppendChange(buf, c)
	size := len(buf) - n - changeItemOverhead
	if size > maxChangeSize {
		return buf[:n], fmt.Errorf("change on %s is %d bytes encoded, more than the spool's limit of %d", c.Table, size, maxChangeSize)
	}
	binary.BigEndian.PutUint32(buf[n+1:], uint32(size))
	return buf, nil
}

func appendEndItem(buf []byte, pos, count uint64) []byte {
	buf = append(buf, itemEnd)
	buf = binary.BigEndian.AppendUint64(buf, pos)
	return binary.BigEndian.AppendUint64(buf, count)
}

type item struct {
	kind   byte
	pos    uint64           // begin, end
	header change.TxnHeader // begin
	count  uint64           // end
	body   []byte           // change: its encoding, aliasing the payload
}

// parseItem decodes the item at the front of raw and returns its size.
func parseItem(raw []byte) (item, int, error) {
	if len(raw) == 0 {
		return item{}, 0, errors.New("empty item")
	}
	it := item{kind: raw[0]}
	switch it.kind {
	case itemBegin, itemBeginV1:
		size, decode := beginItemSize, change.DecodeHeader
		if it.kind == itemBeginV1 {
			size, decode = beginItemSizeV1, change.DecodeHeaderV1
		}
		if len(raw) < size {
			return it, 0, errors.New("truncated begin item")
		}
		it.kind = itemBegin // one kind from here on
		it.pos = binary.BigEndian.Uint64(raw[1:])
		h, _, err := decode(raw[9:size])
		if err != nil {
			return it, 0, err
		}
		it.header = h
		return it, size, nil
	case itemChange:
		if len(raw) < changeItemOverhead {
			return it, 0, errors.New("truncated change item")
		}
		size := binary.BigEndian.Uint32(raw[1:])
		if uint64(size) > uint64(len(raw)-changeItemOverhead) {
			return it, 0, fmt.Errorf("change item of %d bytes runs past the record's %d", size, len(raw))
		}
		it.body = raw[changeItemOverhead : changeItemOverhead+int(size)]
		return it, changeItemOverhead + int(size), nil
	case itemEnd:
		if len(raw) < endItemSize {
			return it, 0, errors.New("truncated end item")
		}
		it.pos = binary.BigEndian.Uint64(raw[1:])
		it.count = binary.BigEndian.Uint64(raw[9:])
		return it, endItemSize, nil
	}
	return it, 0, fmt.Errorf("unknown item kind %#x", it.kind)
}

// decodeChangeItem decodes a change item's body, which must hold exactly
// one change, sharing names through in.
func decodeChangeItem(in *change.Interner, body []byte) (change.Change, error) {
	c, rest, err := in.DecodeChange(body)
	if err != nil {
		return c, err
	}
	if len(rest) != 0 {
		return c, fmt.Errorf("%w: %d stray bytes after the change", change.ErrCorrupt, len(rest))
	}
	return c, nil
}

// txnStream walks the items of consecutive records and checks that they
// tell one consistent story: positions strictly grow, transactions nest
// properly, and each record's header matches its items.
type txnStream struct {
	prev     uint64 // last begin position seen
	open     uint64 // transaction begun and not yet ended; 0 between transactions
	count    uint64 // changes seen in the open transaction
	counting bool   // false when the open transaction's begin was not seen
	aligned  bool   // a record was read since the stream was (re)positioned

	hdr    recordHeader
	raw    []byte
	rp     int
	recMax uint64 // highest position with items in the current record
}

// unalign forgets the stream state, as when records were skipped without
// being read: the next record may start in the middle of a transaction.
func (t *txnStream) unalign() {
	t.aligned, t.open, t.raw, t.rp = false, 0, nil, 0
}

// start begins a new record with payload raw.
func (t *txnStream) start(h recordHeader, raw []byte) error {
	switch {
	case !t.aligned && h.startsMid():
		// Entered mid-transaction after positioning: its beginning is behind
		// us, so it can only be skipped, never delivered.
		t.open, t.counting, t.prev = h.first, false, h.first
	case !t.aligned:
		t.open = 0
	case t.open != 0 && (!h.startsMid() || h.first != t.open):
		return fmt.Errorf("record starts at position %d but transaction %d is not finished", h.first, t.open)
	case t.open == 0 && (h.startsMid() || h.first <= t.prev):
		return fmt.Errorf("record starts at position %d, which does not follow %d", h.first, t.prev)
	}
	t.aligned, t.hdr, t.raw, t.rp = true, h, raw, 0
	t.recMax = 0
	if h.startsMid() {
		t.recMax = h.first
	}
	return nil
}

func (t *txnStream) more() bool { return t.rp < len(t.raw) }

// next returns the next item of the current record; more must be true.
func (t *txnStream) next() (item, error) {
	it, n, err := parseItem(t.raw[t.rp:])
	if err != nil {
		return it, err
	}
	switch it.kind {
	case itemBegin:
		switch {
		case t.open != 0:
			return it, fmt.Errorf("transaction %d begins inside transaction %d", it.pos, t.open)
		case it.pos <= t.prev:
			return it, fmt.Errorf("position %d does not follow %d", it.pos, t.prev)
		case it.pos < t.hdr.first || it.pos > t.hdr.last:
			return it, fmt.Errorf("position %d outside the record's range %d..%d", it.pos, t.hdr.first, t.hdr.last)
		}
		t.open, t.prev, t.count, t.counting, t.recMax = it.pos, it.pos, 0, true, it.pos
	case itemChange:
		if t.open == 0 {
			return it, errors.New("change outside a transaction")
		}
		t.count++
	case itemEnd:
		if it.pos != t.open {
			return it, fmt.Errorf("end of transaction %d while %d is open", it.pos, t.open)
		}
		if t.counting && it.count != t.count {
			return it, fmt.Errorf("transaction %d has %d changes but its end item says %d", it.pos, t.count, it.count)
		}
		t.open = 0
	}
	t.rp += n
	if t.rp == len(t.raw) {
		if t.recMax != t.hdr.last {
			return it, fmt.Errorf("record ends at position %d, header says %d", t.recMax, t.hdr.last)
		}
		if (t.open == 0) != t.hdr.endsTxn() {
			return it, errors.New("record's end-of-transaction flag does not match its items")
		}
	}
	return it, nil
}
