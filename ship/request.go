package ship

// Request asks the master for something beside the stream (its verify
// checksums, or a backup), slave → master. Body is the request's
// arguments, JSON, defined by the caller.
type Request struct {
	ID   uint64
	Kind RequestKind
	Body []byte
}

// RequestKind is what a Request asks for; its Reply carries it back. On
// the wire it is a name: lower case letters, digits and '_'. A decoder
// accepts any name, so that the side that does not know a kind can say so.
type RequestKind string

const (
	// RequestVerify asks the master for the checksums of its tables in a
	// capture snapshot; the Reply's Body is the report.
	RequestVerify RequestKind = "verify"
	// RequestBackup, on a connection of PurposeBackup, asks the master for
	// a backup of its repository, sent as Stream frames.
	RequestBackup RequestKind = "backup"
	// On a connection of PurposeSwitchover: RequestSwitchover asks the
	// master to demote (its hook, no new writes, the final position; the
	// Reply's Body says which) and wait; RequestSwitchoverCommit says
	// that the slave took over, RequestSwitchoverAbort that it did not.
	RequestSwitchover       RequestKind = "switchover"
	RequestSwitchoverCommit RequestKind = "switchover_commit"
	RequestSwitchoverAbort  RequestKind = "switchover_abort"
)

// Reply answers the Request with the same ID, master → slave. A non-empty
// Error means the master could not do it; Body is the JSON result.
type Reply struct {
	ID    uint64
	Kind  RequestKind
	Error string
	Body  []byte
}

func (Request) frameType() frameType { return typeRequest }

func (m Request) encode(buf []byte) ([]byte, []byte) {
	buf = appendU64(buf, m.ID)
	return appendStr(buf, string(m.Kind)), m.Body
}

func decodeRequest(p []byte) (Request, error) {
	d := decoder{b: p}
	m := Request{ID: d.u64("request id"), Kind: RequestKind(d.str("request kind", maxStateLen))}
	m.Body = d.rest()
	if err := d.done("request"); err != nil {
		return Request{}, err
	}
	if !validState(string(m.Kind)) {
		return Request{}, protocolf("request: kind %q is not a name", m.Kind)
	}
	return m, nil
}

func (Reply) frameType() frameType { return typeReply }

func (m Reply) encode(buf []byte) ([]byte, []byte) {
	buf = appendU64(buf, m.ID)
	buf = appendStr(buf, string(m.Kind))
	return appendStr(buf, truncateText(m.Error)), m.Body
}

func decodeReply(p []byte) (Reply, error) {
	d := decoder{b: p}
	m := Reply{ID: d.u64("reply id"), Kind: RequestKind(d.str("reply kind", maxStateLen)), Error: d.str("reply error", maxTextLen)}
	m.Body = d.rest()
	if err := d.done("reply"); err != nil {
		return Reply{}, err
	}
	if !validState(string(m.Kind)) {
		return Reply{}, protocolf("reply: kind %q is not a name", m.Kind)
	}
	m.Error = cleanText(m.Error)
	return m, nil
}

// Stream carries bulk data answering the Request with the same ID (a
// backup file), master → slave, in order. End marks the last part; a
// failure midway is sent as a Reply with an Error instead.
type Stream struct {
	ID   uint64
	End  bool
	Data []byte
}

// StreamOverhead is what a Stream frame's payload adds to its Data.
const StreamOverhead = 9

func (Stream) frameType() frameType { return typeStream }

func (m Stream) encode(buf []byte) ([]byte, []byte) {
	buf = appendU64(buf, m.ID)
	var end byte
	if m.End {
		end = 1
	}
	return append(buf, end), m.Data
}

func decodeStream(p []byte) (Stream, error) {
	d := decoder{b: p}
	m := Stream{ID: d.u64("stream id")}
	end := d.u8("stream end")
	m.Data = d.rest()
	if err := d.done("stream"); err != nil {
		return Stream{}, err
	}
	if end > 1 {
		return Stream{}, protocolf("stream: bad end flag %d", end)
	}
	m.End = end == 1
	return m, nil
}
