package ship

import (
	"time"
)

// Message is one message after the handshake: Records, Heartbeat, Ack,
// MasterStatus or *RefusedError. Conn.Send writes one; Conn.Receive returns
// the first four as values and a *RefusedError as its error.
type Message interface {
	frameType() frameType
	// encode appends the payload to buf and returns it as head. tail is
	// sent after head as it is, so that a Records batch is never copied.
	encode(buf []byte) (head, tail []byte)
}

// Records is a batch of spool records, master → slave. Data is opaque to
// the protocol: the spool defines its bytes. First and Last are the
// positions of the first and last source transaction in Data.
type Records struct {
	First, Last uint64
	// More says Data is cut short and continues in the next Records frame,
	// which carries the same First and Last: a spool record may be larger
	// than the slave's frame limit. The receiver joins the parts.
	More bool
	// Data, as Conn.Receive returns it, is valid until the next Receive
	// on the same connection, which reuses its storage.
	Data []byte
}

// RecordsOverhead is what a Records frame's payload adds to its Data: the
// most Data one frame can carry is the peer's MaxFrame minus this.
const RecordsOverhead = 17

const recordsMore = 1 // flag bit

func (Records) frameType() frameType { return typeRecords }

func (m Records) encode(buf []byte) ([]byte, []byte) {
	buf = appendU64(buf, m.First)
	buf = appendU64(buf, m.Last)
	var flags byte
	if m.More {
		flags |= recordsMore
	}
	return append(buf, flags), m.Data
}

func decodeRecords(p []byte) (Records, error) {
	d := decoder{b: p}
	m := Records{First: d.u64("records first"), Last: d.u64("records last")}
	flags := d.u8("records flags")
	m.Data = d.rest()
	if err := d.done("records"); err != nil {
		return Records{}, err
	}
	if flags&^recordsMore != 0 {
		return Records{}, protocolf("records: unknown flags %#x", flags)
	}
	m.More = flags&recordsMore != 0
	if m.First > m.Last {
		return Records{}, protocolf("records: first position %d after last %d", m.First, m.Last)
	}
	return m, nil
}

// Heartbeat says the sender is alive and where it is; both sides send one
// every sync.heartbeat, data or not.
type Heartbeat struct {
	Time time.Time // the sender's clock, for lag figures; zero means unknown
	// Position is the sender's latest position: the last captured on the
	// master, the last received (durable in the spool) on the slave.
	Position uint64
	// Applied is the slave's last applied position; 0 from the master.
	Applied uint64
}

func (Heartbeat) frameType() frameType { return typeHeartbeat }

func (m Heartbeat) encode(buf []byte) ([]byte, []byte) {
	var ns int64
	if !m.Time.IsZero() {
		ns = m.Time.UnixNano()
	}
	buf = appendU64(buf, uint64(ns))
	buf = appendU64(buf, m.Position)
	return appendU64(buf, m.Applied), nil
}

func decodeHeartbeat(p []byte) (Heartbeat, error) {
	d := decoder{b: p}
	ns := int64(d.u64("heartbeat time"))
	m := Heartbeat{Position: d.u64("heartbeat position"), Applied: d.u64("heartbeat applied")}
	if err := d.done("heartbeat"); err != nil {
		return Heartbeat{}, err
	}
	if ns != 0 {
		m.Time = time.Unix(0, ns)
	}
	return m, nil
}

// Ack is the slave's progress, slave → master: Received is durable in the
// slave's spool, Applied is committed in the slave's repository. The master
// keeps spool for a slave until it has applied it.
type Ack struct {
	Received, Applied uint64
}

func (Ack) frameType() frameType { return typeAck }

func (m Ack) encode(buf []byte) ([]byte, []byte) {
	buf = appendU64(buf, m.Received)
	return appendU64(buf, m.Applied), nil
}

func decodeAck(p []byte) (Ack, error) {
	d := decoder{b: p}
	m := Ack{Received: d.u64("ack received"), Applied: d.u64("ack applied")}
	return m, d.done("ack")
}

// States a master reports in MasterStatus; more may be added.
const (
	StateStreaming         = "streaming"
	StateMasterUnavailable = "master_unavailable" // e.g. its repository is down
)

const maxStateLen = 64

// MasterStatus is the master's own state, master → slave, so that a slave's
// status can show master_unavailable while the connection itself is fine.
type MasterStatus struct {
	State        string // lower case letters, digits and '_'
	LastPosition uint64 // the master's last captured position
	// Sync is the master's failover.synchronous state ("on", "degraded"),
	// empty when off; then the fields below are not sent, so that the
	// message stays what slaves before them read. SyncSince is when it
	// degraded (Unix milliseconds, 0 if it did not); SyncSlaves is
	// failover.synchronous_slaves and Slaves how many slaves the master
	// keeps changes for.
	Sync       string
	SyncSince  int64
	SyncSlaves uint16
	Slaves     uint16
}

func (MasterStatus) frameType() frameType { return typeMasterStatus }

func (m MasterStatus) encode(buf []byte) ([]byte, []byte) {
	buf = appendStr(buf, m.State)
	buf = appendU64(buf, m.LastPosition)
	if m.Sync != "" {
		buf = appendStr(buf, m.Sync)
		buf = appendU64(buf, uint64(m.SyncSince))
		buf = appendU16(buf, m.SyncSlaves)
		buf = appendU16(buf, m.Slaves)
	}
	return buf, nil
}

func decodeMasterStatus(p []byte) (MasterStatus, error) {
	d := decoder{b: p}
	m := MasterStatus{State: d.str("master status state", maxStateLen), LastPosition: d.u64("master status position")}
	if d.err == nil && len(d.b) > 0 {
		m.Sync = d.str("master status synchronous state", maxStateLen)
		m.SyncSince = int64(d.u64("master status degraded since"))
		m.SyncSlaves = d.u16("master status synchronous slaves")
		m.Slaves = d.u16("master status slaves")
	}
	if err := d.done("master status"); err != nil {
		return MasterStatus{}, err
	}
	if !validState(m.State) {
		return MasterStatus{}, protocolf("master status: state %q is not a state name", m.State)
	}
	if m.Sync != "" && !validState(m.Sync) {
		return MasterStatus{}, protocolf("master status: synchronous state %q is not a state name", m.Sync)
	}
	return m, nil
}

func validState(s string) bool {
	if s == "" || len(s) > maxStateLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// The Error frame: code uint16, message (uint16 length + UTF-8). Frozen
// across versions, since it carries the version mismatch refusal itself.

func (*RefusedError) frameType() frameType { return typeError }

func (e *RefusedError) encode(buf []byte) ([]byte, []byte) {
	buf = appendU16(buf, uint16(e.Code))
	return appendStr(buf, truncateText(e.Message)), nil
}

func decodeError(p []byte) (*RefusedError, error) {
	d := decoder{b: p}
	e := &RefusedError{Code: Code(d.u16("error code")), Message: d.str("error message", maxTextLen)}
	if err := d.done("error"); err != nil {
		return nil, err
	}
	e.Message = cleanText(e.Message)
	return e, nil
}

// decodeMessage decodes a frame received after the handshake. Handshake
// frame types are a protocol error here: they come once, in order.
func decodeMessage(f frame) (Message, error) {
	var (
		m   Message
		err error
	)
	switch f.typ {
	case typeRecords:
		m, err = decodeRecords(f.payload)
	case typeHeartbeat:
		m, err = decodeHeartbeat(f.payload)
	case typeAck:
		m, err = decodeAck(f.payload)
	case typeMasterStatus:
		m, err = decodeMasterStatus(f.payload)
	case typeError:
		m, err = decodeError(f.payload)
	case typeRequest:
		m, err = decodeRequest(f.payload)
	case typeReply:
		m, err = decodeReply(f.payload)
	case typeStream:
		m, err = decodeStream(f.payload)
	default:
		return nil, protocolf("unexpected %s after the handshake", f.typ)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}
