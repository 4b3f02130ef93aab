package ship

import (
	"fmt"
	"time"
)

// ProtocolVersion is the version of this wire protocol. Bump it for any
// change of a frame's layout; the handshake refuses a peer with another.
// Version 2 added the capture epoch to Hello and Welcome, and to the
// transactions the records carry; version 3 the generation to Hello and
// Welcome, the fork of a promoted master's history to Welcome, and the
// probe purpose.
const ProtocolVersion uint16 = 3

// Identity names a repository database: which PostgreSQL cluster, which
// database in it, and which run of the server, so that the master can tell
// a slave pointed at the master's own database from a physical clone of it
// (a clone made with pg_basebackup shares the system identifier and the
// database OID, but not the server's start time).
type Identity struct {
	SystemID    uint64    // pg_control_system().system_identifier
	DatabaseOID uint32    // the database's OID
	Database    string    // its name, for messages only
	ServerStart time.Time // pg_postmaster_start_time(); zero if unknown
}

// IsZero reports whether the identity is unknown.
func (id Identity) IsZero() bool { return id.SystemID == 0 && id.DatabaseOID == 0 }

// SameDatabase reports whether id and o are the very same database on the
// very same server. Unknown identities are never the same; a server start
// time is compared only when both sides know it.
func (id Identity) SameDatabase(o Identity) bool {
	if id.IsZero() || o.IsZero() || id.SystemID != o.SystemID || id.DatabaseOID != o.DatabaseOID {
		return false
	}
	if id.ServerStart.IsZero() || o.ServerStart.IsZero() {
		return true
	}
	return id.ServerStart.Equal(o.ServerStart)
}

func (id Identity) String() string {
	return fmt.Sprintf("%q (OID %d) of cluster %d", id.Database, id.DatabaseOID, id.SystemID)
}

func appendIdentity(b []byte, id Identity) []byte {
	b = appendU64(b, id.SystemID)
	b = appendU32(b, id.DatabaseOID)
	b = appendStr(b, id.Database)
	var us int64
	if !id.ServerStart.IsZero() {
		us = id.ServerStart.UnixMicro() // PostgreSQL's own resolution
	}
	return appendU64(b, uint64(us))
}

// maxDatabaseLen is generous: PostgreSQL names are at most 63 bytes.
const maxDatabaseLen = 255

func (d *decoder) identity(what string) Identity {
	id := Identity{
		SystemID:    d.u64(what + " system identifier"),
		DatabaseOID: d.u32(what + " database OID"),
		Database:    cleanText(d.str(what+" database name", maxDatabaseLen)),
	}
	if us := int64(d.u64(what + " server start")); us != 0 {
		id.ServerStart = time.UnixMicro(us)
	}
	return id
}

const nonceSize = 32

type nonce [nonceSize]byte

// proofSize is the size of an HMAC-SHA256.
const proofSize = 32

type proof [proofSize]byte

// Hello is the slave's first frame: who it is and what it has.
type Hello struct {
	Version  uint16   // the slave's ProtocolVersion
	Name     string   // the slave's node.name
	Identity Identity // the slave's repository
	Applied  uint64   // last position committed in the slave's repository
	Received uint64   // last position durable in the slave's spool
	// Epoch is the capture history of the slave's data (0: none yet, a
	// slave that starts empty).
	Epoch uint64
	// Generation is the highest generation the node has seen: a master
	// refuses to serve a node that has seen a higher one than its own,
	// and fences itself (see docs/DESIGN.md, Failover).
	Generation uint64
	MaxFrame   int // the largest frame the slave accepts
	// Purpose is what the connection is for: PurposeStream (the empty
	// string) to stream changes, PurposeBackup to fetch a backup, which
	// a slave refused for its backlog may still do.
	Purpose string
	nonce   nonce
}

// Connection purposes.
const (
	PurposeStream = ""
	PurposeBackup = "backup"
	// PurposeProbe asks only for the master's Welcome, for its
	// generation: a node that starts as master asks its failover.peers.
	PurposeProbe = "probe"
	// PurposeSwitchover carries a planned role swap: the slave asks the
	// master to demote, and then tells it whether it took over.
	PurposeSwitchover = "switchover"
)

func (h *Hello) encode(buf []byte) []byte {
	buf = appendU16(buf, h.Version) // first, frozen: see leadingVersion
	buf = appendStr(buf, h.Name)
	buf = append(buf, h.nonce[:]...)
	buf = appendIdentity(buf, h.Identity)
	buf = appendU64(buf, h.Applied)
	buf = appendU64(buf, h.Received)
	buf = appendU64(buf, h.Epoch)
	buf = appendU64(buf, h.Generation)
	buf = appendU32(buf, uint32(h.MaxFrame))
	return appendStr(buf, h.Purpose)
}

// leadingVersion reads only the version at the front of a Hello or a
// Challenge, which every version can read: a master can refuse a slave
// whose Hello it cannot parse, and a slave can name the master's version.
func leadingVersion(p []byte) (uint16, bool) {
	d := decoder{b: p}
	v := d.u16("hello version")
	return v, d.err == nil
}

func decodeHello(p []byte) (Hello, error) {
	d := decoder{b: p}
	h := Hello{Version: d.u16("hello version")}
	if d.err == nil && h.Version != ProtocolVersion {
		return Hello{}, protocolf("hello: version %d, expected %d", h.Version, ProtocolVersion)
	}
	h.Name = d.str("hello name", maxNameLen)
	copy(h.nonce[:], d.take(nonceSize, "hello nonce"))
	h.Identity = d.identity("hello")
	h.Applied = d.u64("hello applied")
	h.Received = d.u64("hello received")
	h.Epoch = d.u64("hello epoch")
	h.Generation = d.u64("hello generation")
	h.MaxFrame = int(d.u32("hello max frame"))
	h.Purpose = d.str("hello purpose", maxStateLen)
	if err := d.done("hello"); err != nil {
		return Hello{}, err
	}
	if !validName(h.Name) {
		return Hello{}, protocolf("hello: slave name %q is not a valid node.name", cleanText(h.Name))
	}
	if err := checkMaxFrame("hello", h.MaxFrame); err != nil {
		return Hello{}, err
	}
	if h.Purpose != PurposeStream && h.Purpose != PurposeBackup && h.Purpose != PurposeProbe && h.Purpose != PurposeSwitchover {
		return Hello{}, protocolf("hello: unknown purpose %q", cleanText(h.Purpose))
	}
	return h, nil
}

func checkMaxFrame(what string, n int) error {
	if n < minMaxFrame || n > MaxFrameLimit {
		return protocolf("%s: frame limit %d outside [%d, %d]", what, n, minMaxFrame, MaxFrameLimit)
	}
	return nil
}

// challenge is the master's answer to a Hello: its version and its nonce.
type challenge struct {
	version uint16
	nonce   nonce
}

func (c *challenge) encode(buf []byte) []byte {
	buf = appendU16(buf, c.version) // first, frozen
	return append(buf, c.nonce[:]...)
}

func decodeChallenge(p []byte) (challenge, error) {
	d := decoder{b: p}
	c := challenge{version: d.u16("challenge version")}
	if d.err == nil && c.version != ProtocolVersion {
		// clientRun checks the version first, to name both versions in
		// its error; this check keeps the decoder safe on its own.
		return challenge{version: c.version}, protocolf("challenge: version %d, expected %d", c.version, ProtocolVersion)
	}
	copy(c.nonce[:], d.take(nonceSize, "challenge nonce"))
	return c, d.done("challenge")
}

func decodeProof(p []byte) (proof, error) {
	d := decoder{b: p}
	var pr proof
	copy(pr[:], d.take(proofSize, "proof"))
	return pr, d.done("proof")
}

// Welcome is the master's acceptance: it proved it knows the token, and
// says where streaming starts.
type Welcome struct {
	Version  uint16
	Name     string   // the master's node.name
	Identity Identity // the master's repository
	// LastPosition is the master's last captured position when it
	// accepted the slave: the slave's lag is LastPosition minus Applied.
	LastPosition uint64
	// StartAfter is where streaming resumes: the first Records frame
	// starts after this position (normally the slave's Received).
	StartAfter uint64
	// Epoch is the master's current capture history (0 if not known yet).
	Epoch uint64
	// Generation is the master's generation: a slave refuses to follow a
	// master of a lower generation than it has seen.
	Generation uint64
	// Adopt, when set, tells the slave that its data ends exactly where
	// the master's history Epoch forked from the slave's (a promoted
	// master continues its old master's history from the position it had
	// applied): the slave takes Epoch as its data's history before it
	// applies what follows.
	Adopt bool
	// ForkEpoch and ForkPosition: a promoted master's capture history
	// continues history ForkEpoch after ForkPosition (both 0 for a first
	// master). Fail-back uses them to tell which of the old master's
	// transactions its successor never got.
	ForkEpoch    uint64
	ForkPosition uint64
	// Heartbeat is the master's sync.heartbeat. Both sides use it, so that
	// they agree when the other is dead (after twice this without a frame).
	Heartbeat time.Duration
	MaxFrame  int // the largest frame the master accepts
	proof     proof
}

func (w *Welcome) encode(buf []byte) []byte {
	buf = appendU16(buf, w.Version)
	buf = append(buf, w.proof[:]...)
	buf = appendStr(buf, w.Name)
	buf = appendIdentity(buf, w.Identity)
	buf = appendU64(buf, w.LastPosition)
	buf = appendU64(buf, w.StartAfter)
	buf = appendU64(buf, w.Epoch)
	buf = appendU64(buf, w.Generation)
	adopt := byte(0)
	if w.Adopt {
		adopt = 1
	}
	buf = append(buf, adopt)
	buf = appendU64(buf, w.ForkEpoch)
	buf = appendU64(buf, w.ForkPosition)
	buf = appendU32(buf, uint32(w.Heartbeat/time.Millisecond))
	return appendU32(buf, uint32(w.MaxFrame))
}

func decodeWelcome(p []byte) (Welcome, error) {
	d := decoder{b: p}
	w := Welcome{Version: d.u16("welcome version")}
	if d.err == nil && w.Version != ProtocolVersion {
		return Welcome{}, protocolf("welcome: version %d, expected %d", w.Version, ProtocolVersion)
	}
	copy(w.proof[:], d.take(proofSize, "welcome proof"))
	w.Name = d.str("welcome name", maxNameLen)
	w.Identity = d.identity("welcome")
	w.LastPosition = d.u64("welcome last position")
	w.StartAfter = d.u64("welcome start")
	w.Epoch = d.u64("welcome epoch")
	w.Generation = d.u64("welcome generation")
	switch d.u8("welcome adopt") {
	case 0:
	case 1:
		w.Adopt = true
	default:
		if d.err == nil {
			return Welcome{}, protocolf("welcome: adopt flag is not 0 or 1")
		}
	}
	w.ForkEpoch = d.u64("welcome fork epoch")
	w.ForkPosition = d.u64("welcome fork position")
	w.Heartbeat = time.Duration(d.u32("welcome heartbeat")) * time.Millisecond
	w.MaxFrame = int(d.u32("welcome max frame"))
	if err := d.done("welcome"); err != nil {
		return Welcome{}, err
	}
	if !validName(w.Name) {
		return Welcome{}, protocolf("welcome: master name %q is not a valid node.name", cleanText(w.Name))
	}
	if w.Heartbeat <= 0 {
		return Welcome{}, protocolf("welcome: heartbeat of 0 ms")
	}
	if err := checkMaxFrame("welcome", w.MaxFrame); err != nil {
		return Welcome{}, err
	}
	return w, nil
}
