package ship

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinels for the failures a caller must tell apart: errors.Is matches
// them on the *RefusedError a peer sent as well as on local failures.
var (
	// ErrAuth: one side could not prove it knows sync.token.
	ErrAuth = errors.New("authentication failed")
	// ErrVersion: master and slave speak different protocol versions.
	ErrVersion = errors.New("protocol version mismatch")
	// ErrSameRepository: master and slave point at the same database.
	ErrSameRepository = errors.New("same repository")
	// ErrNeedsResync: the master refused the slave for its backlog (over
	// spool.max_backlog) or its capture history; only a backup and
	// restore (schedsync resync) brings it back. It is the one sentinel
	// for this: the service records state needs_resync and the CLI exits 3.
	ErrNeedsResync = errors.New("slave needs a re-sync")
	// ErrDuplicateName: a slave with this node.name is already connected.
	ErrDuplicateName = errors.New("slave name already connected")
	// ErrNotReady: the master cannot serve slaves yet; try again later.
	ErrNotReady = errors.New("master not ready")
	// ErrTLSMismatch: one side uses TLS on the sync port and the other not.
	ErrTLSMismatch = errors.New("TLS mismatch")
	// ErrProtocol: the peer sent bytes that are not this protocol (a
	// malformed or oversized frame, an unexpected message).
	ErrProtocol = errors.New("protocol error")
	// ErrFenced: a node of a higher generation exists, so the master of a
	// lower one must not serve (it was replaced by a promotion), and a
	// node must not follow it.
	ErrFenced = errors.New("fenced")
)

// Code says why a peer refused to start or to go on. The numbers are part
// of the wire format.
type Code uint16

const (
	CodeAuth           Code = 1
	CodeVersion        Code = 2
	CodeSameRepository Code = 3
	CodeBacklog        Code = 4
	CodeDuplicateName  Code = 5
	CodeNotReady       Code = 6
	CodeTLSMismatch    Code = 7
	CodeProtocol       Code = 8
	CodeFenced         Code = 9
)

var codeSentinels = map[Code]error{
	CodeAuth:           ErrAuth,
	CodeVersion:        ErrVersion,
	CodeSameRepository: ErrSameRepository,
	CodeBacklog:        ErrNeedsResync,
	CodeDuplicateName:  ErrDuplicateName,
	CodeNotReady:       ErrNotReady,
	CodeTLSMismatch:    ErrTLSMismatch,
	CodeProtocol:       ErrProtocol,
	CodeFenced:         ErrFenced,
}

func (c Code) String() string {
	if err, ok := codeSentinels[c]; ok {
		return err.Error()
	}
	return "code " + strconv.Itoa(int(c))
}

// RefusedError is a refusal: the Error frame, sent in the handshake (the
// master refuses a slave) or later (the master disconnects a slave whose
// backlog grew too large, either side stops). The service returns one from
// ServerHandshake's decide callback or passes one to Conn.Send; the other
// side gets it back as an error. Message is one line meant for the
// operator and is shown as it is.
type RefusedError struct {
	Code    Code
	Message string
}

func (e *RefusedError) Error() string {
	if e.Message == "" {
		return "refused: " + e.Code.String()
	}
	return e.Message
}

// Is makes errors.Is(err, ErrNeedsResync) and the like work on a refusal.
func (e *RefusedError) Is(target error) bool {
	s, ok := codeSentinels[e.Code]
	return ok && s == target
}

// RefuseBacklog is the refusal, or disconnection, of a slave whose backlog
// exceeds spool.max_backlog. The message is the one docs/DESIGN.md specifies,
// word for word; the slave maps it to ErrNeedsResync (exit code 3).
func RefuseBacklog(slave string, backlog, maxBacklog uint64) *RefusedError {
	return &RefusedError{Code: CodeBacklog, Message: fmt.Sprintf(
		"slave %s has %d bytes of changes to be processed since last disconnection, "+
			"which exceeds spool.max_backlog (%d bytes) on the master; "+
			"run backup and restore (schedsync resync) to re-sync the slave",
		slave, backlog, maxBacklog)}
}

// RefuseHistory refuses a slave whose data belongs to another capture
// history than the changes it would stream: capture was uninstalled and
// installed again on the master (or the slave's data predates epochs),
// so changes made while nothing captured are missing from the slave and
// only a backup and restore brings it back. Like a backlog refusal it is
// ErrNeedsResync (exit code 3, resync.auto acts on it).
func RefuseHistory(slave string, slaveEpoch, masterEpoch, applied uint64) *RefusedError {
	const fix = "run backup and restore (schedsync resync) to re-sync the slave"
	if slaveEpoch == 0 && applied == 0 {
		return &RefusedError{Code: CodeBacklog, Message: fmt.Sprintf(
			"slave %s starts empty, but the master's changes from its first on do not all belong to one capture history "+
				"(they reach capture history %016x): capture was installed again on the master; %s", slave, masterEpoch, fix)}
	}
	what := fmt.Sprintf("holds data of capture history %016x", slaveEpoch)
	if slaveEpoch == 0 {
		what = "holds data of no known capture history (seeded or applied by an older schedsync)"
	}
	return &RefusedError{Code: CodeBacklog, Message: fmt.Sprintf(
		"slave %s %s, but the master's changes after its position %d belong to capture history %016x: "+
			"capture was installed again on the master, and what changed meanwhile was never captured; %s",
		slave, what, applied, masterEpoch, fix)}
}

// RefuseSameRepository refuses a slave whose repository is the master's.
func RefuseSameRepository(id Identity) *RefusedError {
	return &RefusedError{Code: CodeSameRepository, Message: fmt.Sprintf(
		"same repository: master and slave point at the same database %s; "+
			"a slave needs its own repository (check repository.url on the slave)", id)}
}

// RefuseDuplicateName refuses a second slave with a name already connected.
func RefuseDuplicateName(slave string) *RefusedError {
	return &RefusedError{Code: CodeDuplicateName, Message: fmt.Sprintf(
		"slave %s is already connected to this master; node.name must be unique "+
			"among the slaves of a master (if the old connection is dead, "+
			"the master drops it after two heartbeats)", slave)}
}

// RefuseNotReady tells a slave to come back later; reason says why, e.g.
// "the master's repository is unreachable".
func RefuseNotReady(reason string) *RefusedError {
	return &RefusedError{Code: CodeNotReady, Message: "master not ready: " + reason + "; the slave will retry"}
}

const (
	msgAuth = "authentication failed: sync.token differs between master and slave"
	// msgTLSRequired is what a plaintext slave reads from a TLS master.
	msgTLSRequired = "the master's sync port requires TLS; set tls.ca (and tls.cert/tls.key) on the slave"
	// msgNoTLS is sent to a TLS slave by a plaintext master; the slave's TLS
	// stack cannot read it, but tools such as tcpdump or nc can.
	msgNoTLS = "the master's sync port does not use TLS; remove tls.* from the slave config or configure TLS on the master"
)

// versionMessage names both versions and the side to upgrade: the older one.
func versionMessage(slave, master uint16) string {
	side := "slave"
	if master < slave {
		side = "master"
	}
	return fmt.Sprintf("protocol version mismatch: the slave speaks sync protocol version %d "+
		"and the master version %d; upgrade schedsync on the %s", slave, master, side)
}

// protocolf builds an error wrapping ErrProtocol.
func protocolf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// kindError is a local failure with its own message that errors.Is still
// matches to a sentinel, without the sentinel's text tacked onto it.
type kindError struct {
	kind  error
	msg   string
	cause error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }
func (e *kindError) Unwrap() error        { return e.cause }

// RefuseFenced refuses a peer because the master refusing it is of a
// lower generation than the peer has seen: a promotion replaced it.
func RefuseFenced(master string, generation, peerGeneration uint64) *RefusedError {
	return &RefusedError{Code: CodeFenced, Message: fmt.Sprintf(
		"master %s is fenced: its generation %d is lower than generation %d, which the connecting node has seen; it was replaced by a promotion and no longer serves",
		master, generation, peerGeneration)}
}
