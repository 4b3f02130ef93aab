package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/change"
)

// small makes records and segments small enough that a few hundred
// transactions exercise spilling, index entries and sealing.
func small(dir string) Options {
	return Options{Dir: dir, SegmentSize: 16 << 10, RecordSize: 4 << 10}
}

func TestRoundTrip(t *testing.T) {
	s := openT(t, small(t.TempDir()))
	appendN(t, s, 500)
	if s.DurablePosition() >= 500 { // sealing a segment syncs it, nothing else does
		t.Fatalf("durable %d before Sync", s.DurablePosition())
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.LastPosition() != 500 || s.DurablePosition() != 500 {
		t.Fatalf("last %d durable %d, want 500", s.LastPosition(), s.DurablePosition())
	}
	if n := len(segFiles(t, s.opts.Dir)); n < 3 {
		t.Fatalf("%d segments, want several", n)
	}
	// From the start, and from positions inside every kind of record:
	// before and after large transactions, and at the very end.
	for _, after := range []uint64{0, 1, 96, 97, 98, 193, 194, 250, 499, 500} {
		readRange(t, s, after, 500)
	}
}

func TestReaderSeesOnlySyncedTransactions(t *testing.T) {
	s := openT(t, small(t.TempDir()))
	appendN(t, s, 10)
	r, err := s.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, _, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unsynced transaction delivered: %v", err)
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 10; want++ {
		pos, src, err := r.Next(context.Background())
		if err != nil || pos != want {
			t.Fatalf("got %d %v, want %d", pos, err, want)
		}
		if want%2 == 0 { // reading a transaction partly or not at all is fine
			continue
		}
		if err := checkTxn(pos, src); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReopenContinuesPositions(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, small(dir))
	appendN(t, s, 300)
	if err := s.Close(); err != nil { // Close syncs
		t.Fatal(err)
	}
	s = openT(t, small(dir))
	if s.LastPosition() != 300 || s.DurablePosition() != 300 || s.FirstPosition() != 1 {
		t.Fatalf("after reopen: last %d durable %d first %d", s.LastPosition(), s.DurablePosition(), s.FirstPosition())
	}
	appendN(t, s, 400)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	readRange(t, s, 0, 400)
	readRange(t, s, 299, 400)
}

func TestLockedAgainstSecondOpen(t *testing.T) {
	dir := t.TempDir()
	openT(t, small(dir))
	if s, err := Open(small(dir)); err == nil {
		s.Close()
		t.Fatal("second Open of the same directory succeeded")
	}
}

func TestRetention(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, small(dir))
	appendN(t, s, 1000)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := dirBytes(t, dir)
	if got := s.BytesAfter(0); got != total {
		t.Fatalf("BytesAfter(0) = %d, files hold %d", got, total)
	}
	if got := s.BytesAfter(1000); got != 0 {
		t.Fatalf("BytesAfter(last) = %d, want 0", got)
	}
	prev := total
	for p := uint64(0); p <= 1000; p += 50 {
		got := s.BytesAfter(p)
		if got > prev {
			t.Fatalf("BytesAfter(%d) = %d grew from %d", p, got, prev)
		}
		prev = got
	}

	g := s.segs[2] // a sealed segment in the middle
	if err := s.TruncateBefore(g.hi); err != nil {
		t.Fatal(err)
	}
	if s.FirstPosition() != g.lo {
		t.Fatalf("first position %d after truncating before %d, want %d (segment %s kept: it holds %d)", s.FirstPosition(), g.hi, g.lo, g.name, g.hi)
	}
	if _, err := s.NewReader(g.lo - 2); !errors.Is(err, ErrNotRetained) {
		t.Fatalf("reader before the first retained position: %v", err)
	}
	readRange(t, s, g.lo-1, 1000)
	if got := s.BytesAfter(0); got != dirBytes(t, dir) {
		t.Fatalf("BytesAfter(0) = %d after truncation, files hold %d", got, dirBytes(t, dir))
	}

	// Truncating everything keeps the active segment and the positions.
	if err := s.TruncateBefore(2000); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d segments left, want only the active one", n)
	}
	appendN(t, s, 1010)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, small(dir))
	first := s.FirstPosition()
	readRange(t, s, first-1, 1010)
}

func dirBytes(t testing.TB, dir string) int64 {
	var n int64
	for _, name := range segFiles(t, dir) {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

func TestReaderTailsLiveAppends(t *testing.T) {
	s := openT(t, small(t.TempDir()))
	const n = 300
	r, err := s.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	woke := make(chan uint64, n)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for want := uint64(1); want <= n; want++ {
			if err := nextInOrder(ctx, r, want); err != nil {
				done <- err
				return
			}
			woke <- want
		}
		done <- nil
	}()
	// The reader must be blocked before anything is appended.
	select {
	case p := <-woke:
		t.Fatalf("reader returned %d from an empty spool", p)
	case <-time.After(20 * time.Millisecond):
	}
	ctx := context.Background()
	for p := uint64(1); p <= n; p++ {
		appendN(t, s, p)
		if p%7 == 0 || p == n {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			// The reader wakes up for what was synced.
			for got := uint64(0); got < p; {
				select {
				case got = <-woke:
				case <-time.After(10 * time.Second):
					t.Fatalf("reader did not wake up for %d", p)
				}
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCloseWakesReaders(t *testing.T) {
	s := openT(t, small(t.TempDir()))
	r, err := s.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	errc := make(chan error, 1)
	go func() {
		_, _, err := r.Next(context.Background())
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("reader got %v after Close, want ErrClosed", err)
	}
}

func TestAppendAt(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, small(dir))
	ctx := context.Background()
	positions := []uint64{5, 6, 97, 1000, 1001, 5000}
	for _, p := range positions {
		if err := s.AppendAt(ctx, p, genFor(p)); err != nil {
			t.Fatalf("append at %d: %v", p, err)
		}
	}
	for _, p := range []uint64{5000, 4999, 1} {
		if err := s.AppendAt(ctx, p, genFor(p)); !errors.Is(err, ErrOutOfOrder) {
			t.Fatalf("append at %d after 5000: %v, want ErrOutOfOrder", p, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, small(dir))
	if s.LastPosition() != 5000 {
		t.Fatalf("last %d after reopen", s.LastPosition())
	}
	for i, after := range []uint64{0, 5, 50, 1000, 4999} {
		r, err := s.NewReader(after)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range positions {
			if want <= after {
				continue
			}
			pos, src, err := r.Next(ctx)
			if err != nil || pos != want {
				t.Fatalf("case %d: got %d %v, want %d", i, pos, err, want)
			}
			if err := checkTxn(pos, src); err != nil {
				t.Fatal(err)
			}
		}
		r.Close()
	}
}

// failingSource fails after n changes.
type failingSource struct {
	*genSource
	failAt int
}

var errSource = errors.New("source broke")

func (f *failingSource) Next() (*change.Change, error) {
	if f.i >= f.failAt {
		return nil, errSource
	}
	return f.genSource.Next()
}

func TestSourceErrorLeavesNoTrace(t *testing.T) {
	s := openT(t, small(t.TempDir()))
	ctx := context.Background()
	appendN(t, s, 3)
	// A small transaction that fails still in the buffer, and a large one
	// that fails after records of it were written.
	for _, failAt := range []int{2, 3000} {
		bad := &failingSource{genSource: newGen(4, 5000), failAt: failAt}
		if _, err := s.Append(ctx, bad); !errors.Is(err, errSource) {
			t.Fatalf("append of failing source: %v", err)
		}
		if s.LastPosition() != 3 {
			t.Fatalf("last %d after a failed append", s.LastPosition())
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Append(cctx, newGen(4, 5000)); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with a cancelled context: %v", err)
	}
	bad := change.Change{Op: change.Update, Table: "t", Columns: []string{"a"}, New: []change.Value{change.Text("1")}}
	badTxn := &change.Txn{Changes: []change.Change{bad}}
	if _, err := s.Append(ctx, badTxn.Source()); err == nil {
		t.Fatal("append of an invalid change succeeded")
	}
	appendN(t, s, 10) // position 4 is reused
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	readRange(t, s, 0, 10)
}

func TestReaderSkipsUnreadChanges(t *testing.T) {
	s := openT(t, small(t.TempDir()))
	appendN(t, s, 200)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := s.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for want := uint64(1); want <= 200; want++ {
		pos, src, err := r.Next(context.Background())
		if err != nil || pos != want {
			t.Fatalf("got %d %v, want %d", pos, err, want)
		}
		if txnSize(pos) > 3 {
			src.Next() // read one change, leave the rest
		}
		if want == 100 {
			_, _, _ = r.Next(context.Background())
			if _, err := src.Next(); err == nil || err == io.EOF {
				t.Fatalf("stale source still reads: %v", err)
			}
			want++
		}
	}
}

// TestConcurrentUse appends in one goroutine, syncs from another, and reads,
// measures and truncates from others at the same time (run with -race).
func TestConcurrentUse(t *testing.T) {
	s := openT(t, small(t.TempDir()))
	const n = 1500
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 8)
	go func() {
		for p := uint64(1); p <= n; p++ {
			if _, err := s.Append(ctx, genFor(p)); err != nil {
				errc <- err
				return
			}
		}
		errc <- s.Sync(ctx)
	}()
	go func() {
		for s.DurablePosition() < n && ctx.Err() == nil {
			if err := s.Sync(ctx); err != nil {
				errc <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		errc <- nil
	}()
	var applied [3]atomic.Uint64 // what each reader has consumed
	for i := range applied {
		go func() {
			r, err := s.NewReader(0)
			if err != nil {
				errc <- err
				return
			}
			defer r.Close()
			for want := uint64(1); want <= n; want++ {
				if err := nextInOrder(ctx, r, want); err != nil {
					errc <- err
					return
				}
				_ = s.BytesAfter(want)
				applied[i].Store(want)
			}
			errc <- nil
		}()
	}
	go func() { // deletes what every reader has consumed, as a master does
		for s.DurablePosition() < n && ctx.Err() == nil {
			low := uint64(n)
			for i := range applied {
				low = min(low, applied[i].Load())
			}
			if err := s.TruncateBefore(low + 1); err != nil {
				errc <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		errc <- nil
	}()
	for range 6 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSyncBesideAppends: Sync runs its fdatasync without the writer lock,
// so appends (and segment rolls, with tiny segments) go on during it, and
// a Close can come in the middle. Whatever Sync published is durable and
// readable in order, a reader following along never sees a position
// before it is durable, and after a reopen every appended transaction
// that a Sync covered is there, exactly.
func TestSyncBesideAppends(t *testing.T) {
	o := small(t.TempDir())
	s := openT(t, o)
	ctx := context.Background()
	const total = 400
	done := make(chan struct{})
	syncErr := make(chan error, 1)
	go func() {
		defer close(syncErr)
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := s.Sync(ctx); err != nil {
				syncErr <- err
				return
			}
		}
	}()
	follow := make(chan error, 1)
	go func() {
		r, err := s.NewReader(0)
		if err != nil {
			follow <- err
			return
		}
		defer r.Close()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for want := uint64(1); want <= total; want++ {
			pos, src, err := r.Next(rctx)
			if err == nil && pos > s.DurablePosition() {
				err = fmt.Errorf("read position %d beyond the durable %d", pos, s.DurablePosition())
			}
			if err == nil && pos != want {
				err = fmt.Errorf("read position %d, want %d", pos, want)
			}
			if err == nil {
				err = checkTxn(pos, src)
			}
			if err != nil {
				follow <- err
				return
			}
		}
		follow <- nil
	}()
	appendN(t, s, total)
	close(done)
	if err := <-syncErr; err != nil {
		t.Fatalf("sync beside appends: %v", err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-follow; err != nil {
		t.Fatalf("reader following the syncs: %v", err)
	}
	// A Close racing a Sync: either finishes the other's work.
	closing := make(chan error, 1)
	go func() { closing <- s.Sync(ctx) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closing; err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("sync racing close: %v", err)
	}
	s2 := openT(t, o)
	readAll(t, s2, total)
}
