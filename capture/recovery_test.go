package capture

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// TestCrashAfterSyncBeforeDelete: the sink made a batch durable but the
// reader died before deleting its audit rows. The next reader must not ship
// those transactions again.
func TestCrashAfterSyncBeforeDelete(t *testing.T) {
	d := threeRows(t)
	ctx := context.Background()
	sink := &memSink{}
	r := d.reader(sink, 2)
	// One full poll, then a batch that reaches the sink but is never confirmed.
	if n, err := r.Poll(ctx); err != nil || n != 2 {
		t.Fatalf("first poll: %d %v", n, err)
	}
	tx, err := r.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch, _, err := r.listBatch(ctx, tx, false)
	if err != nil || len(batch) != 1 {
		t.Fatalf("list: %v %v", batch, err)
	}
	if _, err := r.deliver(ctx, tx, batch[0]); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	sink.Sync(ctx)
	r.Close() // crash: audit rows of the third transaction are still there

	d.exec(`INSERT INTO t VALUES (4)`)
	r2 := d.reader(sink, 100) // Connect recovers
	if n := drain(t, r2); n != 1 {
		t.Fatalf("after recovery delivered %d transactions, want only the new one", n)
	}
	var ids []string
	for _, txn := range sink.all() {
		ids = append(ids, txn.Changes[0].New[0].Text)
	}
	if len(ids) != 4 || ids[0] != "1" || ids[1] != "2" || ids[2] != "3" || ids[3] != "4" {
		t.Fatalf("delivered %v, want [1 2 3 4] once each", ids)
	}
	var left, pos int64
	d.conn().QueryRow(ctx, `SELECT (SELECT count(*) FROM schedsync.audit), position FROM schedsync.capture_state`).Scan(&left, &pos)
	if left != 0 || pos != 4 {
		t.Fatalf("audit rows left %d, recorded position %d", left, pos)
	}
}

// threeRows is a database with trigger capture installed on a table t
// that three transactions wrote a row each to.
func threeRows(t *testing.T) *testDB {
	t.Helper()
	d := newTestDB(t)
	d.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	d.install(InstallOptions{})
	for i := 1; i <= 3; i++ {
		d.exec(`INSERT INTO t VALUES ($1)`, i)
	}
	return d
}

// TestNotifyWakesReader: with a poll interval of an hour, only the NOTIFY
// sent at commit can wake Run, so delivery proves the wake-up path.
func TestNotifyWakesReader(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	d.install(InstallOptions{})
	sink := &memSink{}
	r := d.reader(sink, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for i := 1; i <= 3; i++ {
		d.exec(`INSERT INTO t VALUES ($1)`, i)
		eventually.That(t, fmt.Sprintf("insert %d to be delivered (the reader wakes on NOTIFY)", i), 20*time.Second,
			func() bool { return len(sink.all()) >= i })
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestLargeTransactionStreams passes a 100k-row transaction through a sink
// that only counts, so the reader's streaming path is exercised end to end.
func TestLargeTransactionStreams(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE big (id int PRIMARY KEY, payload text)`)
	d.install(InstallOptions{})
	d.exec(`INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g`)
	sink := &memSink{discard: true}
	if n := drain(t, d.reader(sink, 1000)); n != 1 {
		t.Fatalf("delivered %d transactions", n)
	}
	if sink.counted != 100000 {
		t.Fatalf("streamed %d changes, want 100000", sink.counted)
	}
}

// TestSequencesShipped: every batch that delivers rows also ships the
// sequences that moved, so a row never arrives ahead of its sequence value;
// unchanged sequences are not shipped again.
func TestSequencesShipped(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE s (id bigserial PRIMARY KEY, v text); CREATE SEQUENCE other_seq`)
	d.install(InstallOptions{})
	cfgReader := d.reader(&memSink{}, 100) // only to reuse the connection settings
	cfgReader.Close()
	sink := &memSink{}
	r := NewTriggerReader(TriggerOptions{ConnConfig: cfgReader.opts.ConnConfig, BatchChanges: 100, PollInterval: time.Hour, SequenceSchemas: []string{"public"}}, sink)
	if err := r.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d.exec(`INSERT INTO s (v) SELECT 'x' FROM generate_series(1, 3)`)
	drain(t, r)
	d.exec(`INSERT INTO s (v) VALUES ('y')`)
	drain(t, r)
	var got []string
	for _, txn := range sink.all() {
		for _, c := range txn.Changes {
			if c.Op == 'S' {
				got = append(got, c.Table+"="+c.New[0].Text)
			}
		}
	}
	// other_seq was never used (last_value NULL) and is not shipped.
	if fmt.Sprint(got) != "[s_id_seq=3 s_id_seq=4]" {
		t.Fatalf("sequence changes: %v", got)
	}
	txns := sink.all()
	if txns[1].Changes[0].Op != 'S' || txns[3].Changes[0].Op != 'S' {
		t.Fatalf("sequence transaction does not follow its batch")
	}
}

// TestSnapshotAnsweredAfterConfirm: a snapshot request is answered only
// once capture_state shows the batch delivered with it, so that a backup
// that drains capture this way and then reads capture_state in its own
// snapshot gets the position the request reported, not an older one whose
// backlog could exceed spool.max_backlog.
func TestSnapshotAnsweredAfterConfirm(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	d.install(InstallOptions{})
	r := d.reader(&memSink{}, 100)
	check := d.conn()
	for round := 0; round < 5; round++ {
		d.exec(`INSERT INTO t SELECT g FROM generate_series($1::int * 1000 + 1, $1::int * 1000 + 1000) g`, round)
		done := r.RequestSnapshot(func(context.Context, pgx.Tx) error { return nil })
		polled := make(chan error, 1)
		go func() {
			_, err := r.Poll(context.Background())
			polled <- err
		}()
		res := <-done
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		var pos int64
		if err := check.QueryRow(context.Background(), `SELECT position FROM schedsync.capture_state`).Scan(&pos); err != nil {
			t.Fatal(err)
		}
		if uint64(pos) != res.Position {
			t.Fatalf("round %d: snapshot answered at position %d while capture_state shows %d", round, res.Position, pos)
		}
		if err := <-polled; err != nil {
			t.Fatal(err)
		}
	}
}

// killingSink is a memSink that terminates the reader's database session
// right after the first transaction of a poll reaches it: the poll then
// fails with that transaction appended to the spool but not durable.
type killingSink struct {
	*memSink
	kill func()
	done bool
}

func (k *killingSink) Append(ctx context.Context, src change.TxnSource) (uint64, error) {
	pos, err := k.memSink.Append(ctx, src)
	if err == nil && !k.done {
		k.done = true
		k.kill()
	}
	return pos, err
}

// TestPollFailsMidBatch: the master's session dies in the middle of a
// batch, after some of its transactions reached the spool and before the
// spool synced them. Their audit rows stay; the next reader must make them
// durable and delete those rows, not deliver them a second time (a
// keyless table would get its rows twice on the slave).
func TestPollFailsMidBatch(t *testing.T) {
	d := threeRows(t)
	ctx := context.Background()
	sink := &killingSink{memSink: &memSink{}}
	r := d.reader(sink, 100)
	admin := d.conn()
	sink.kill = func() {
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, r.conn.PgConn().PID()); err != nil {
			t.Errorf("terminate the reader's session: %v", err)
		}
	}
	if n, err := r.Poll(ctx); err == nil {
		t.Fatalf("the poll survived its session's death (%d transactions)", n)
	}
	r.Close()
	if got := len(sink.all()); got != 1 {
		t.Fatalf("%d transactions reached the sink before the poll failed, want 1", got)
	}

	r2 := d.reader(sink.memSink, 100) // Connect recovers
	drain(t, r2)
	var ids []string
	for _, txn := range sink.all() {
		ids = append(ids, txn.Changes[0].New[0].Text)
	}
	if fmt.Sprint(ids) != "[1 2 3]" {
		t.Fatalf("delivered %v, want [1 2 3] once each", ids)
	}
}
