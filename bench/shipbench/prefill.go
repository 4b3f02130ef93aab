package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/schedsync/schedsync/spool"
)

// backlog describes the spool written by prefill.
type backlog struct {
	Txns       uint64        // transactions, at positions 1..Txns
	RawBytes   int64         // raw change bytes (change.Size)
	SpoolBytes int64         // spool bytes after position 0, framing included
	Elapsed    time.Duration // time to generate and append them
}

func (b backlog) ratio() float64 { return float64(b.SpoolBytes) / float64(b.RawBytes) }

// poolSize is the number of distinct transactions cycled: about 16 MiB of
// raw changes, 64 records.
const poolSize = 8192

// syncEvery bounds how much is appended between two syncs, as capture's
// batches do; the segments are synced as they fill anyway.
const syncEvery = 1000

// prefill appends Quartz-like transactions to the spool in dir until it
// holds at least size spool bytes, syncs and closes it. The spool must not
// be open elsewhere (the master service is not running yet).
//
// The transactions carry epoch, the master's capture history (its
// capture_state.epoch after install), as if its capture had spooled them:
// a slave that starts empty is admitted only to one history.
func prefill(ctx context.Context, dir string, size int64, noise int, epoch uint64) (backlog, error) {
	start := time.Now()
	sp, err := spool.Open(spool.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return backlog{}, fmt.Errorf("open master spool: %w", err)
	}
	defer sp.Close()
	if last := sp.LastPosition(); last != 0 {
		return backlog{}, fmt.Errorf("master spool %s already holds positions up to %d", dir, last)
	}
	txns, sizes := newGenerator(1, 5000, noise).pool(poolSize)
	var b backlog
	for i := uint64(0); sp.BytesAfter(0) < size; i++ {
		txn := txns[i%poolSize]
		stamp(txn, i+1)
		txn.Epoch = epoch
		pos, err := sp.Append(ctx, txn.Source())
		if err != nil {
			return backlog{}, fmt.Errorf("append transaction %d: %w", i+1, err)
		}
		b.Txns, b.RawBytes = pos, b.RawBytes+sizes[i%poolSize]
		if pos%syncEvery == 0 {
			if err := sp.Sync(ctx); err != nil {
				return backlog{}, fmt.Errorf("sync master spool: %w", err)
			}
		}
	}
	if err := sp.Sync(ctx); err != nil {
		return backlog{}, fmt.Errorf("sync master spool: %w", err)
	}
	b.SpoolBytes = sp.BytesAfter(0)
	if err := sp.Close(); err != nil {
		return backlog{}, fmt.Errorf("close master spool: %w", err)
	}
	b.Elapsed = time.Since(start)
	return b, nil
}
