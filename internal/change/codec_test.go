package change

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleChanges() []Change {
	return []Change{
		{Op: Insert, Schema: "public", Table: "qrtz_triggers", Columns: []string{"a", "b", "c"},
			New: []Value{Text("1"), Null, Text("")}},
		{Op: Update, Schema: "public", Table: "t", Columns: []string{"id", "v"}, New: []Value{Text("2"), Text("\\x00ff")},
			KeyColumns: []string{"id"}, OldKey: []Value{Text("1")}},
		// A partial update (logical capture): the TOASTed columns were not sent.
		{Op: Update, Schema: "public", Table: "qrtz_job_details", Columns: []string{"id", "data", "note", "blob"},
			New:        []Value{Text("1"), UnchangedValue, Null, UnchangedValue},
			KeyColumns: []string{"id"}, OldKey: []Value{Text("1")}},
		{Op: Delete, Schema: "s", Table: "t", KeyColumns: []string{"id", "k"}, OldKey: []Value{Text("1"), Text("{1,2}")}},
		{Op: Truncate, Schema: "s", Table: "t"},
		{Op: Sequence, Schema: "s", Table: "t_id_seq", Columns: []string{"last_value"}, New: []Value{Text("42")}},
	}
}

func TestChangeRoundTrip(t *testing.T) {
	var buf []byte
	in := sampleChanges()
	for i := range in {
		buf = AppendChange(buf, &in[i])
	}
	for i := range in {
		got, rest, err := DecodeChange(buf)
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		// nil and empty slices are the same to us
		want := in[i]
		norm(&want)
		norm(&got)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("change %d: got %+v want %+v", i, got, want)
		}
		buf = rest
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left over", len(buf))
	}
}

func norm(c *Change) {
	if len(c.Columns) == 0 {
		c.Columns = nil
	}
	if len(c.New) == 0 {
		c.New = nil
	}
	if len(c.KeyColumns) == 0 {
		c.KeyColumns = nil
	}
	if len(c.OldKey) == 0 {
		c.OldKey = nil
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := TxnHeader{XID: 1<<40 + 7, CommitTime: time.UnixMicro(1700000000123456).UTC(), LSN: 99, Epoch: 1<<62 + 5}
	enc := AppendHeader(nil, h)
	got, rest, err := DecodeHeader(enc)
	if err != nil || len(rest) != 0 || got != h || len(enc) != HeaderSize {
		t.Fatalf("got %+v %v rest %d, size %d", got, err, len(rest), len(enc))
	}
	// The first encoding is the new one without the epoch.
	v1, rest, err := DecodeHeaderV1(enc[:HeaderSizeV1])
	if want := (TxnHeader{XID: h.XID, CommitTime: h.CommitTime, LSN: h.LSN}); err != nil || len(rest) != 0 || v1 != want {
		t.Fatalf("v1: got %+v %v rest %d", v1, err, len(rest))
	}
	for n := range HeaderSize {
		if _, _, err := DecodeHeader(enc[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("header prefix %d: want ErrCorrupt, got %v", n, err)
		}
	}
}

func TestDecodeRejectsTruncatedAndInvalid(t *testing.T) {
	c := sampleChanges()[1]
	enc := AppendChange(nil, &c)
	for n := 0; n < len(enc); n++ {
		if _, _, err := DecodeChange(enc[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix %d: want ErrCorrupt, got %v", n, err)
		}
	}
	bad := Change{Op: Update, Table: "t", Columns: []string{"a"}, New: []Value{Text("1")}}
	if _, _, err := DecodeChange(AppendChange(nil, &bad)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("update without key: want ErrCorrupt, got %v", err)
	}
}

func FuzzDecodeChange(f *testing.F) {
	for _, c := range sampleChanges() {
		f.Add(AppendChange(nil, &c))
	}
	f.Add([]byte{'I', 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := DecodeChange(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// A decoded change re-encodes to a prefix-equal encoding.
		again, _, err := DecodeChange(AppendChange(nil, &c))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		norm(&c)
		norm(&again)
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("not stable: %+v vs %+v", c, again)
		}
	})
}

// TestUnchangedEncoding: an unchanged value is the single tag byte 2, and
// survives a round trip distinct from NULL and from the empty string.
func TestUnchangedEncoding(t *testing.T) {
	vals := []Value{UnchangedValue, Null, Text("")}
	enc := appendValues(nil, vals)
	want := []byte{3, tagUnchanged, tagNull, tagText, 0}
	if !reflect.DeepEqual(enc, want) {
		t.Fatalf("encoded % x, want % x", enc, want)
	}
	d := decoder{buf: enc}
	got := d.values()
	if d.err != nil || len(d.buf) != 0 || !reflect.DeepEqual(got, vals) {
		t.Fatalf("decoded %v (err %v, %d bytes left), want %v", got, d.err, len(d.buf), vals)
	}
	if s := UnchangedValue.String(); s != "UNCHANGED" {
		t.Fatalf("String() = %q", s)
	}
}

func TestDecodeRejectsUnknownValueTag(t *testing.T) {
	c := Change{Op: Insert, Table: "t", Columns: []string{"a"}, New: []Value{Null}}
	enc := AppendChange(nil, &c)
	// The one value's tag comes third from the end, before the zero counts
	// of key columns and old key.
	i := len(enc) - 3
	if enc[i] != tagNull {
		t.Fatalf("layout changed: % x", enc)
	}
	enc[i] = 3
	if _, _, err := DecodeChange(enc); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("value tag 3: want ErrCorrupt, got %v", err)
	}
}

// TestUnchangedOnlyInUpdateNewImage: an unchanged value anywhere but in an
// update's new row, or one that also carries a value, is invalid, and
// corrupt when decoded.
func TestUnchangedOnlyInUpdateNewImage(t *testing.T) {
	cases := map[string]Change{
		"insert": {Op: Insert, Table: "t", Columns: []string{"id", "b"}, New: []Value{Text("1"), UnchangedValue}},
		"update old key": {Op: Update, Table: "t", Columns: []string{"id", "b"}, New: []Value{Text("1"), Text("x")},
			KeyColumns: []string{"id"}, OldKey: []Value{UnchangedValue}},
		"delete old key": {Op: Delete, Table: "t", KeyColumns: []string{"id", "b"}, OldKey: []Value{Text("1"), UnchangedValue}},
		"sequence":       {Op: Sequence, Table: "s", Columns: []string{"last_value"}, New: []Value{UnchangedValue}},
	}
	for name, c := range cases {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted a misplaced unchanged value", name)
		}
		if _, _, err := DecodeChange(AppendChange(nil, &c)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decode: want ErrCorrupt, got %v", name, err)
		}
	}
	// The encoding cannot express these; Validate still refuses them.
	for _, v := range []Value{{Unchanged: true, Null: true}, {Unchanged: true, Text: "x"}} {
		c := Change{Op: Update, Table: "t", Columns: []string{"id", "b"}, New: []Value{Text("1"), v},
			KeyColumns: []string{"id"}, OldKey: []Value{Text("1")}}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `"b"`) {
			t.Errorf("%+v: want an error naming column b, got %v", v, err)
		}
	}
}

func TestPartial(t *testing.T) {
	full := sampleChanges()[1]
	if full.Partial() {
		t.Fatal("a full update is not partial")
	}
	partial := sampleChanges()[2]
	if !partial.Partial() || partial.Validate() != nil {
		t.Fatalf("partial update: Partial %v, Validate %v", partial.Partial(), partial.Validate())
	}
}

// TestInternerSharesNamesOnly: changes decoded through one Interner share
// their column lists and names, decode to what DecodeChange gives, and a
// corrupt change still fails, whatever the interner holds.
func TestInternerSharesNamesOnly(t *testing.T) {
	a := Change{Op: Update, Schema: "public", Table: "job", Columns: []string{"id", "data"},
		New: []Value{Text("1"), Null}, KeyColumns: []string{"id"}, OldKey: []Value{Text("1")}}
	b := Change{Op: Insert, Schema: "public", Table: "job", Columns: []string{"id", "data"},
		New: []Value{Text("2"), Text("two")}}
	var in Interner
	var got []Change
	for _, c := range []Change{a, b, a} {
		enc := AppendChange(nil, &c)
		want, _, err := DecodeChange(enc)
		if err != nil {
			t.Fatal(err)
		}
		dec, rest, err := in.DecodeChange(enc)
		if err != nil || len(rest) != 0 {
			t.Fatalf("decode: %v, %d bytes left", err, len(rest))
		}
		if !reflect.DeepEqual(dec, want) || !reflect.DeepEqual(dec, c) {
			t.Fatalf("interned decode %+v, want %+v", dec, c)
		}
		got = append(got, dec)
	}
	if &got[0].Columns[0] != &got[1].Columns[0] || &got[0].KeyColumns[0] != &got[2].KeyColumns[0] {
		t.Error("the same column list decoded twice is not shared")
	}
	enc := AppendChange(nil, &a)
	if _, _, err := in.DecodeChange(enc[:len(enc)-3]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated change through the interner: %v, want ErrCorrupt", err)
	}
}
