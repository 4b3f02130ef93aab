package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/schedsync/schedsync/internal/change"
)

// decodeSegment does with the bytes of a segment file what Open and a
// Reader do: recover it as the last segment, then decode every record,
// item and change up to the recovered end. Errors are wrapped as the
// reader wraps them.
func decodeSegment(data []byte) (scanResult, error) {
	lo := uint64(1)
	if len(data) >= segHeaderSize {
		lo = max(1, binary.BigEndian.Uint64(data[12:]))
	}
	for _, mode := range []scanMode{scanSealed, scanFull} {
		if _, err := scanSegment(bytes.NewReader(data), int64(len(data)), "fuzz", lo, mode); err != nil && !errors.Is(err, ErrCorrupt) {
			return scanResult{}, err
		}
	}
	res, err := scanSegment(bytes.NewReader(data), int64(len(data)), "fuzz", lo, scanTail)
	if err != nil {
		return res, err
	}
	var st txnStream
	var raw []byte
	for off := int64(segHeaderSize); off < res.end; {
		h, err := parseRecordHeader(data[off:])
		if err != nil {
			return res, &CorruptError{File: "fuzz", Offset: off, Reason: err.Error()}
		}
		raw, err = decodeBody(h, data[off+frameHeaderSize:off+h.frameLen()], raw)
		if err == nil {
			err = decodeItems(&st, h, raw)
		}
		if err != nil {
			return res, &CorruptError{File: "fuzz", Offset: off, Reason: "bad record", Err: err}
		}
		off += h.frameLen()
	}
	return res, nil
}

// decodeItems walks a record's items and decodes its changes.
func decodeItems(st *txnStream, h recordHeader, raw []byte) error {
	if err := st.start(h, raw); err != nil {
		return err
	}
	for st.more() {
		it, err := st.next()
		if err != nil {
			return err
		}
		if it.kind == itemChange {
			if _, err := decodeChangeItem(&change.Interner{}, it.body); err != nil {
				return err
			}
		}
	}
	return nil
}

func addGoldenSeeds(f *testing.F) {
	for _, dir := range []string{"valid", "bad-crc-middle", "bad-record-length", "wrong-version"} {
		names, _ := filepath.Glob(filepath.Join(goldenDir, dir, "*.seg"))
		for _, name := range names {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzSegment feeds arbitrary segment files to recovery and decoding: they
// must never panic, and every error must wrap ErrCorrupt.
func FuzzSegment(f *testing.F) {
	addGoldenSeeds(f)
	f.Add(appendSegHeader(nil, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := decodeSegment(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if res.end < segHeaderSize || res.end > int64(len(data)) {
			t.Fatalf("recovered end %d outside the %d bytes", res.end, len(data))
		}
	})
}

var fuzzEncoder = func() *zstd.Encoder {
	e, err := newEncoder(zstd.SpeedFastest)
	if err != nil {
		panic(err)
	}
	return e
}()

// FuzzRecordPayload reaches past the checksums: it frames arbitrary payload
// bytes (or, with hostile set, arbitrary bytes as the compressed body) into a
// record with valid checksums and decodes it.
func FuzzRecordPayload(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join(goldenDir, "valid", "*.seg"))
	for _, name := range names {
		b, _ := os.ReadFile(name)
		for off := int64(segHeaderSize); off < int64(len(b)); {
			h, err := parseRecordHeader(b[off:])
			if err != nil {
				break
			}
			raw, _ := decodeBody(h, b[off+frameHeaderSize:off+h.frameLen()], nil)
			f.Add(raw, h.flags, h.first, h.last-h.first, false)
			f.Add(b[off+frameHeaderSize:off+h.frameLen()], h.flags, h.first, h.last-h.first, true)
			off += h.frameLen()
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, flags byte, first, span uint64, hostile bool) {
		if len(data) == 0 || len(data) > 1<<20 {
			return
		}
		h := recordHeader{flags: flags & knownFlags, first: max(first, 1)}
		h.last = h.first + span%1024
		var body []byte
		if hostile {
			body = data
			h.bodyLen, h.rawLen = uint32(len(data)), uint32(min(len(data)*8, 1<<20))
			h.bodyCRC = crc32.Checksum(data, castagnoli)
		} else {
			frame := encodeRecord(nil, fuzzEncoder, data, h)
			var err error
			if h, err = parseRecordHeader(frame); err != nil {
				t.Fatalf("own record header: %v", err)
			}
			body = frame[frameHeaderSize:]
		}
		raw, err := decodeBody(h, body, nil)
		if err != nil {
			if !hostile {
				t.Fatalf("own record does not decode: %v", err)
			}
			return
		}
		if !hostile && !bytes.Equal(raw, data) {
			t.Fatal("record does not round-trip")
		}
		var st txnStream
		_ = decodeItems(&st, h, raw) // must not panic; errors are the reader's to wrap
	})
}
