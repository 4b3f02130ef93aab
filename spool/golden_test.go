package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// The golden spools under testdata/golden were written by format version
// 1 with the first begin items ('B', without a capture epoch) and are
// checked in: "valid" must stay readable by every later build (its
// transactions read with epoch 0), and each damaged copy must keep failing
// with the same error. Regenerate with: go test ./spool/ -run TestGolden
// -update (which writes today's begin items, and so no longer checks that
// the first ones are read).
var update = flag.Bool("update", false, "rewrite the golden spools in testdata/golden")

const goldenDir = "testdata/golden"

// goldenLast is the last position in the valid golden spool.
const goldenLast = 40

func goldenOptions(dir string) Options {
	return Options{Dir: dir, RecordSize: 1 << 10, Logger: quietLogger}
}

// damage describes how a golden case is made from the valid spool, and the
// error it must give.
type damage struct {
	name   string
	seg    int // index of the segment file (sorted); -1 is the last
	rec    int // index of the record in it, -1 for the segment header
	mutate func(b []byte, recOff int64) []byte
	// The error: on Open, or while reading if onRead.
	onRead bool
	off    int64 // expected offset in the error
	reason string
}

var goldenCases = []damage{
	{
		name: "bad-crc-middle", seg: -1, rec: 2,
		mutate: func(b []byte, off int64) []byte { b[off+frameHeaderSize+4] ^= 0xff; return b },
		off:    557, reason: "record body checksum mismatch",
	},
	{
		name: "bad-crc-sealed", seg: 1, rec: 2, onRead: true,
		mutate: func(b []byte, off int64) []byte { b[off+frameHeaderSize+4] ^= 0xff; return b },
		off:    515, reason: "record body checksum mismatch",
	},
	{
		name: "bad-record-length", seg: -1, rec: 1,
		mutate: func(b []byte, off int64) []byte { binary.BigEndian.PutUint32(b[off:], 1<<20); return b },
		off:    295, reason: "record header checksum mismatch",
	},
	{
		name: "truncated-header", seg: 0, rec: -1,
		mutate: func(b []byte, _ int64) []byte { return b[:10] },
		off:    0, reason: "truncated segment header (10 of 24 bytes)",
	},
	{
		name: "wrong-version", seg: 1, rec: -1,
		mutate: func(b []byte, _ int64) []byte { binary.BigEndian.PutUint16(b[8:], 2); return b },
		off:    8, reason: "unsupported segment format version 2 (this build reads version 1)",
	},
	{
		name: "bad-magic", seg: 2, rec: -1,
		mutate: func(b []byte, _ int64) []byte { copy(b, "NOTSPOOL"); return b },
		off:    0, reason: `bad magic "NOTSPOOL": not a spool segment`,
	},
}

func writeGolden(t *testing.T) {
	valid := filepath.Join(goldenDir, "valid")
	if err := os.RemoveAll(goldenDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(valid, 0o755); err != nil {
		t.Fatal(err)
	}
	// Sealed segments of a few records, then an active one of many.
	o := goldenOptions(valid)
	for _, part := range []struct {
		to      uint64
		segSize int64
	}{{30, 1 << 10}, {goldenLast, 1 << 20}} {
		o.SegmentSize = part.segSize
		s, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		for p := s.LastPosition() + 1; p <= part.to; p++ {
			appendN(t, s, p)
			if p%2 == 0 {
				if err := s.Sync(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		s.Close()
	}
	os.Remove(filepath.Join(valid, lockName))
	for _, tc := range goldenCases {
		dir := filepath.Join(goldenDir, tc.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		copyDir(t, valid, dir)
		path := goldenFile(t, dir, tc.seg)
		var off int64
		if tc.rec >= 0 {
			off = recordOffsets(t, path)[tc.rec]
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, tc.mutate(b, off), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func goldenFile(t *testing.T, dir string, seg int) string {
	names := segFiles(t, dir)
	if seg < 0 {
		seg += len(names)
	}
	return filepath.Join(dir, names[seg])
}

// openGolden opens a copy of a golden spool (Open writes to its directory).
func openGolden(t *testing.T, name string) (string, *Spool, error) {
	dir := t.TempDir()
	copyDir(t, filepath.Join(goldenDir, name), dir)
	s, err := Open(goldenOptions(dir))
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return dir, s, err
}

func TestGoldenValid(t *testing.T) {
	if *update {
		writeGolden(t)
	}
	_, s, err := openGolden(t, "valid")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, filepath.Join(goldenDir, "valid"))); n < 4 {
		t.Fatalf("golden spool has %d segments, want at least 4", n)
	}
	legacyHeaders = !*update
	defer func() { legacyHeaders = false }()
	readRange(t, s, 0, goldenLast)
}

func TestGoldenCorrupt(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			dir, s, err := openGolden(t, tc.name)
			if tc.onRead {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				err = readUntilError(s)
			}
			file := goldenFile(t, dir, tc.seg)
			wantCorrupt(t, err, file, tc.off, tc.reason)
			if err.Error() != (&CorruptError{File: file, Offset: tc.off, Reason: tc.reason}).Error() {
				t.Fatalf("error has more than expected: %v", err)
			}
		})
	}
}

// readUntilError reads the whole spool and returns the first error.
func readUntilError(s *Spool) error {
	r, err := s.NewReader(0)
	if err != nil {
		return err
	}
	defer r.Close()
	for s.LastPosition() > 0 {
		pos, src, err := r.Next(context.Background())
		for err == nil {
			_, err = src.Next()
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		if pos == s.LastPosition() {
			return nil
		}
	}
	return nil
}
