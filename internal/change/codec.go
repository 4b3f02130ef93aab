package change

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt is wrapped by every decoding error: the bytes are not a valid
// encoding. Callers must stop, never skip.
var ErrCorrupt = errors.New("corrupt change encoding")

// The encoding of a Change:
//
//	op       byte
//	schema   uvarint length + bytes
//	table    uvarint length + bytes
//	columns  uvarint count, each uvarint length + bytes
//	new      uvarint count, each a value
//	keycols  uvarint count, each uvarint length + bytes
//	oldkey   uvarint count, each a value
//
// A value is a tag byte and what the tag calls for:
//
//	0  NULL       nothing
//	1  text       uvarint length + bytes
//	2  unchanged  nothing (the value was not sent; see Value.Unchanged)
//
// Any other tag is corrupt.

// Value tags.
const (
	tagNull      = 0
	tagText      = 1
	tagUnchanged = 2
)

// AppendChange appends the encoding of c to buf.
func AppendChange(buf []byte, c *Change) []byte {
	buf = append(buf, byte(c.Op))
	buf = appendString(buf, c.Schema)
	buf = appendString(buf, c.Table)
	buf = appendStrings(buf, c.Columns)
	buf = appendValues(buf, c.New)
	buf = appendStrings(buf, c.KeyColumns)
	buf = appendValues(buf, c.OldKey)
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendStrings(buf []byte, ss []string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(ss)))
	for _, s := range ss {
		buf = appendString(buf, s)
	}
	return buf
}

func appendValues(buf []byte, vs []Value) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(vs)))
	for _, v := range vs {
		switch {
		case v.Unchanged:
			buf = append(buf, tagUnchanged)
		case v.Null:
			buf = append(buf, tagNull)
		default:
			buf = append(buf, tagText)
			buf = appendString(buf, v.Text)
		}
	}
	return buf
}

// DecodeChange decodes one change from the front of buf and returns the rest.
// It validates the result; any malformed input gives an error wrapping
// ErrCorrupt. Memory allocated is bounded by len(buf).
func DecodeChange(buf []byte) (Change, []byte, error) {
	return decodeChange(buf, nil)
}

// Interner decodes changes sharing what repeats from one change to the
// next, the schema, table and column names: a stream of changes to a few
// tables then allocates little more than its values. The Columns and
// KeyColumns slices of the changes it returns are shared and must not be
// modified. The zero value is ready; it is not safe for concurrent use.
type Interner struct {
	names map[string]string
	lists map[string][]string
}

// internMax bounds an Interner's entries; past it, it starts afresh.
const internMax = 4096

// DecodeChange is DecodeChange, with names shared through in.
func (in *Interner) DecodeChange(buf []byte) (Change, []byte, error) {
	if in.names == nil || len(in.names)+len(in.lists) > internMax {
		in.names, in.lists = map[string]string{}, map[string][]string{}
	}
	return decodeChange(buf, in)
}

// decodeChange decodes through in, or sharing nothing if in is nil.
func decodeChange(buf []byte, in *Interner) (Change, []byte, error) {
	d := decoder{buf: buf, in: in}
	var c Change
	c.Op = Op(d.byte())
	c.Schema = d.name()
	c.Table = d.name()
	c.Columns = d.strings()
	c.New = d.values()
	c.KeyColumns = d.strings()
	c.OldKey = d.values()
	if d.err != nil {
		return Change{}, nil, d.err
	}
	if err := c.Validate(); err != nil {
		return Change{}, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return c, d.buf, nil
}

type decoder struct {
	buf []byte
	err error
	in  *Interner // nil: names are not shared
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) < 1 {
		d.fail("truncated")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

// uvarint reads a length or count that must fit in what is left of the
// buffer, each element taking at least min bytes: this is what bounds
// allocation on hostile input.
func (d *decoder) count(min int) int {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint(d.buf)
	if k <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.buf = d.buf[k:]
	if n > uint64(len(d.buf)/min) {
		d.fail(fmt.Sprintf("length %d exceeds the %d bytes left", n, len(d.buf)))
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.count(1)
	if d.err != nil {
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

// name reads a string through the interner: the map lookup with a
// converted key does not allocate.
func (d *decoder) name() string {
	n := d.count(1)
	if d.err != nil {
		return ""
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	if d.in == nil {
		return string(b)
	}
	if s, ok := d.in.names[string(b)]; ok {
		return s
	}
	s := string(b)
	d.in.names[s] = s
	return s
}

// strings reads a list of names; a list seen before, byte for byte, is
// the same slice, and costs no allocation.
func (d *decoder) strings() []string {
	start := d.buf
	n := d.count(1)
	if n == 0 {
		return nil
	}
	names := d.buf
	for range n {
		d.buf = d.buf[d.count(1):]
		if d.err != nil {
			return nil
		}
	}
	raw := start[:len(start)-len(d.buf)]
	if d.in != nil {
		if shared, ok := d.in.lists[string(raw)]; ok {
			return shared
		}
	}
	after := d.buf
	d.buf = names
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.name()
	}
	d.buf = after
	if d.in != nil {
		d.in.lists[string(raw)] = ss
	}
	return ss
}

// values reads a list of values. Their texts are cut from one string of
// the list's bytes: one allocation for the list, not one per value. The
// first pass checks the list and finds its end, the second cuts.
func (d *decoder) values() []Value {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	region := d.buf
	for range n {
		switch d.byte() {
		case tagNull, tagUnchanged:
		case tagText:
			d.buf = d.buf[d.count(1):]
		default:
			d.fail("bad value tag")
		}
	}
	if d.err != nil {
		return nil
	}
	all := string(region[:len(region)-len(d.buf)])
	vs := make([]Value, n)
	at := 0
	for i := range vs {
		tag := all[at]
		at++
		switch tag {
		case tagNull:
			vs[i] = Null
		case tagUnchanged:
			vs[i] = UnchangedValue
		default:
			l, k := uvarint(all[at:])
			at += k
			vs[i] = Text(all[at : at+int(l)])
			at += int(l)
		}
	}
	return vs
}

// uvarint is binary.Uvarint over a string the first pass of values
// already checked.
func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x80 {
			return x | uint64(b)<<shift, i + 1
		}
		x |= uint64(b&0x7f) << shift
		shift += 7
	}
	return 0, 0
}
