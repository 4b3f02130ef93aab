package ship

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"
)

// Payload fields are fixed-size big-endian integers and strings prefixed
// with a uint16 length. Every decoder consumes its whole payload: trailing
// bytes are an error, so that one message has one encoding.

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// appendStr appends a length-prefixed string; callers keep s under 64 KiB
// (names and messages are validated or truncated long before that).
func appendStr(b []byte, s string) []byte {
	b = appendU16(b, uint16(len(s)))
	return append(b, s...)
}

// decoder reads fields from one payload. The first problem sticks in err
// and turns every later read into a zero value, so a decode function reads
// all its fields and checks once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = protocolf(format, args...)
	}
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail("%s: truncated (need %d bytes, have %d)", what, n, len(d.b))
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u8(what string) uint8 {
	if b := d.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16(what string) uint16 {
	if b := d.take(2, what); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32(what string) uint32 {
	if b := d.take(4, what); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64(what string) uint64 {
	if b := d.take(8, what); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// str reads a length-prefixed string of at most max bytes. The length is
// checked against what is left before anything is copied.
func (d *decoder) str(what string, max int) string {
	n := int(d.u16(what))
	if d.err == nil && n > max {
		d.fail("%s: %d bytes, more than the limit of %d", what, n, max)
		return ""
	}
	return string(d.take(n, what))
}

// rest takes everything left. It aliases the frame's payload, which is
// never reused, so the message simply owns it.
func (d *decoder) rest() []byte {
	if d.err != nil {
		return nil
	}
	out := d.b
	d.b = nil
	return out
}

// done reports the first error, or trailing bytes after the last field.
func (d *decoder) done(what string) error {
	if d.err == nil && len(d.b) > 0 {
		d.fail("%s: %d unexpected trailing bytes", what, len(d.b))
	}
	return d.err
}

// maxNameLen matches node.name's limit in internal/config.
const maxNameLen = 64

// validName is node.name's rule (letters, digits, '.', '_', '-'), checked
// again here because the master uses a slave's name in log lines and spool
// file names and must not trust the config of the other end.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLen || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// maxTextLen bounds free text from the peer (messages, database names).
const maxTextLen = 4096

// cleanText makes text from the peer safe to print on one line: invalid
// UTF-8 and control characters (a forged newline could fake a log line)
// become '?'. The result is a fixed point, so decoding is stable.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}

// truncateText cuts s to at most maxTextLen bytes on a rune boundary.
func truncateText(s string) string {
	if len(s) <= maxTextLen {
		return s
	}
	cut := maxTextLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
