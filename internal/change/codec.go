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
	d := decoder{buf: buf}
	var c Change
	c.Op = Op(d.byte())
	c.Schema = d.string()
	c.Table = d.string()
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

func (d *decoder) strings() []string {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.string()
	}
	if d.err != nil {
		return nil
	}
	return ss
}

func (d *decoder) values() []Value {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	vs := make([]Value, n)
	for i := range vs {
		switch d.byte() {
		case tagNull:
			vs[i] = Null
		case tagText:
			vs[i] = Text(d.string())
		case tagUnchanged:
			vs[i] = UnchangedValue
		default:
			d.fail("bad value tag")
		}
	}
	if d.err != nil {
		return nil
	}
	return vs
}
