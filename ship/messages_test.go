package ship

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func encodeFrame(m Message) frame {
	head, tail := m.encode(nil)
	return frame{typ: m.frameType(), payload: append(head, tail...)}
}

func sameMessage(a, b Message) bool {
	ha, ok1 := a.(Heartbeat)
	hb, ok2 := b.(Heartbeat)
	if ok1 && ok2 {
		return ha.Time.Equal(hb.Time) && ha.Position == hb.Position && ha.Applied == hb.Applied
	}
	ra, ok1 := a.(Records)
	rb, ok2 := b.(Records)
	if ok1 && ok2 {
		return ra.First == rb.First && ra.Last == rb.Last && ra.More == rb.More && bytes.Equal(ra.Data, rb.Data)
	}
	qa, ok1 := a.(Request)
	qb, ok2 := b.(Request)
	if ok1 && ok2 {
		return qa.ID == qb.ID && qa.Kind == qb.Kind && bytes.Equal(qa.Body, qb.Body)
	}
	pa, ok1 := a.(Reply)
	pb, ok2 := b.(Reply)
	if ok1 && ok2 {
		return pa.ID == pb.ID && pa.Kind == pb.Kind && pa.Error == pb.Error && bytes.Equal(pa.Body, pb.Body)
	}
	sa, ok1 := a.(Stream)
	sb, ok2 := b.(Stream)
	if ok1 && ok2 {
		return sa.ID == sb.ID && sa.End == sb.End && bytes.Equal(sa.Data, sb.Data)
	}
	return reflect.DeepEqual(a, b)
}

func sampleMessages() []Message {
	return []Message{
		Records{First: 10, Last: 12, Data: []byte("opaque spool bytes")},
		Records{First: 13, Last: 13, More: true, Data: bytes.Repeat([]byte{1}, 100000)},
		Records{First: 13, Last: 13},
		Heartbeat{Time: time.Unix(1700000000, 123456789), Position: 42, Applied: 40},
		Heartbeat{},
		Ack{Received: 99, Applied: 98},
		MasterStatus{State: StateMasterUnavailable, LastPosition: 7},
		MasterStatus{State: StateStreaming},
		MasterStatus{State: StateStreaming, LastPosition: 9, Sync: "degraded", SyncSince: 1764672000000, SyncSlaves: 1, Slaves: 2},
		RefuseBacklog("node02", 2_000_000_000, 1<<30),
		&RefusedError{Code: 999},
		Request{ID: 7, Kind: "verify", Body: []byte(`{"x":1}`)},
		Request{ID: 8, Kind: "verify"},
		Reply{ID: 7, Kind: "verify", Body: []byte(`{"tables":[]}`)},
		Reply{ID: 8, Kind: "verify", Error: "master repository unavailable"},
		Stream{ID: 9, Data: []byte("backup bytes")},
		Stream{ID: 9, End: true},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		got, err := decodeMessage(encodeFrame(m))
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !sameMessage(got, m) {
			t.Fatalf("%T: got %+v, want %+v", m, got, m)
		}
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	rec := encodeFrame(Records{First: 1, Last: 2})
	cases := map[string]frame{
		"records first after last": encodeFrame(Records{First: 3, Last: 2}),
		"records unknown flag":     {typ: typeRecords, payload: append(rec.payload[:16:16], 2)},
		"records truncated":        {typeRecords, rec.payload[:10]},
		"ack trailing bytes":       {typeAck, make([]byte, 17)},
		"heartbeat short":          {typeHeartbeat, make([]byte, 23)},
		"state empty":              encodeFrame(MasterStatus{}),
		"state with space":         encodeFrame(MasterStatus{State: "not ok"}),
		"sync state with space":    encodeFrame(MasterStatus{State: StateStreaming, Sync: "not ok"}),
		"sync fields truncated":    {typeMasterStatus, append(encodeFrame(MasterStatus{State: StateStreaming}).payload, 0, 2, 'o', 'n', 0)},
		"error truncated message":  {typeError, []byte{0, 4, 0, 9, 'a'}},
		"handshake frame":          {typeHello, nil},
		"unknown type":             {99, nil},
		"request bad kind":         encodeFrame(Request{ID: 1, Kind: "Bad Kind"}),
		"reply truncated":          {typeReply, []byte{0, 0, 0}},
	}
	for name, f := range cases {
		if _, err := decodeMessage(f); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: got %v, want a protocol error", name, err)
		}
	}
}

// Text from the peer ends up in logs and on terminals: it must stay on
// one line and be valid UTF-8.
func TestErrorMessageIsCleaned(t *testing.T) {
	f := encodeFrame(&RefusedError{Code: CodeNotReady, Message: "line1\nfake log line\x1b[31m\xff"})
	m, err := decodeMessage(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.(*RefusedError).Message; got != "line1?fake log line?[31m?" {
		t.Fatalf("got %q", got)
	}
	long := &RefusedError{Code: CodeNotReady, Message: strings.Repeat("é", maxTextLen)}
	m, err = decodeMessage(encodeFrame(long))
	if err != nil || len(m.(*RefusedError).Message) > maxTextLen {
		t.Fatalf("long message: %v", err)
	}
}

func TestRefusalMessages(t *testing.T) {
	const want = "slave node02 has 2000000000 bytes of changes to be processed since last disconnection, " +
		"which exceeds spool.max_backlog (1073741824 bytes) on the master; " +
		"run backup and restore (schedsync resync) to re-sync the slave"
	err := error(RefuseBacklog("node02", 2_000_000_000, 1<<30))
	if err.Error() != want {
		t.Fatalf("got  %q\nwant %q", err, want)
	}
	sentinels := map[error]*RefusedError{
		ErrNeedsResync:    RefuseBacklog("n", 1, 0),
		ErrSameRepository: RefuseSameRepository(masterID),
		ErrDuplicateName:  RefuseDuplicateName("n"),
		ErrNotReady:       RefuseNotReady("repository down"),
	}
	for sentinel, r := range sentinels {
		if !errors.Is(r, sentinel) {
			t.Errorf("%v does not match %v", r, sentinel)
		}
		if errors.Is(r, ErrAuth) {
			t.Errorf("%v matches ErrAuth", r)
		}
	}
	if got := versionMessage(1, 2); !strings.Contains(got, "version 1") || !strings.Contains(got, "version 2") ||
		!strings.HasSuffix(got, "upgrade schedsync on the slave") {
		t.Errorf("version message: %q", got)
	}
	if got := versionMessage(3, 2); !strings.HasSuffix(got, "upgrade schedsync on the master") {
		t.Errorf("version message: %q", got)
	}
}

// FuzzDecodeMessage: no panic on any frame; whatever decodes re-encodes to
// a frame that decodes to the same message.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		fr := encodeFrame(m)
		f.Add(append([]byte{byte(fr.typ)}, fr.payload...))
	}
	f.Add([]byte{byte(typeMasterStatus), 0xff, 0xff})
	f.Add([]byte{byte(typeError), 0, 1, 0, 3, 0xe2, 0x80, 0x8f})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		m, err := decodeMessage(frame{typ: frameType(data[0]), payload: data[1:]})
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error without ErrProtocol: %v", err)
			}
			return
		}
		again, err := decodeMessage(encodeFrame(m))
		if err != nil {
			t.Fatalf("re-encoded %T does not decode: %v", m, err)
		}
		if !sameMessage(m, again) {
			t.Fatalf("%T does not round-trip: %+v vs %+v", m, m, again)
		}
	})
}
