package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recordOffsets returns the offsets of the records of a segment file.
func recordOffsets(t testing.TB, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := int64(segHeaderSize); off < int64(len(b)); {
		h, err := parseRecordHeader(b[off:])
		if err != nil {
			t.Fatalf("%s at %d: %v", path, off, err)
		}
		offs = append(offs, off)
		off += h.frameLen()
	}
	return offs
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == lockName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

// activeFile returns the path of the active segment in dir.
func activeFile(t testing.TB, dir string) string {
	t.Helper()
	for _, name := range segFiles(t, dir) {
		if _, _, sealed, _ := parseSegName(name); !sealed {
			return filepath.Join(dir, name)
		}
	}
	t.Fatal("no active segment")
	return ""
}

// TestTornTailAtEveryOffset cuts the active segment inside the records
// written after a Sync (every byte of some headers, points in each body), as
// a crash in the middle of appending can, and checks that Open recovers
// every synced transaction and nothing that is not whole.
func TestTornTailAtEveryOffset(t *testing.T) {
	base := t.TempDir()
	s := openT(t, Options{Dir: base, RecordSize: 1 << 10})
	appendN(t, s, 95)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	synced := s.LastPosition()
	active := activeFile(t, base)
	st, _ := os.Stat(active)
	from := st.Size()
	appendN(t, s, 99) // 97 spans several records
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(active)
	if err != nil {
		t.Fatal(err)
	}
	// Every byte of a few record headers; around the header and in the
	// body of every record.
	var cuts []int64
	for i, off := range recordOffsets(t, active) {
		if off < from {
			continue
		}
		h, _ := parseRecordHeader(whole[off:])
		if i%8 == 0 {
			for k := int64(2); k < frameHeaderSize-1; k++ {
				cuts = append(cuts, off+k)
			}
		}
		cuts = append(cuts, off, off+1, off+frameHeaderSize-1, off+frameHeaderSize, off+frameHeaderSize+1,
			off+h.frameLen()/2, off+h.frameLen()-1)
	}
	for _, cut := range cuts {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(active)), whole[:cut], 0o640); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Dir: dir, RecordSize: 1 << 10, Logger: quietLogger})
		if err != nil {
			t.Fatalf("cut at %d of %d: %v", cut, len(whole), err)
		}
		last := s.LastPosition()
		if last < synced || last > 99 {
			t.Fatalf("cut at %d: last position %d, want %d..99", cut, last, synced)
		}
		readAll(t, s, last)
		s.Close()
	}
	t.Logf("%d cuts in %d bytes", len(cuts), int64(len(whole))-from)
}

func TestZeroFilledTailIsCut(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, small(dir))
	appendN(t, s, 50)
	s.Close()
	f, err := os.OpenFile(activeFile(t, dir), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 5000))
	f.Close()
	s = openT(t, small(dir))
	if s.LastPosition() != 50 {
		t.Fatalf("last %d after a zero tail, want 50", s.LastPosition())
	}
	readRange(t, s, 0, 50)
}

// corruptAt flips one byte at off in path.
func corruptAt(t testing.TB, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func wantCorrupt(t testing.TB, err error, file string, off int64, reason string) {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want a *CorruptError wrapping ErrCorrupt", err)
	}
	want := fmt.Sprintf("corrupt spool segment %s at byte %d: %s", file, off, reason)
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got error\n\t%s\nwant\n\t%s", err, want)
	}
}

// In the active segment, damage followed by more records is corruption, not
// a torn tail: it is reported, nothing is cut.
func TestCorruptionInActiveSegmentStopsOpen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rec    int   // which record, from the end
		at     int64 // byte in the record
		reason string
	}{
		{"body", 3, frameHeaderSize + 5, "record body checksum mismatch"},
		{"length", 3, 1, "record header checksum mismatch"},
		{"flags", 2, 4, "record header checksum mismatch"},
		{"last record body", 1, frameHeaderSize + 2, "record body checksum mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, Options{Dir: dir, RecordSize: 1 << 10})
			appendN(t, s, 20)
			for p := uint64(21); p <= 24; p++ {
				appendN(t, s, p)
				s.Sync(context.Background())
			}
			s.Close()
			path := activeFile(t, dir)
			offs := recordOffsets(t, path)
			off := offs[len(offs)-tc.rec]
			corruptAt(t, path, off+tc.at)
			before, _ := os.ReadFile(path)
			_, err := Open(Options{Dir: dir, Logger: quietLogger})
			wantCorrupt(t, err, path, off, tc.reason)
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Fatal("Open changed a corrupt segment")
			}
		})
	}
}

func TestCorruptSealedSegmentStopsReader(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, small(dir))
	appendN(t, s, 300)
	s.Close()
	path := filepath.Join(dir, segFiles(t, dir)[1])
	offs := recordOffsets(t, path)
	corruptAt(t, path, offs[1]+frameHeaderSize+3)
	s = openT(t, small(dir)) // sealed segments are checked when read
	r, err := s.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for {
		_, src, err := r.Next(context.Background())
		for err == nil {
			_, err = src.Next()
		}
		if err == io.EOF {
			continue
		}
		wantCorrupt(t, err, path, offs[1], "record body checksum mismatch")
		if _, _, again := r.Next(context.Background()); again != err {
			t.Fatalf("reader went on after corruption: %v", again)
		}
		return
	}
}

func TestMissingSegmentStopsOpen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, small(dir))
	appendN(t, s, 300)
	s.Close()
	names := segFiles(t, dir)
	os.Remove(filepath.Join(dir, names[1]))
	_, err := Open(small(dir))
	lo, _, _, _ := parseSegName(names[2])
	_, hi, _, _ := parseSegName(names[0])
	wantCorrupt(t, err, filepath.Join(dir, names[2]), 0,
		fmt.Sprintf("segment starts at position %d but the one before ends at %d: a segment file is missing or extra", lo, hi))
}

// A crash between writing a new segment and renaming the old one leaves an
// active-named segment that is not the last; Open seals it.
func TestStrayActiveSegmentIsSealed(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, small(dir))
	appendN(t, s, 300)
	s.Close()
	names := segFiles(t, dir)
	lo, _, _, _ := parseSegName(names[1])
	if err := os.Rename(filepath.Join(dir, names[1]), filepath.Join(dir, activeName(lo))); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, activeName(999)+tmpExt), []byte("junk"), 0o640)
	s = openT(t, small(dir))
	readRange(t, s, 0, 300)
	if got := segFiles(t, dir); strings.Join(got, " ") != strings.Join(names, " ") {
		t.Fatalf("segments after recovery %v, want %v", got, names)
	}
}
