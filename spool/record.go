package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A record is one zstd frame of raw payload bytes (see payload.go) with a
// fixed frame header in front:
//
//	0  uint32  body length (the zstd frame that follows the header)
//	4  byte    flags: flagStartsMid, flagEndsTxn
//	5  uint64  first: position of the transaction owning the first payload item
//	13 uint64  last: position of the transaction owning the last payload item
//	21 uint32  raw (uncompressed) payload length
//	25 uint32  CRC32C of the body
//	29 uint32  CRC32C of header bytes 0..28
//
// The header has its own checksum so that a damaged length is reported as
// corruption instead of looking like a record torn by a crash (one whose
// body runs past the end of the file). Records are cut only between payload
// items, so every record can be decoded on its own.
const (
	frameHeaderSize = 33

	// maxRecordRaw bounds a record's payload and so the memory one decode
	// may take. A record normally holds about Options.RecordSize bytes; only
	// a single change larger than that makes a bigger one.
	maxRecordRaw = 1 << 30
	// maxRecordBody is zstd's worst case for incompressible input, rounded up.
	maxRecordBody = maxRecordRaw + maxRecordRaw/64 + 1<<16
)

const (
	// flagStartsMid: the record begins with items of transaction `first`,
	// whose begin item is in an earlier record.
	flagStartsMid = 1 << 0
	// flagEndsTxn: the record's last item is an end item, so the record ends
	// on a transaction boundary. Readers only ever see data up to the end of
	// such a record, and recovery cuts back to one.
	flagEndsTxn = 1 << 1
	knownFlags  = flagStartsMid | flagEndsTxn
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errHeaderChecksum = errors.New("record header checksum mismatch")

type recordHeader struct {
	bodyLen     uint32
	flags       byte
	first, last uint64
	rawLen      uint32
	bodyCRC     uint32
}

func (h recordHeader) startsMid() bool { return h.flags&flagStartsMid != 0 }
func (h recordHeader) endsTxn() bool   { return h.flags&flagEndsTxn != 0 }
func (h recordHeader) frameLen() int64 { return frameHeaderSize + int64(h.bodyLen) }

func putRecordHeader(b []byte, h recordHeader) {
	binary.BigEndian.PutUint32(b[0:], h.bodyLen)
	b[4] = h.flags
	binary.BigEndian.PutUint64(b[5:], h.first)
	binary.BigEndian.PutUint64(b[13:], h.last)
	binary.BigEndian.PutUint32(b[21:], h.rawLen)
	binary.BigEndian.PutUint32(b[25:], h.bodyCRC)
	binary.BigEndian.PutUint32(b[29:], crc32.Checksum(b[:29], castagnoli))
}

// parseRecordHeader decodes and checks a frame header. A checksum mismatch
// is reported as errHeaderChecksum so that recovery can tell it apart.
func parseRecordHeader(b []byte) (recordHeader, error) {
	if len(b) < frameHeaderSize {
		return recordHeader{}, fmt.Errorf("truncated record header (%d of %d bytes)", len(b), frameHeaderSize)
	}
	if crc32.Checksum(b[:29], castagnoli) != binary.BigEndian.Uint32(b[29:]) {
		return recordHeader{}, errHeaderChecksum
	}
	h := recordHeader{
		bodyLen: binary.BigEndian.Uint32(b[0:]),
		flags:   b[4],
		first:   binary.BigEndian.Uint64(b[5:]),
		last:    binary.BigEndian.Uint64(b[13:]),
		rawLen:  binary.BigEndian.Uint32(b[21:]),
		bodyCRC: binary.BigEndian.Uint32(b[25:]),
	}
	switch {
	case h.flags&^knownFlags != 0:
		return h, fmt.Errorf("unknown record flags %#x", h.flags)
	case h.first == 0 || h.first > h.last:
		return h, fmt.Errorf("bad record position range %d..%d", h.first, h.last)
	case h.rawLen == 0 || h.rawLen > maxRecordRaw:
		return h, fmt.Errorf("bad record payload length %d", h.rawLen)
	case h.bodyLen == 0 || h.bodyLen > maxRecordBody:
		return h, fmt.Errorf("bad record body length %d", h.bodyLen)
	}
	return h, nil
}

func checkBody(h recordHeader, body []byte) error {
	if crc32.Checksum(body, castagnoli) != h.bodyCRC {
		return errors.New("record body checksum mismatch")
	}
	return nil
}

// decoder is shared by every reader: DecodeAll is safe for concurrent use,
// and the cap limit plus the memory limit bound what a bad frame can cost.
var decoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxRecordRaw),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		panic(fmt.Sprintf("spool: create zstd decoder: %v", err)) // only on bad static options
	}
	return d
})

// decodeBody checks the body's checksum and decompresses it into dst,
// reusing dst's storage when it is large enough.
func decodeBody(h recordHeader, body, dst []byte) ([]byte, error) {
	if err := checkBody(h, body); err != nil {
		return dst, err
	}
	if cap(dst) < int(h.rawLen) {
		dst = make([]byte, 0, h.rawLen)
	}
	out, err := decoder().DecodeAll(body, dst[:0:h.rawLen])
	if err != nil {
		return dst, fmt.Errorf("decompress record: %v", err)
	}
	if len(out) != int(h.rawLen) {
		return dst, fmt.Errorf("record decompresses to %d bytes, header says %d", len(out), h.rawLen)
	}
	return out, nil
}

func newEncoder(level zstd.EncoderLevel) (*zstd.Encoder, error) {
	// One goroutine per encode: records are small, and the appender is a
	// single goroutine anyway. zstd's own checksum would duplicate ours.
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false))
}

// encodeRecord compresses raw and appends the framed record to dst[:0].
// h.flags, h.first and h.last must be set; the lengths and checksums are
// filled in here.
func encodeRecord(dst []byte, enc *zstd.Encoder, raw []byte, h recordHeader) []byte {
	dst = append(dst[:0], make([]byte, frameHeaderSize)...)
	dst = enc.EncodeAll(raw, dst)
	body := dst[frameHeaderSize:]
	h.bodyLen = uint32(len(body))
	h.rawLen = uint32(len(raw))
	h.bodyCRC = crc32.Checksum(body, castagnoli)
	putRecordHeader(dst, h)
	return dst
}
