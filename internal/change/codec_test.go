package change

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func sampleChanges() []Change {
	return []Change{
		{Op: Insert, Schema: "public", Table: "qrtz_triggers", Columns: []string{"a", "b", "c"},
			New: []Value{Text("1"), Null, Text("")}},
		{Op: Update, Schema: "public", Table: "t", Columns: []string{"id", "v"}, New: []Value{Text("2"), Text("\\x00ff")},
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
	h := TxnHeader{XID: 1<<40 + 7, CommitTime: time.UnixMicro(1700000000123456).UTC(), LSN: 99}
	got, rest, err := DecodeHeader(AppendHeader(nil, h))
	if err != nil || len(rest) != 0 || got != h {
		t.Fatalf("got %+v %v rest %d", got, err, len(rest))
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
