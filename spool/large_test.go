package spool

import (
	"context"
	"runtime"
	"testing"

	"github.com/schedsync/schedsync/internal/change"
)

// heapSampler records the largest HeapInuse seen.
type heapSampler struct{ max uint64 }

func (h *heapSampler) sample() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	h.max = max(h.max, m.HeapInuse)
}

// sampledSource samples the heap while the spool consumes it.
type sampledSource struct {
	*genSource
	h *heapSampler
}

func (s sampledSource) Next() (*change.Change, error) {
	if s.i%20000 == 0 {
		s.h.sample()
	}
	return s.genSource.Next()
}

// TestLargeTransactionBoundedMemory streams one transaction of many rows
// (about 100 bytes each) in and out and checks that the heap never holds
// anything near the whole of it.
func TestLargeTransactionBoundedMemory(t *testing.T) {
	rows := 200_000
	if !testing.Short() && !raceEnabled {
		rows = 1_000_000
	}
	const limit = 64 << 20
	s := openT(t, Options{Dir: t.TempDir()})
	ctx := context.Background()
	runtime.GC()
	var h heapSampler
	h.sample()
	base := h.max

	appendN(t, s, 2)
	src := sampledSource{genSource: newGen(3, rows), h: &h}
	if pos, err := s.Append(ctx, src); err != nil || pos != 3 {
		t.Fatalf("append: %d %v", pos, err)
	}
	if _, err := s.Append(ctx, genFor(4)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("appended %d rows: spool %d bytes, heap in use at most %d MiB (%d MiB before)", rows, s.BytesAfter(0), h.max>>20, base>>20)
	if h.max > limit {
		t.Fatalf("heap in use reached %d MiB while appending, limit %d MiB", h.max>>20, limit>>20)
	}

	h = heapSampler{}
	r, err := s.NewReader(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pos, txn, err := r.Next(ctx)
	if err != nil || pos != 3 {
		t.Fatalf("read: %d %v", pos, err)
	}
	want := newGen(3, rows)
	n, raw := 0, 0
	for {
		c, err := txn.Next()
		if err != nil {
			break
		}
		exp, _ := want.Next()
		if !sameChange(c, exp) {
			t.Fatalf("row %d: got %+v want %+v", n, c, exp)
		}
		raw += c.Size()
		if n++; n%20000 == 0 {
			h.sample()
		}
	}
	if n != rows {
		t.Fatalf("read %d rows, want %d", n, rows)
	}
	if pos, src, err := r.Next(ctx); err != nil || pos != 4 || checkTxn(4, src) != nil {
		t.Fatalf("transaction after the large one: %d %v", pos, err)
	}
	t.Logf("read %d rows, %d MiB of raw changes: heap in use at most %d MiB", rows, raw>>20, h.max>>20)
	if rows == 1_000_000 && raw <= limit {
		t.Fatalf("the transaction (%d bytes) is too small to show that it is not held whole", raw)
	}
	if h.max > limit {
		t.Fatalf("heap in use reached %d MiB while reading, limit %d MiB", h.max>>20, limit>>20)
	}
}
