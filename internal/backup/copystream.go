package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
)

// rowCounter follows the structure of a raw COPY stream as it goes by, in
// pieces of any size, and counts its rows. It is how a backup's row counts
// are checked without a database, and how a damaged stream that still has
// the right checksum (a bug, not bit rot) would be caught.
type rowCounter interface {
	write(p []byte) error
	// count is the rows seen so far.
	count() int64
	// finish checks that the stream ended properly and returns the rows.
	finish() (int64, error)
}

func newRowCounter(format string, columns int) rowCounter {
	if format == formatText {
		return &textCounter{cols: columns}
	}
	return &binaryCounter{cols: columns, state: stHeader, need: binaryHeaderSize}
}

// binarySignature opens a COPY stream in binary format.
var binarySignature = []byte("PGCOPY\n\xff\r\n\x00")

const binaryHeaderSize = 11 + 4 + 4 // signature, flags, header extension length

const (
	stHeader   = iota // the fixed header
	stSkip            // skipping need bytes, then state next
	stCount           // a tuple's field count (int16), or the trailer -1
	stFieldLen        // a field's length (int32), -1 for NULL
	stTrailer         // after the trailer: nothing may follow
)

// binaryCounter parses COPY BINARY: header, then per tuple an int16 field
// count and per field an int32 length and its bytes, then the int16 -1
// trailer.
type binaryCounter struct {
	cols       int
	rows       int64
	state      int
	next       int // state after stSkip
	need       int // bytes to accumulate (fixed items) or skip
	acc        [binaryHeaderSize]byte
	nacc       int
	fieldsLeft int
	off        int64 // bytes consumed, for messages
}

func (c *binaryCounter) write(p []byte) error {
	for len(p) > 0 {
		if c.state == stTrailer {
			return fmt.Errorf("COPY stream has %d bytes after its trailer (at raw byte %d)", len(p), c.off)
		}
		if c.state == stSkip {
			k := min(c.need, len(p))
			p, c.need, c.off = p[k:], c.need-k, c.off+int64(k)
			if c.need == 0 {
				if err := c.enter(c.next); err != nil {
					return err
				}
			}
			continue
		}
		// Accumulate a fixed-size item.
		k := copy(c.acc[c.nacc:c.need], p)
		p, c.nacc, c.off = p[k:], c.nacc+k, c.off+int64(k)
		if c.nacc < c.need {
			return nil
		}
		c.nacc = 0
		if err := c.item(c.acc[:c.need]); err != nil {
			return err
		}
	}
	return nil
}

// item handles a complete fixed-size item of the current state.
func (c *binaryCounter) item(b []byte) error {
	switch c.state {
	case stHeader:
		if !bytes.Equal(b[:11], binarySignature) {
			return fmt.Errorf("COPY stream lacks the binary COPY signature")
		}
		if flags := binary.BigEndian.Uint32(b[11:15]); flags&(1<<16) != 0 {
			return fmt.Errorf("COPY stream has OIDs, which backups never hold")
		}
		ext := int32(binary.BigEndian.Uint32(b[15:19]))
		if ext < 0 {
			return fmt.Errorf("COPY stream header extension length %d", ext)
		}
		return c.skip(int(ext), stCount)
	case stCount:
		n := int16(binary.BigEndian.Uint16(b))
		if n == -1 {
			return c.enter(stTrailer)
		}
		if int(n) != c.cols {
			return fmt.Errorf("COPY stream row %d has %d fields, the table %d columns", c.rows+1, n, c.cols)
		}
		c.rows++
		c.fieldsLeft = int(n)
		return c.enter(stFieldLen)
	case stFieldLen:
		n := int32(binary.BigEndian.Uint32(b))
		if n < -1 {
			return fmt.Errorf("COPY stream row %d has a field of length %d", c.rows, n)
		}
		c.fieldsLeft--
		after := stFieldLen
		if c.fieldsLeft == 0 {
			after = stCount
		}
		if n == -1 {
			return c.enter(after)
		}
		return c.skip(int(n), after)
	}
	return fmt.Errorf("COPY stream parser in state %d", c.state)
}

func (c *binaryCounter) skip(n, then int) error {
	if n == 0 {
		return c.enter(then)
	}
	c.state, c.need, c.next = stSkip, n, then
	return nil
}

func (c *binaryCounter) enter(state int) error {
	c.state = state
	switch state {
	case stCount:
		c.need = 2
	case stFieldLen:
		c.need = 4
	}
	return nil
}

func (c *binaryCounter) count() int64 { return c.rows }

func (c *binaryCounter) finish() (int64, error) {
	if c.state != stTrailer {
		return c.rows, fmt.Errorf("COPY stream ends without its trailer (after %d rows, %d bytes)", c.rows, c.off)
	}
	return c.rows, nil
}

// textCounter checks COPY TEXT: one line per row, fields separated by
// tabs; tabs and newlines inside values are escaped, so the bytes count.
type textCounter struct {
	cols       int
	rows, tabs int64
	last       byte
}

func (c *textCounter) write(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	c.rows += int64(bytes.Count(p, []byte{'\n'}))
	c.tabs += int64(bytes.Count(p, []byte{'\t'}))
	c.last = p[len(p)-1]
	return nil
}

func (c *textCounter) count() int64 { return c.rows }

func (c *textCounter) finish() (int64, error) {
	if c.rows > 0 && c.last != '\n' || c.rows == 0 && c.last != 0 {
		return c.rows, fmt.Errorf("COPY stream ends in the middle of a row")
	}
	if c.tabs != c.rows*int64(c.cols-1) {
		return c.rows, fmt.Errorf("COPY stream has %d field separators for %d rows of %d columns", c.tabs, c.rows, c.cols)
	}
	return c.rows, nil
}

// tableSum is what a table's end frame says, computed from its raw COPY
// stream: the rows, the bytes and their SHA-256.
type tableSum struct {
	hdr     TableHeader
	sha     hash.Hash
	counter rowCounter
	bytes   int64
	end     TableEnd // set by finish's caller once the table is complete
}

func newTableSum(h TableHeader) *tableSum {
	return &tableSum{hdr: h, sha: sha256.New(), counter: newRowCounter(h.Format, len(h.Columns))}
}

func (s *tableSum) add(p []byte) error {
	s.sha.Write(p)
	s.bytes += int64(len(p))
	return s.counter.write(p)
}

func (s *tableSum) rows() int64 { return s.counter.count() }

func (s *tableSum) finish() (TableEnd, error) {
	rows, err := s.counter.finish()
	return TableEnd{Rows: rows, RawBytes: s.bytes, SHA256: hex.EncodeToString(s.sha.Sum(nil))}, err
}
