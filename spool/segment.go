package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/schedsync/schedsync/internal/fsutil"
)

// A segment file is a header followed by records. Its name gives its range
// of positions in zero-padded hex, so that lexical order is log order:
//
//	00000000000003e9.seg                    active: positions from 0x3e9 on
//	0000000000000001-00000000000003e8.seg   sealed: positions 0x1..0x3e8
//
// The lower bound of a segment is one past the upper bound of the one before
// it, even when (on a slave, whose positions come from the master) the first
// transaction in it has a higher position, so a missing file shows as a gap.
// A segment only ever ends on a transaction boundary; sealed segments are
// immutable.
//
// Header (24 bytes):
//
//	0  [8]byte magic "SCHEDSPL"
//	8  uint16  format version
//	10 uint16  flags, 0
//	12 uint64  lower bound position (as in the name)
//	20 uint32  CRC32C of bytes 0..19
const (
	segMagic      = "SCHEDSPL"
	segVersion    = 1
	segHeaderSize = 24
	segExt        = ".seg"
	tmpExt        = fsutil.TmpSuffix // a segment being created

	// indexInterval is the spacing of the in-memory index of transaction
	// boundaries kept per segment: it bounds the index's size (16 bytes per
	// interval, 16 KiB for a 64 MiB segment) and how far a new reader, or
	// BytesAfter, has to scan to find a position.
	indexInterval = 64 << 10
	// windowSize is how much segment scanning reads at once, so that a run
	// of small records costs one read, not two per record.
	windowSize = 64 << 10
)

func activeName(lo uint64) string     { return fmt.Sprintf("%016x%s", lo, segExt) }
func sealedName(lo, hi uint64) string { return fmt.Sprintf("%016x-%016x%s", lo, hi, segExt) }

// parseSegName reports whether name is a segment file name and its range.
func parseSegName(name string) (lo, hi uint64, sealed, ok bool) {
	base, found := strings.CutSuffix(name, segExt)
	if !found {
		return 0, 0, false, false
	}
	los, his, sealed := strings.Cut(base, "-")
	if len(los) != 16 || (sealed && len(his) != 16) {
		return 0, 0, false, false
	}
	lo, err := strconv.ParseUint(los, 16, 64)
	if err != nil || lo == 0 {
		return 0, 0, false, false
	}
	if !sealed {
		return lo, 0, false, true
	}
	hi, err = strconv.ParseUint(his, 16, 64)
	if err != nil || hi < lo {
		return 0, 0, false, false
	}
	return lo, hi, true, true
}

func appendSegHeader(b []byte, lo uint64) []byte {
	n := len(b)
	b = append(b, segMagic...)
	b = binary.BigEndian.AppendUint16(b, segVersion)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint64(b, lo)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[n:], castagnoli))
}

// checkSegHeader validates the header b of the segment at path, whose file
// is size bytes long and whose name gives lower bound lo. The magic and the
// version are checked before the checksum so that a file of another kind or
// a newer format is named as such.
func checkSegHeader(b []byte, size int64, path string, lo uint64) error {
	if size < segHeaderSize || len(b) < segHeaderSize {
		return corruptf(path, 0, "truncated segment header (%d of %d bytes)", min(size, int64(len(b))), segHeaderSize)
	}
	if string(b[:8]) != segMagic {
		return corruptf(path, 0, "bad magic %q: not a spool segment", b[:8])
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != segVersion {
		return corruptf(path, 8, "unsupported segment format version %d (this build reads version %d)", v, segVersion)
	}
	if crc32.Checksum(b[:20], castagnoli) != binary.BigEndian.Uint32(b[20:]) {
		return corruptf(path, 20, "segment header checksum mismatch")
	}
	if f := binary.BigEndian.Uint16(b[10:]); f != 0 {
		return corruptf(path, 10, "unknown segment flags %#x", f)
	}
	if got := binary.BigEndian.Uint64(b[12:]); got != lo {
		return corruptf(path, 12, "segment header starts at position %d but the file name says %d", got, lo)
	}
	return nil
}

// indexEntry marks a transaction boundary inside a segment: every
// transaction up to pos ends before off, and a record starts at off with the
// beginning of a later one.
type indexEntry struct {
	pos uint64
	off int64
}

// segment is the in-memory description of one segment file. Fields that
// change (name, hi, size, visible, sealed, index) are guarded by Spool.mu.
type segment struct {
	lo      uint64 // lower bound position, from the name
	hi      uint64 // last complete position in it (lo-1 if none yet)
	name    string // base name; changes when the segment is sealed
	start   int64  // spool-wide offset of the segment's first byte
	size    int64  // bytes in the file (written, for the active segment)
	visible int64  // bytes readers may read: durable, ending on a txn boundary
	sealed  bool
	index   []indexEntry
	// cache is BytesAfter's last answer in this segment: acks ask about
	// growing positions, which then start their scan where it ended.
	cache bytesCache
}

// bytesCache says that the first record holding a transaction after pos
// starts at off.
type bytesCache struct {
	valid bool
	pos   uint64
	off   int64
}

// seek returns the offset of the last indexed boundary at or before pos.
func (g *segment) seek(pos uint64) int64 {
	off := int64(segHeaderSize)
	lo, hi := 0, len(g.index)
	for lo < hi { // first entry with entry.pos > pos
		m := (lo + hi) / 2
		if g.index[m].pos <= pos {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo > 0 {
		off = g.index[lo-1].off
	}
	return off
}

// addBoundary records that a transaction boundary (through pos) is at off,
// keeping one entry per indexInterval bytes.
func addBoundary(index []indexEntry, pos uint64, off int64) []indexEntry {
	last := int64(segHeaderSize)
	if n := len(index); n > 0 {
		last = index[n-1].off
	}
	if off-last >= indexInterval {
		index = append(index, indexEntry{pos: pos, off: off})
	}
	return index
}

// window reads a segment file in chunks of size bytes (windowSize if 0).
type window struct {
	r    io.ReaderAt
	size int
	buf  []byte
	off  int64 // file offset of buf[0]
	big  []byte
}

// read returns n bytes at off, valid until the next call.
func (w *window) read(off int64, n int) ([]byte, error) {
	if off >= w.off && off+int64(n) <= w.off+int64(len(w.buf)) {
		return w.buf[off-w.off:][:n], nil
	}
	size := w.size
	if size == 0 {
		size = windowSize
	}
	if n > size {
		if cap(w.big) < n {
			w.big = make([]byte, n)
		}
		_, err := w.r.ReadAt(w.big[:n], off)
		return w.big[:n], err
	}
	if w.buf == nil {
		w.buf = make([]byte, size)
	}
	w.buf = w.buf[:cap(w.buf)]
	k, err := w.r.ReadAt(w.buf, off)
	w.buf, w.off = w.buf[:k], off
	if k >= n {
		return w.buf[:n], nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

type scanMode int

const (
	scanSealed scanMode = iota // walk record headers only; bodies are checked when read
	scanFull                   // check every body; any damage is corruption
	scanTail                   // check every body; cut a tail torn by a crash
)

type scanResult struct {
	end   int64  // end of the last record ending a transaction
	hi    uint64 // last complete position (lo-1 if none)
	index []indexEntry
	torn  int64 // scanTail: offset where a torn tail starts, or -1
}

// scanSegment walks the records of a segment file of the given size and
// checks their framing and position chain. In scanTail mode, damage that a
// crash in the middle of an append can produce is reported in torn instead
// of as an error: a partial last header, a last body that runs past the end
// of the file, or a tail of zero bytes (a filesystem that zero-fills blocks
// it had allocated but not written). Anything else is corruption.
func scanSegment(r io.ReaderAt, size int64, path string, lo uint64, mode scanMode) (scanResult, error) {
	res := scanResult{end: segHeaderSize, hi: lo - 1, torn: -1}
	w := &window{r: r}
	hb, err := w.read(0, int(min(size, segHeaderSize)))
	if err != nil {
		return res, fmt.Errorf("read segment %s: %w", path, err)
	}
	if err := checkSegHeader(hb, size, path, lo); err != nil {
		return res, err
	}
	off, prev := int64(segHeaderSize), recordHeader{flags: flagEndsTxn, last: lo - 1}
	for off < size {
		h, torn, err := scanRecord(w, off, size, path, mode)
		if err != nil {
			return res, err
		}
		if torn {
			res.torn = off
			break
		}
		if err := chainRecord(prev, h, lo); err != nil {
			return res, &CorruptError{File: path, Offset: off, Reason: err.Error()}
		}
		off += h.frameLen()
		if h.endsTxn() {
			res.end, res.hi = off, h.last
			res.index = addBoundary(res.index, h.last, off)
		}
		prev = h
	}
	if mode != scanTail && res.end != size {
		return res, corruptf(path, res.end, "segment ends inside transaction %d", prev.last)
	}
	return res, nil
}

// scanRecord reads and checks the record at off.
func scanRecord(w *window, off, size int64, path string, mode scanMode) (recordHeader, bool, error) {
	tail := mode == scanTail
	if size-off < frameHeaderSize {
		if tail {
			return recordHeader{}, true, nil
		}
		return recordHeader{}, false, corruptf(path, off, "truncated record header (%d of %d bytes)", size-off, frameHeaderSize)
	}
	b, err := w.read(off, frameHeaderSize)
	if err != nil {
		return recordHeader{}, false, fmt.Errorf("read segment %s: %w", path, err)
	}
	h, err := parseRecordHeader(b)
	if errors.Is(err, errHeaderChecksum) && tail {
		zero, zerr := zeroTail(w, off, size)
		if zerr != nil {
			return h, false, fmt.Errorf("read segment %s: %w", path, zerr)
		}
		if zero {
			return h, true, nil
		}
	}
	if err != nil {
		return h, false, &CorruptError{File: path, Offset: off, Reason: err.Error()}
	}
	if off+h.frameLen() > size {
		if tail {
			return h, true, nil
		}
		return h, false, corruptf(path, off, "record of %d bytes runs past the end of the file (%d bytes)", h.frameLen(), size)
	}
	if mode == scanSealed {
		return h, false, nil
	}
	body, err := w.read(off+frameHeaderSize, int(h.bodyLen))
	if err != nil {
		return h, false, fmt.Errorf("read segment %s: %w", path, err)
	}
	if err := checkBody(h, body); err != nil {
		return h, false, &CorruptError{File: path, Offset: off, Reason: err.Error()}
	}
	return h, false, nil
}

// chainRecord checks that record h may follow record prev in a segment
// with lower bound lo.
func chainRecord(prev, h recordHeader, lo uint64) error {
	switch {
	case !prev.endsTxn() && (!h.startsMid() || h.first != prev.last):
		return fmt.Errorf("record starts at position %d but transaction %d is not finished", h.first, prev.last)
	case prev.endsTxn() && h.startsMid():
		return fmt.Errorf("record continues transaction %d, which was not begun", h.first)
	case prev.endsTxn() && (h.first <= prev.last || h.first < lo):
		return fmt.Errorf("record starts at position %d, which does not follow %d", h.first, prev.last)
	}
	return nil
}

// zeroTail reports whether every byte from off to size is zero.
func zeroTail(w *window, off, size int64) (bool, error) {
	for off < size {
		n := int(min(size-off, windowSize))
		b, err := w.read(off, n)
		if err != nil {
			return false, err
		}
		for _, c := range b {
			if c != 0 {
				return false, nil
			}
		}
		off += int64(n)
	}
	return true, nil
}
