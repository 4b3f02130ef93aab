package change

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// TxnHeader describes one source transaction.
type TxnHeader struct {
	// XID is the source transaction id (xid8 in trigger mode, the
	// transaction's xid in logical mode). Unique on one master; used to
	// recognise a transaction that was already spooled.
	XID uint64
	// CommitTime is when the transaction committed on the master (or when it
	// was captured, if the commit time is unknown). Drives lag figures.
	CommitTime time.Time
	// LSN is the commit LSN in logical mode, 0 in trigger mode.
	LSN uint64
	// Epoch names the capture history the transaction belongs to: the
	// epoch that `schedsync install` drew for the master's capture state.
	// A slave applies only transactions of the history its data comes
	// from; 0 is a transaction spooled before epochs existed.
	Epoch uint64
}

// Txn is a whole source transaction held in memory. Large transactions are
// passed as a TxnSource instead so that they are never held whole.
type Txn struct {
	TxnHeader
	Changes []Change
}

// TxnSource yields the changes of one transaction one at a time. Next returns
// io.EOF after the last change. The returned *Change is valid until the next
// call to Next.
type TxnSource interface {
	Header() TxnHeader
	Next() (*Change, error)
}

// Source returns a TxnSource over an in-memory transaction.
func (t *Txn) Source() TxnSource { return &sliceSource{t: t} }

type sliceSource struct {
	t *Txn
	i int
}

func (s *sliceSource) Header() TxnHeader { return s.t.TxnHeader }

func (s *sliceSource) Next() (*Change, error) {
	if s.i >= len(s.t.Changes) {
		return nil, io.EOF
	}
	s.i++
	return &s.t.Changes[s.i-1], nil
}

// ReadAll drains a TxnSource into memory. For tests and small transactions.
func ReadAll(src TxnSource) (*Txn, error) {
	t := &Txn{TxnHeader: src.Header()}
	for {
		c, err := src.Next()
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			return nil, err
		}
		t.Changes = append(t.Changes, cloneChange(c))
	}
}

func cloneChange(c *Change) Change {
	out := *c
	out.Columns = append([]string(nil), c.Columns...)
	out.New = append([]Value(nil), c.New...)
	out.KeyColumns = append([]string(nil), c.KeyColumns...)
	out.OldKey = append([]Value(nil), c.OldKey...)
	return out
}

// HeaderSize is the encoded size of a TxnHeader: XID, commit time, LSN
// and epoch. HeaderSizeV1 is the size of the first encoding, without the
// epoch, which spools written before epochs still hold.
const (
	HeaderSize   = 32
	HeaderSizeV1 = 24
)

// AppendHeader appends the fixed-size encoding of h.
func AppendHeader(buf []byte, h TxnHeader) []byte {
	buf = binary.BigEndian.AppendUint64(buf, h.XID)
	var micros int64
	if !h.CommitTime.IsZero() {
		micros = h.CommitTime.UnixMicro()
	}
	buf = binary.BigEndian.AppendUint64(buf, uint64(micros))
	buf = binary.BigEndian.AppendUint64(buf, h.LSN)
	return binary.BigEndian.AppendUint64(buf, h.Epoch)
}

// DecodeHeader decodes a header from the front of buf.
func DecodeHeader(buf []byte) (TxnHeader, []byte, error) {
	h, rest, err := DecodeHeaderV1(buf)
	if err != nil || len(rest) < HeaderSize-HeaderSizeV1 {
		return TxnHeader{}, nil, fmt.Errorf("%w: truncated transaction header", ErrCorrupt)
	}
	h.Epoch = binary.BigEndian.Uint64(rest)
	return h, rest[8:], nil
}

// DecodeHeaderV1 decodes a header of the first encoding, which has no
// epoch (Epoch is 0), from the front of buf.
func DecodeHeaderV1(buf []byte) (TxnHeader, []byte, error) {
	if len(buf) < HeaderSizeV1 {
		return TxnHeader{}, nil, fmt.Errorf("%w: truncated transaction header", ErrCorrupt)
	}
	h := TxnHeader{XID: binary.BigEndian.Uint64(buf), LSN: binary.BigEndian.Uint64(buf[16:])}
	if micros := int64(binary.BigEndian.Uint64(buf[8:])); micros != 0 {
		h.CommitTime = time.UnixMicro(micros).UTC()
	}
	return h, buf[HeaderSizeV1:], nil
}
