package backup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// FormatVersion is the version of the file format this package writes and
// reads.
const FormatVersion = 1

// magic opens every backup file.
var magic = [8]byte{'S', 'S', 'Y', 'N', 'C', 'B', 'A', 'K'}

const (
	fileHeaderSize  = 16 // magic, version, CRC32C of both
	frameHeaderSize = 18 // type, flags, payload length, raw length, payload CRC, header CRC

	// chunkSize is the raw COPY bytes gathered into one data frame.
	chunkSize = 1 << 20
	// maxRawChunk bounds the declared decompressed size of a data frame,
	// and maxDataPayload its compressed size (zstd never grows data by
	// much), so a reader never allocates more on a file's word.
	maxRawChunk    = 4 << 20
	maxDataPayload = maxRawChunk + maxRawChunk/8
	// maxMetaPayload bounds the JSON frames (begin, end, manifest).
	maxMetaPayload = 64 << 20
)

// Frame types.
const (
	frameBegin    byte = 'B' // a table starts: JSON TableHeader
	frameData     byte = 'D' // a zstd frame of raw COPY bytes
	frameEnd      byte = 'E' // a table ends: JSON TableEnd
	frameManifest byte = 'M' // the manifest, JSON
	frameFinal    byte = 'Z' // the end marker; nothing may follow
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error about the bytes of a backup file
// (as a *CorruptError): a bad magic, version, checksum or structure, or a
// file cut short.
var ErrCorrupt = errors.New("bad backup file")

// CorruptError names the byte offset in the file where the problem is.
type CorruptError struct {
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("bad backup file at byte %d: %s", e.Offset, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corruptf(off int64, format string, args ...any) *CorruptError {
	return &CorruptError{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// frameHeader describes the payload that follows it.
type frameHeader struct {
	typ        byte
	payloadLen uint32
	rawLen     uint32 // data frames: the decompressed size; others: payloadLen
	payloadCRC uint32
}

func appendFileHeader(b []byte) []byte {
	b = append(b, magic[:]...)
	b = binary.BigEndian.AppendUint32(b, FormatVersion)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[len(b)-12:], castagnoli))
}

// parseFileHeader checks the magic, then the header checksum, then the
// version: a file of another version is reported as such, a damaged one as
// damaged.
func parseFileHeader(b []byte) error {
	if len(b) < fileHeaderSize {
		return corruptf(0, "file too short to be a schedsync backup (%d bytes)", len(b))
	}
	if [8]byte(b[:8]) != magic {
		return corruptf(0, "not a schedsync backup file (bad magic %q)", b[:8])
	}
	if crc32.Checksum(b[:12], castagnoli) != binary.BigEndian.Uint32(b[12:16]) {
		return corruptf(8, "file header checksum mismatch")
	}
	if v := binary.BigEndian.Uint32(b[8:12]); v != FormatVersion {
		return corruptf(8, "format version %d is not supported (this schedsync reads version %d)", v, FormatVersion)
	}
	return nil
}

func putFrameHeader(b []byte, h frameHeader) {
	b[0] = h.typ
	b[1] = 0 // flags, reserved
	binary.BigEndian.PutUint32(b[2:], h.payloadLen)
	binary.BigEndian.PutUint32(b[6:], h.rawLen)
	binary.BigEndian.PutUint32(b[10:], h.payloadCRC)
	binary.BigEndian.PutUint32(b[14:], crc32.Checksum(b[:14], castagnoli))
}

// parseFrameHeader checks a frame header before anything is allocated for
// its payload: its own checksum, its type and its lengths.
func parseFrameHeader(b []byte, off int64) (frameHeader, error) {
	if len(b) < frameHeaderSize {
		return frameHeader{}, corruptf(off, "frame header too short")
	}
	if crc32.Checksum(b[:14], castagnoli) != binary.BigEndian.Uint32(b[14:18]) {
		return frameHeader{}, corruptf(off, "frame header checksum mismatch")
	}
	h := frameHeader{
		typ:        b[0],
		payloadLen: binary.BigEndian.Uint32(b[2:]),
		rawLen:     binary.BigEndian.Uint32(b[6:]),
		payloadCRC: binary.BigEndian.Uint32(b[10:]),
	}
	if b[1] != 0 {
		return h, corruptf(off, "frame flags %#x are not supported", b[1])
	}
	switch h.typ {
	case frameData:
		if h.rawLen == 0 || h.rawLen > maxRawChunk || h.payloadLen == 0 || h.payloadLen > maxDataPayload {
			return h, corruptf(off, "data frame declares %d bytes (%d compressed), outside 1..%d", h.rawLen, h.payloadLen, maxRawChunk)
		}
	case frameBegin, frameEnd, frameManifest, frameFinal:
		if h.payloadLen > maxMetaPayload || h.rawLen != h.payloadLen {
			return h, corruptf(off, "frame %q declares %d bytes (raw %d), at most %d allowed", h.typ, h.payloadLen, h.rawLen, maxMetaPayload)
		}
		if h.typ == frameFinal && h.payloadLen != 0 {
			return h, corruptf(off, "end marker with a %d-byte payload", h.payloadLen)
		}
	default:
		return h, corruptf(off, "unknown frame type %#x", h.typ)
	}
	return h, nil
}

// frameReader reads frames from a file, checking every checksum, and keeps
// the offset for error messages.
type frameReader struct {
	r   io.Reader
	off int64 // bytes consumed
	hdr [frameHeaderSize]byte
	buf []byte
}

func newFrameReader(r io.Reader) (*frameReader, error) {
	fr := &frameReader{r: r}
	var h [fileHeaderSize]byte
	n, err := io.ReadFull(r, h[:])
	fr.off = int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		if m := min(n, len(magic)); string(h[:m]) != string(magic[:m]) {
			return nil, corruptf(0, "not a schedsync backup file (bad magic %q)", h[:m])
		}
		if n == 0 {
			return nil, corruptf(0, "the file is empty")
		}
		return nil, corruptf(int64(n), "file truncated: %d bytes, shorter than the %d-byte file header", n, fileHeaderSize)
	}
	if err != nil {
		return nil, fmt.Errorf("read backup file header: %w", err)
	}
	return fr, parseFileHeader(h[:])
}

// next reads one frame. The payload is valid until the next call. A file
// that ends before the end marker is reported with the offset where it
// ends.
func (fr *frameReader) next() (frameHeader, []byte, int64, error) {
	start := fr.off
	n, err := io.ReadFull(fr.r, fr.hdr[:])
	fr.off += int64(n)
	if err == io.EOF {
		return frameHeader{}, nil, start, corruptf(start, "file truncated: it ends before its end marker")
	}
	if err == io.ErrUnexpectedEOF {
		return frameHeader{}, nil, start, corruptf(fr.off, "file truncated in the header of the frame at byte %d", start)
	}
	if err != nil {
		return frameHeader{}, nil, start, fmt.Errorf("read backup file at byte %d: %w", start, err)
	}
	h, err := parseFrameHeader(fr.hdr[:], start)
	if err != nil {
		return h, nil, start, err
	}
	if cap(fr.buf) < int(h.payloadLen) {
		fr.buf = make([]byte, h.payloadLen)
	}
	p := fr.buf[:h.payloadLen]
	n, err = io.ReadFull(fr.r, p)
	fr.off += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return h, nil, start, corruptf(fr.off, "file truncated in the frame at byte %d (%d of %d payload bytes)", start, n, h.payloadLen)
	}
	if err != nil {
		return h, nil, start, fmt.Errorf("read backup file at byte %d: %w", fr.off, err)
	}
	if crc32.Checksum(p, castagnoli) != h.payloadCRC {
		return h, nil, start, corruptf(start, "checksum mismatch in the payload of the %s frame", frameName(h.typ))
	}
	return h, p, start, nil
}

// expectEOF checks that nothing follows the end marker.
func (fr *frameReader) expectEOF() error {
	var b [1]byte
	n, err := io.ReadFull(fr.r, b[:])
	if n > 0 {
		return corruptf(fr.off, "data after the end marker")
	}
	if err != io.EOF {
		return fmt.Errorf("read backup file at byte %d: %w", fr.off, err)
	}
	return nil
}

func frameName(t byte) string {
	switch t {
	case frameBegin:
		return "table begin"
	case frameData:
		return "data"
	case frameEnd:
		return "table end"
	case frameManifest:
		return "manifest"
	case frameFinal:
		return "end marker"
	}
	return fmt.Sprintf("%#x", t)
}
