package ship

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func sampleHello() Hello {
	return Hello{Version: ProtocolVersion, Name: "node02", Identity: slaveID,
		Applied: 1, Received: 2, Epoch: 3, Generation: 4, MaxFrame: DefaultMaxFrame, Purpose: PurposeProbe, nonce: newNonce()}
}

func sampleWelcome() Welcome {
	return Welcome{Version: ProtocolVersion, Name: "node01", Identity: masterID,
		LastPosition: 9, StartAfter: 2, Epoch: 5, Generation: 6, Adopt: true, ForkEpoch: 7, ForkPosition: 8,
		Heartbeat: 5 * time.Second, MaxFrame: MaxFrameLimit,
		proof: computeProof(testToken, roleMaster, 1, nonce{}, nonce{}, "node02")}
}

// sameIdentity compares times by instant: decoding gives local time.
func sameIdentity(a, b Identity) bool {
	return a.SystemID == b.SystemID && a.DatabaseOID == b.DatabaseOID &&
		a.Database == b.Database && a.ServerStart.Equal(b.ServerStart)
}

func TestHelloWelcomeRoundTrip(t *testing.T) {
	h := sampleHello()
	got, err := decodeHello(h.encode(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !sameIdentity(got.Identity, h.Identity) {
		t.Fatalf("identity: got %+v, want %+v", got.Identity, h.Identity)
	}
	got.Identity, h.Identity = Identity{}, Identity{}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("hello: got %+v, want %+v", got, h)
	}

	w := sampleWelcome()
	gotW, err := decodeWelcome(w.encode(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !sameIdentity(gotW.Identity, w.Identity) {
		t.Fatalf("identity: got %+v, want %+v", gotW.Identity, w.Identity)
	}
	gotW.Identity, w.Identity = Identity{}, Identity{}
	if !reflect.DeepEqual(gotW, w) {
		t.Fatalf("welcome: got %+v, want %+v", gotW, w)
	}
}

// Any future version must be able to read the version of this one, and
// the reverse: it is the first field of Hello and Challenge.
func TestVersionComesFirst(t *testing.T) {
	h := sampleHello()
	h.Version = 7
	if v, ok := leadingVersion(h.encode(nil)); !ok || v != 7 {
		t.Fatalf("leadingVersion = %d, %v", v, ok)
	}
	if _, err := decodeHello(h.encode(nil)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("decodeHello of version 7: %v", err)
	}
	c := challenge{version: 7}
	if v, ok := leadingVersion(c.encode(nil)); !ok || v != 7 {
		t.Fatalf("challenge version = %d, %v", v, ok)
	}
	if _, ok := leadingVersion([]byte{1}); ok {
		t.Fatal("leadingVersion of one byte")
	}
}

func TestDecodeHelloRejects(t *testing.T) {
	bad := map[string]func(*Hello){
		"empty name":        func(h *Hello) { h.Name = "" },
		"path in name":      func(h *Hello) { h.Name = "../etc" },
		"newline in name":   func(h *Hello) { h.Name = "a\nb" },
		"frame limit small": func(h *Hello) { h.MaxFrame = 1024 },
		"frame limit large": func(h *Hello) { h.MaxFrame = MaxFrameLimit + 1 },
	}
	for name, mutate := range bad {
		h := sampleHello()
		mutate(&h)
		if _, err := decodeHello(h.encode(nil)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: got %v, want a protocol error", name, err)
		}
	}
	h := sampleHello()
	if _, err := decodeHello(append(h.encode(nil), 0)); !errors.Is(err, ErrProtocol) {
		t.Errorf("trailing byte: got %v", err)
	}
}

func TestSameDatabase(t *testing.T) {
	clone := masterID
	clone.ServerStart = masterID.ServerStart.Add(time.Hour) // pg_basebackup copy, another server
	unknownStart := masterID
	unknownStart.ServerStart = time.Time{}
	otherDB := masterID
	otherDB.DatabaseOID++
	cases := []struct {
		name string
		a, b Identity
		want bool
	}{
		{"same", masterID, masterID, true},
		{"start unknown on one side", masterID, unknownStart, true},
		{"physical clone", masterID, clone, false},
		{"other database", masterID, otherDB, false},
		{"other cluster", masterID, slaveID, false},
		{"both unknown", Identity{}, Identity{}, false},
	}
	for _, c := range cases {
		if got := c.a.SameDatabase(c.b); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// FuzzDecodeHello covers every handshake decoder, the frames a peer can
// send before it has authenticated. The first byte picks the decoder.
func FuzzDecodeHello(f *testing.F) {
	h, w := sampleHello(), sampleWelcome()
	c := challenge{version: ProtocolVersion, nonce: newNonce()}
	f.Add(append([]byte{0}, h.encode(nil)...))
	f.Add(append([]byte{1}, c.encode(nil)...))
	f.Add(append([]byte{2}, make([]byte, proofSize)...))
	f.Add(append([]byte{3}, w.encode(nil)...))
	f.Add(append([]byte{4}, RefuseNotReady("x").encodeHead()...))
	f.Add([]byte{0, 0, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		p := data[1:]
		var err error
		switch data[0] % 5 {
		case 0:
			var h Hello
			if h, err = decodeHello(p); err == nil {
				again, err2 := decodeHello(h.encode(nil))
				if err2 != nil || !sameIdentity(h.Identity, again.Identity) {
					t.Fatalf("hello identity does not round-trip: %v", err2)
				}
				h.Identity, again.Identity = Identity{}, Identity{}
				if !reflect.DeepEqual(h, again) {
					t.Fatalf("hello does not round-trip: %v", err2)
				}
			}
		case 1:
			var c challenge
			if c, err = decodeChallenge(p); err == nil {
				if again, err2 := decodeChallenge(c.encode(nil)); err2 != nil || again != c {
					t.Fatalf("challenge does not round-trip: %v", err2)
				}
			}
		case 2:
			_, err = decodeProof(p)
		case 3:
			var w Welcome
			if w, err = decodeWelcome(p); err == nil {
				again, err2 := decodeWelcome(w.encode(nil))
				if err2 != nil || !sameIdentity(w.Identity, again.Identity) {
					t.Fatalf("welcome identity does not round-trip: %v", err2)
				}
				w.Identity, again.Identity = Identity{}, Identity{}
				if !reflect.DeepEqual(w, again) {
					t.Fatalf("welcome does not round-trip: %v", err2)
				}
			}
		case 4:
			var e *RefusedError
			if e, err = decodeError(p); err == nil {
				if again, err2 := decodeError(e.encodeHead()); err2 != nil || *again != *e {
					t.Fatalf("error does not round-trip: %v", err2)
				}
			}
		}
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("error without ErrProtocol: %v", err)
		}
	})
}

func TestHelloPurpose(t *testing.T) {
	h := sampleHello()
	h.Purpose = PurposeBackup
	got, err := decodeHello(h.encode(nil))
	if err != nil || got.Purpose != PurposeBackup {
		t.Fatalf("backup purpose: %q %v", got.Purpose, err)
	}
	h.Purpose = "steal"
	if _, err := decodeHello(h.encode(nil)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("unknown purpose accepted: %v", err)
	}
}
