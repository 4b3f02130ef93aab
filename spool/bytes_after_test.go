package spool

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestBytesAfterIsExact checks BytesAfter at every position against an
// independent count: the bytes of the segment files from the first record
// that holds a transaction after the position (the whole file when that
// record is its first). Transactions come in runs synced together, so
// records hold several of them, and some span records; the segments are
// larger than the index interval, so the index alone cannot answer.
func TestBytesAfterIsExact(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, SegmentSize: 3 * indexInterval, RecordSize: 4 << 10})
	ctx := context.Background()
	const last = 3000
	for p := uint64(1); p <= last; p++ {
		appendN(t, s, p)
		if p%7 == 0 || p%251 == 0 {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n < 3 {
		t.Fatalf("only %d segments: the test needs several", n)
	}
	check := func(what string) {
		t.Helper()
		want := independentBytesAfter(t, dir)
		// Down, then up, then down again: the cache of the last answer
		// must not leak into an earlier position.
		order := make([]uint64, 0, 3*(last+1))
		for p := uint64(s.FirstPosition() - 1); p <= last; p++ {
			order = append(order, p)
		}
		rev := slices.Clone(order)
		slices.Reverse(rev)
		order = append(append(order, rev...), order...)
		for _, p := range order {
			if got := s.BytesAfter(p); got != want(p) {
				t.Fatalf("%s: BytesAfter(%d) = %d, the files hold %d bytes from the first record after it", what, p, got, want(p))
			}
			// BacklogWithin answers from its bound or reads: either way
			// exactly as BytesAfter, right at the limit too.
			for _, limit := range []int64{want(p) - 1, want(p), want(p) + 1} {
				if got := s.BacklogWithin(p, limit); got != (want(p) <= limit) {
					t.Fatalf("%s: BacklogWithin(%d, %d) = %v with %d bytes after it", what, p, limit, got, want(p))
				}
			}
		}
	}
	check("whole spool")
	if err := s.TruncateBefore(s.segs[1].hi); err != nil {
		t.Fatal(err)
	}
	check("after retention")
}

// independentBytesAfter reads every segment file and returns a function
// giving, for a position, the bytes on disk a reader after it still reads.
func independentBytesAfter(t *testing.T, dir string) func(uint64) int64 {
	t.Helper()
	type rec struct {
		last uint64
		from int64 // spool-wide offset this record's bytes start at
	}
	var recs []rec
	var total int64
	names := segFiles(t, dir)
	slices.Sort(names)
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(segHeaderSize); off < int64(len(b)); {
			h, err := parseRecordHeader(b[off:])
			if err != nil {
				t.Fatalf("%s at %d: %v", name, off, err)
			}
			from := total + off
			if off == segHeaderSize {
				from = total // the segment's header goes with its first record
			}
			recs = append(recs, rec{last: h.last, from: from})
			off += h.frameLen()
		}
		total += int64(len(b))
	}
	return func(pos uint64) int64 {
		for _, r := range recs {
			if r.last > pos {
				return total - r.from
			}
		}
		return 0
	}
}
