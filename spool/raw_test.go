package spool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// ship copies records from master (after position `after`) into slave until
// the slave has transaction `to`.
func ship(t *testing.T, master, slave *Spool, after, to uint64) {
	t.Helper()
	r, err := master.NewReader(after)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for slave.LastPosition() < to {
		rec, err := r.NextRecord(ctx)
		if err != nil {
			t.Fatalf("next record: %v", err)
		}
		if err := slave.AppendRecord(ctx, rec.Data); err != nil {
			t.Fatalf("append record %d..%d: %v", rec.First, rec.Last, err)
		}
	}
	if err := slave.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestShipRecords(t *testing.T) {
	master := openT(t, small(t.TempDir()))
	appendN(t, master, 600)
	if err := master.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	slave := openT(t, small(t.TempDir()))
	ship(t, master, slave, 0, 600)
	readRange(t, slave, 0, 600)

	// A slave restored at a position in the middle of a record gets that
	// record cut to the transactions it lacks.
	for _, after := range []uint64{96, 97, 98, 250, 599} {
		s := openT(t, small(t.TempDir()))
		ship(t, master, s, after, 600)
		readRange(t, s, after, 600)
	}
}

func TestShipInterruptedAndRolledBack(t *testing.T) {
	master := openT(t, Options{Dir: t.TempDir(), RecordSize: 1 << 10})
	appendN(t, master, 300)
	if err := master.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	slave := openT(t, small(t.TempDir()))
	ctx := context.Background()
	r, err := master.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	// Ship up to the middle of large transaction 97.
	var open uint64
	for {
		rec, err := r.NextRecord(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := slave.AppendRecord(ctx, rec.Data); err != nil {
			t.Fatal(err)
		}
		if h, _ := parseRecordHeader(rec.Data); !h.endsTxn() && h.last == 97 {
			open = h.last
			break
		}
	}
	r.Close()
	if slave.LastPosition() >= open {
		t.Fatalf("unfinished transaction %d counted: last %d", open, slave.LastPosition())
	}
	if _, err := slave.Append(ctx, genFor(open)); err == nil {
		t.Fatal("Append while a received transaction is unfinished succeeded")
	}
	// Synced, the unfinished transaction is still invisible.
	if err := slave.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	readRange(t, slave, 0, slave.LastPosition())
	if err := slave.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	ship(t, master, slave, slave.LastPosition(), 300)
	readRange(t, slave, 0, 300)
}

func TestAppendRecordRejects(t *testing.T) {
	master := openT(t, Options{Dir: t.TempDir(), RecordSize: 1 << 10})
	appendN(t, master, 100)
	if err := master.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := master.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	var recs [][]byte
	for range 3 {
		rec, err := r.NextRecord(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, append([]byte(nil), rec.Data...))
	}
	slave := openT(t, small(t.TempDir()))
	bad := append([]byte(nil), recs[0]...)
	bad[len(bad)-1] ^= 1
	if err := slave.AppendRecord(ctx, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt record: %v", err)
	}
	if err := slave.AppendRecord(ctx, recs[0][:len(recs[0])-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short record: %v", err)
	}
	if err := slave.AppendRecord(ctx, recs[1]); err != nil {
		t.Fatal(err)
	}
	for _, rec := range [][]byte{recs[0], recs[1]} {
		if err := slave.AppendRecord(ctx, rec); !errors.Is(err, ErrOutOfOrder) {
			t.Fatalf("record behind the spool: %v", err)
		}
	}
	if err := slave.AppendRecord(ctx, recs[2]); err != nil {
		t.Fatal(err)
	}
}
