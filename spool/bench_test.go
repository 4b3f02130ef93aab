package spool

import (
	"context"
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/schedsync/schedsync/internal/change"
)

// benchPool is a fixed set of distinct workload transactions that the
// benchmarks cycle through.
func benchPool(n int) ([]*change.Txn, int64) {
	w := newWorkload(1, 5000)
	pool := make([]*change.Txn, n)
	var raw int64
	for i := range pool {
		pool[i] = w.next()
		raw += rawSize(pool[i])
	}
	return pool, raw
}

// BenchmarkAppend appends workload transactions, syncing every `sync` of
// them, and reports throughput in raw change bytes and the ratio of spool
// bytes to raw change bytes.
func BenchmarkAppend(b *testing.B) {
	pool, poolRaw := benchPool(8192)
	for _, bc := range []struct {
		sync  int
		level zstd.EncoderLevel
	}{{100, zstd.SpeedFastest}, {1000, zstd.SpeedFastest}, {1, zstd.SpeedFastest}, {100, zstd.SpeedDefault}} {
		b.Run(fmt.Sprintf("sync=%d/level=%s", bc.sync, bc.level), func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), Level: bc.level, Logger: quietLogger})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			b.SetBytes(poolRaw / int64(len(pool)))
			b.ReportAllocs()
			var raw int64
			for i := 0; b.Loop(); i++ {
				txn := pool[i%len(pool)]
				raw += rawSize(txn)
				if _, err := s.Append(ctx, txn.Source()); err != nil {
					b.Fatal(err)
				}
				if i%bc.sync == bc.sync-1 {
					if err := s.Sync(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := s.Sync(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(s.BytesAfter(0))/float64(raw), "spool/raw")
		})
	}
}

// BenchmarkRead reads a spool of workload transactions back, every change
// decoded (Next), or as stored records for shipping (NextRecord).
func BenchmarkRead(b *testing.B) {
	pool, poolRaw := benchPool(8192)
	s, err := Open(Options{Dir: b.TempDir(), Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const rounds = 4 // about 64 MiB of raw changes
	for range rounds {
		for _, txn := range pool {
			if _, err := s.Append(ctx, txn.Source()); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Sync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	last := s.LastPosition()
	b.Run("txns", func(b *testing.B) {
		b.SetBytes(poolRaw * rounds)
		b.ReportAllocs()
		for b.Loop() {
			r, err := s.NewReader(0)
			if err != nil {
				b.Fatal(err)
			}
			for pos := uint64(0); pos < last; {
				var src change.TxnSource
				if pos, src, err = r.Next(ctx); err != nil {
					b.Fatal(err)
				}
				for {
					if c, err := src.Next(); c == nil || err != nil {
						break
					}
				}
			}
			r.Close()
		}
		b.ReportMetric(float64(s.BytesAfter(0))/float64(poolRaw*rounds), "spool/raw")
	})
	b.Run("records", func(b *testing.B) {
		b.SetBytes(poolRaw * rounds)
		for b.Loop() {
			r, err := s.NewReader(0)
			if err != nil {
				b.Fatal(err)
			}
			for done := false; !done; {
				rec, err := r.NextRecord(ctx)
				if err != nil {
					b.Fatal(err)
				}
				done = rec.Last == last
			}
			r.Close()
		}
	})
}
