package capture

import (
	"context"
	"fmt"
	"math/rand"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// TestLateCommitWithLowerIDs: a transaction that takes low audit ids and
// commits after one with higher ids is not skipped, and is delivered once.
func TestLateCommitWithLowerIDs(t *testing.T) {
	d := newTestDB(t)
	ctx := context.Background()
	d.exec(`CREATE TABLE t (id int PRIMARY KEY, v int)`)
	d.install(InstallOptions{})
	sink := &memSink{}
	r := d.reader(sink, 100)

	a, b := d.conn(), d.conn()
	txA, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := txA.Exec(ctx, `INSERT INTO t VALUES (1, 1)`); err != nil { // low id
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, `INSERT INTO t VALUES (2, 2)`); err != nil { // higher id, commits first
		t.Fatal(err)
	}
	if n := drain(t, r); n != 1 {
		t.Fatalf("delivered %d transactions, want only the committed one", n)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := drain(t, r); n != 1 {
		t.Fatalf("late commit: delivered %d, want 1", n)
	}
	got := sink.all()
	if got[0].Changes[0].New[0].Text != "2" || got[1].Changes[0].New[0].Text != "1" {
		t.Fatalf("order: %v then %v", got[0].Changes[0].New, got[1].Changes[0].New)
	}
	if n := drain(t, r); n != 0 {
		t.Fatalf("delivered %d again", n)
	}
}

// TestConflictingTransactionsArriveInCommitOrder: T2 takes the lowest audit
// id, then waits for a row T1 holds. T1 commits first, so it must be
// delivered first even though T2 holds the lowest id.
func TestConflictingTransactionsArriveInCommitOrder(t *testing.T) {
	d := newTestDB(t)
	ctx := context.Background()
	d.exec(`CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 3) g`)
	d.install(InstallOptions{})
	sink := &memSink{}
	r := d.reader(sink, 100)

	c1, c2 := d.conn(), d.conn()
	t1, _ := c1.Begin(ctx)
	t2, _ := c2.Begin(ctx)
	mustExec(t, t2.Exec, `UPDATE t SET v = 1 WHERE id = 2`) // T2 takes the lowest id
	mustExec(t, t1.Exec, `UPDATE t SET v = 1 WHERE id = 1`)
	mustExec(t, t1.Exec, `UPDATE t SET v = 1 WHERE id = 3`) // T1 locks row 3
	done := make(chan error, 1)
	go func() { // T2 waits for T1's lock on row 3
		_, err := t2.Exec(ctx, `UPDATE t SET v = v + 1 WHERE id = 3`)
		if err == nil {
			err = t2.Commit(ctx)
		}
		done <- err
	}()
	admin := d.conn()
	eventually.That(t, "T2 to wait for T1's lock", 20*time.Second, func() bool {
		var waiting bool
		err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')`, c2.PgConn().PID()).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	drain(t, r)
	got := sink.all()
	if len(got) != 2 {
		t.Fatalf("got %d transactions", len(got))
	}
	if len(got[0].Changes) != 2 || len(got[1].Changes) != 2 || got[1].Changes[1].New[1].Text != "2" {
		t.Fatalf("T2 delivered before T1: %+v", got)
	}
}

// TestConcurrentWritersKeepPerRowOrder: several connections increment
// counters on a few hot rows, some holding their transactions open for a
// while, as the reader polls concurrently. Every increment is +1, so in
// delivery order each row's values must be exactly 1, 2, 3, ...: a swap of
// two conflicting transactions, a skip or a duplicate would break the run.
func TestConcurrentWritersKeepPerRowOrder(t *testing.T) {
	d := newTestDB(t)
	ctx := context.Background()
	const rows, writers, txnsPerWriter = 5, 6, 60
	d.exec(`CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL, noise text);
		CREATE TABLE cold (id bigserial PRIMARY KEY, w int)`)
	d.exec(`INSERT INTO hot SELECT g, 0 FROM generate_series(1, $1::int) g`, rows)
	d.install(InstallOptions{})
	sink := &memSink{}
	r := d.reader(sink, 50) // small batches: many polls interleave with commits

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		c := d.conn()
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < txnsPerWriter; i++ {
				err := func() error {
					tx, err := c.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(ctx)
					// Unrelated rows first: low ids that may commit late.
					if _, err := tx.Exec(ctx, `INSERT INTO cold (w) VALUES ($1)`, w); err != nil {
						return err
					}
					ids := rng.Perm(rows)[:1+rng.Intn(2)]
					sort.Ints(ids) // one lock order: conflicts wait, never deadlock
					for _, id := range ids {
						if _, err := tx.Exec(ctx, `UPDATE hot SET n = n + 1, noise = $2 WHERE id = $1`, id+1, fmt.Sprint(w, i)); err != nil {
							return err
						}
					}
					if rng.Intn(4) == 0 {
						time.Sleep(time.Duration(rng.Intn(3)) * time.Millisecond)
					}
					return tx.Commit(ctx)
				}()
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	stop := make(chan struct{})
	polled := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				polled <- nil
				return
			default:
			}
			if _, err := r.Poll(ctx); err != nil {
				polled <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-polled; err != nil {
		t.Fatalf("poll: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	drain(t, r)

	seen := map[uint64]bool{}
	next := map[string]int{}
	coldRows := 0
	for _, txn := range sink.all() {
		if seen[txn.XID] {
			t.Fatalf("transaction %d delivered twice", txn.XID)
		}
		seen[txn.XID] = true
		for _, c := range txn.Changes {
			if c.Table == "cold" {
				coldRows++
				continue
			}
			id := c.New[0].Text
			n, _ := strconv.Atoi(c.New[1].Text)
			if n != next[id]+1 {
				t.Fatalf("row %s: value %d delivered after %d (transaction %d)", id, n, next[id], txn.XID)
			}
			next[id] = n
		}
	}
	var final, committed int
	d.conn().QueryRow(ctx, `SELECT sum(n), (SELECT count(*) FROM cold) FROM hot`).Scan(&final, &committed)
	sum := 0
	for _, n := range next {
		sum += n
	}
	if sum != final || coldRows != committed {
		t.Fatalf("delivered counters sum %d, table %d; cold rows delivered %d, committed %d", sum, final, coldRows, committed)
	}
	t.Logf("%d transactions delivered in order", len(seen))
}

func mustExec[T any](t *testing.T, f func(context.Context, string, ...any) (T, error), sql string) {
	t.Helper()
	if _, err := f(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestChangesAndTruncate checks each op's shape, including a primary-key
// update, and that TRUNCATE arrives between the rows before and after it.
func TestChangesAndTruncate(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE p (a int, b text, v text, PRIMARY KEY (a, b));
		CREATE TABLE child (id int PRIMARY KEY, a int, b text, FOREIGN KEY (a, b) REFERENCES p ON DELETE CASCADE ON UPDATE CASCADE)`)
	d.install(InstallOptions{})
	d.exec(`INSERT INTO p VALUES (1, 'x', 'one'), (2, 'y', 'two'); INSERT INTO child VALUES (10, 1, 'x')`)
	d.exec(`UPDATE p SET a = 5 WHERE a = 1`) // key update, cascades to child
	d.exec(`DELETE FROM p WHERE a = 2`)
	d.exec(`TRUNCATE p, child`)
	d.exec(`INSERT INTO p VALUES (7, 'z', NULL)`)
	sink := &memSink{}
	drain(t, d.reader(sink, 1000))
	var got []string
	for _, txn := range sink.all() {
		for _, c := range txn.Changes {
			got = append(got, describe(c))
		}
	}
	want := []string{
		`INSERT p new=[1 x one]`, `INSERT p new=[2 y two]`, `INSERT child new=[10 1 x]`,
		`UPDATE p key[a b]=[1 x] new=[5 x one]`, `UPDATE child key[id]=[10] new=[10 5 x]`,
		`DELETE p key[a b]=[2 y]`,
		`TRUNCATE p`, `TRUNCATE child`,
		`INSERT p new=[7 z NULL]`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes:\n got %q\nwant %q", got, want)
	}
}

func describe(c change.Change) string {
	s := c.Op.String() + " " + c.Table
	if len(c.OldKey) > 0 {
		s += fmt.Sprintf(" key%v=%v", c.KeyColumns, texts(c.OldKey))
	}
	if len(c.New) > 0 {
		s += fmt.Sprintf(" new=%v", texts(c.New))
	}
	return s
}

func texts(vs []change.Value) []string {
	var out []string
	for _, v := range vs {
		if v.Null {
			out = append(out, "NULL")
		} else {
			out = append(out, v.Text)
		}
	}
	return out
}

// TestQueuedNotificationsWakeOnePoll: a burst of transactions committed
// before capture looks leaves one notification each queued on the LISTEN
// connection; once the burst is captured they must not each wake a poll
// of an empty audit table.
func TestQueuedNotificationsWakeOnePoll(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	d.install(InstallOptions{})
	sink := &memSink{}
	r := d.reader(sink, 1_000_000)
	c := d.conn()
	const burst = 300
	for i := range burst {
		if _, err := c.Exec(context.Background(), `INSERT INTO t VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	eventually.True(t, "the burst to be captured", 30*time.Second, func() (bool, string) {
		n := len(sink.all())
		return n >= burst, fmt.Sprintf("%d of %d transactions", n, burst)
	})
	// Time for queued notifications to wake polls, if they still did.
	time.Sleep(time.Second)
	polls := r.polls.Load()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if polls > 10 {
		t.Errorf("%d polls for a burst of %d transactions captured at once: queued notifications wake empty polls", polls, burst)
	}
}
