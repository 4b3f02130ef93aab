package capture

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// logicalReader starts a logical reader on d feeding sink, serving in the
// background until the test ends.
func (d *testDB) logicalReader(sink Sink) (*LogicalReader, func()) {
	d.t.Helper()
	cfg, err := pgx.ParseConfig(d.url)
	if err != nil {
		d.t.Fatal(err)
	}
	r := NewLogicalReader(LogicalOptions{ConnConfig: cfg, PollInterval: 100 * time.Millisecond, SequenceSchemas: []string{"public"}}, sink)
	if err := r.Connect(context.Background()); err != nil {
		d.t.Fatalf("connect logical reader: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			d.t.Errorf("logical reader: %v", err)
		}
	}
	var once bool
	d.t.Cleanup(func() {
		if !once {
			stop()
		}
	})
	return r, func() { once = true; stop() }
}

// rowChanges waits until sink holds n row changes (sequence samples are not
// counted) and returns them in order, with their transactions' headers.
func rowChanges(t *testing.T, sink *memSink, n int) ([]change.Change, []change.TxnHeader) {
	t.Helper()
	var out []change.Change
	var hdrs []change.TxnHeader
	eventually.True(t, fmt.Sprintf("%d row changes", n), 20*time.Second, func() (bool, string) {
		out, hdrs = nil, nil
		for _, txn := range sink.all() {
			rows := false
			for _, c := range txn.Changes {
				if c.Op != change.Sequence {
					out = append(out, c)
					rows = true
				}
			}
			if rows {
				hdrs = append(hdrs, txn.TxnHeader)
			}
		}
		return len(out) >= n, fmt.Sprintf("%d row changes: %+v", len(out), out)
	})
	return out, hdrs
}

func TestLogicalInstallRefusesWithoutWalLevelLogical(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	c, err := pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"wal_level": "replica", "max_replication_slots": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE a (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	_, err = Install(ctx, conn, InstallOptions{Schemas: []string{"public"}, Role: config.RoleMaster, Mode: config.CaptureLogical})
	var se *ServerSettingsError
	if !errors.As(err, &se) {
		t.Fatalf("want a ServerSettingsError, got %v", err)
	}
	for _, want := range []string{"wal_level = logical", "max_replication_slots = 2", "restart PostgreSQL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	var objects int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'schedsync')
		+ (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)`).Scan(&objects); err != nil {
		t.Fatal(err)
	}
	if objects != 0 {
		t.Fatalf("a refused install left %d objects behind", objects)
	}
}

func TestLogicalInstallIdempotentAndUninstallLeavesNoSlot(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE nopk (v text);
		CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)`)
	_, err := Install(context.Background(), d.conn(), InstallOptions{Schemas: []string{"public"}, Role: config.RoleMaster, Mode: config.CaptureLogical})
	var npk *NoPrimaryKeyError
	if !errors.As(err, &npk) {
		t.Fatalf("want NoPrimaryKeyError, got %v", err)
	}
	if n := d.count(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != 0 {
		t.Fatalf("a refused install left %d slots", n)
	}
	rep := d.install(InstallOptions{Mode: config.CaptureLogical, AllowNoPK: true})
	if !rep.SlotCreated || !reflect.DeepEqual(rep.Tables, []string{"public.a", "public.nopk"}) ||
		!reflect.DeepEqual(rep.Unlogged, []string{"public.scratch"}) || !reflect.DeepEqual(rep.IdentityFull, []string{"public.nopk"}) {
		t.Fatalf("first install: %+v", rep)
	}
	before := catalogState(t, d)
	rep = d.install(InstallOptions{Mode: config.CaptureLogical, AllowNoPK: true})
	if rep.SlotCreated || rep.SchemaCreated || len(rep.Added) != 0 || len(rep.IdentityFull) != 0 {
		t.Fatalf("second install did something: %+v", rep)
	}
	if after := catalogState(t, d); after != before {
		t.Fatalf("second install changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
	// Installing the other mode over it is refused with the way out.
	_, err = Install(context.Background(), d.conn(), InstallOptions{Schemas: []string{"public"}, Role: config.RoleMaster, Mode: config.CaptureTrigger, AllowNoPK: true})
	var mc *ModeConflictError
	if !errors.As(err, &mc) || !strings.Contains(err.Error(), "uninstall") {
		t.Fatalf("want ModeConflictError, got %v", err)
	}

	// Uninstall refuses while the slot is read, and then leaves nothing.
	sink := &memSink{}
	_, stop := d.logicalReader(sink)
	err = Uninstall(context.Background(), d.conn())
	if err == nil || !strings.Contains(err.Error(), "schedsync stop") {
		t.Fatalf("uninstall with the slot in use: %v", err)
	}
	stop()
	eventually.That(t, "the slot to be released", 20*time.Second, func() bool {
		return d.count(`SELECT count(*) FROM pg_replication_slots WHERE active`) == 0
	})
	if err := Uninstall(context.Background(), d.conn()); err != nil {
		t.Fatal(err)
	}
	left := d.count(`SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())
		+ (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_namespace WHERE nspname = 'schedsync')
		+ (SELECT count(*) FROM pg_class WHERE relname = 'nopk' AND relreplident = 'f')`)
	if left != 0 {
		t.Fatalf("uninstall left %d objects (slot, publication, schema or replica identity)", left)
	}
}

func TestLogicalCapturesEveryKindOfChange(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TYPE mood AS ENUM ('ok', 'sad');
		CREATE TABLE t (k1 text, k2 bytea, f float8, n numeric, ts timestamptz, a int[], j jsonb, m mood, big bytea,
			PRIMARY KEY (k1, k2));
		CREATE TABLE child (id bigserial PRIMARY KEY, t_k1 text);
		CREATE TABLE nopk (v text, w int)`)
	d.install(InstallOptions{Mode: config.CaptureLogical, AllowNoPK: true})
	sink := &memSink{}
	d.logicalReader(sink)
	d.exec(`SET DateStyle = 'SQL, DMY'; SET extra_float_digits = 0;
		INSERT INTO t VALUES ('a', '\x00ff', 'NaN', 'Infinity', 'infinity', '{1,NULL,3}', '{"x": [1, "y"]}', 'sad',
			(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 20000) i)::bytea);
		INSERT INTO child (t_k1) VALUES ('a');
		UPDATE t SET f = -0.1 WHERE k1 = 'a';
		UPDATE t SET k1 = 'b' WHERE k1 = 'a';
		INSERT INTO nopk VALUES ('x', 1), ('x', 1);
		UPDATE nopk SET w = 2 WHERE ctid = (SELECT min(ctid) FROM nopk);
		DELETE FROM t WHERE k1 = 'b';
		TRUNCATE child, nopk`)
	got, hdrs := rowChanges(t, sink, 10)
	ops := ""
	for _, c := range got {
		ops += string(c.Op)
	}
	if ops != "IIUUIIUDTT" {
		t.Fatalf("ops %q, want IIUUIIUDTT: %+v", ops, got)
	}
	ins := got[0]
	wantNew := []string{"a", `\x00ff`, "NaN", "Infinity", "infinity", "{1,NULL,3}", `{"x": [1, "y"]}`, "sad"}
	for i, w := range wantNew {
		if ins.New[i].Text != w {
			t.Errorf("insert column %s = %q, want %q (pinned output settings)", ins.Columns[i], ins.New[i].Text, w)
		}
	}
	// The first update leaves the big TOASTed value unchanged: not sent.
	up := got[2]
	if !up.New[8].Unchanged || up.New[2].Text != "-0.1" || !reflect.DeepEqual(up.KeyColumns, []string{"k1", "k2"}) || up.OldKey[0].Text != "a" {
		t.Fatalf("update without key change: %+v", up)
	}
	move := got[3]
	if move.OldKey[0].Text != "a" || move.New[0].Text != "b" {
		t.Fatalf("key change: old key %v, new %v", move.OldKey, move.New[:2])
	}
	fr := got[6]
	if !reflect.DeepEqual(fr.KeyColumns, []string{"v", "w"}) || fr.OldKey[1].Text != "1" || fr.New[1].Text != "2" {
		t.Fatalf("full-row identity update: %+v", fr)
	}
	if got[7].Op != change.Delete || got[7].OldKey[0].Text != "b" {
		t.Fatalf("delete: %+v", got[7])
	}
	if got[8].Table != "child" || got[9].Table != "nopk" {
		t.Fatalf("truncate: %+v %+v", got[8], got[9])
	}
	for i := 1; i < len(hdrs); i++ {
		if hdrs[i].LSN <= hdrs[i-1].LSN {
			t.Fatalf("commit LSNs not increasing: %+v", hdrs)
		}
	}
	// The sequence of child.id was shipped with the batch.
	eventually.That(t, "the sequence sample", 20*time.Second, func() bool {
		for _, txn := range sink.all() {
			for _, c := range txn.Changes {
				if c.Op == change.Sequence && c.Table == "child_id_seq" && c.New[0].Text == "1" {
					return true
				}
			}
		}
		return false
	})
}

func TestLogicalRestartSkipsWhatTheSpoolHolds(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE t (id int PRIMARY KEY, v int)`)
	rep := d.install(InstallOptions{Mode: config.CaptureLogical})
	// A copy of the slot as it is now, before any change: read from it
	// later, the server sends everything again.
	d.exec(`SELECT pg_copy_logical_replication_slot($1::text::name, ($1::text || '_copy')::name)`, rep.Slot)
	sink := &memSink{}
	r, stop := d.logicalReader(sink)
	d.exec(`INSERT INTO t SELECT i, 0 FROM generate_series(1, 3) i`)
	d.exec(`UPDATE t SET v = 1`)
	rowChanges(t, sink, 6)
	// A snapshot request writes capture_state: it then covers every
	// spooled transaction, and the reader must still know their LSNs.
	if res := <-r.RequestSnapshot(func(context.Context, pgx.Tx) error { return nil }); res.Err != nil {
		t.Fatal(res.Err)
	}
	if n := d.count(`SELECT position FROM schedsync.capture_state`); n < 2 {
		t.Fatalf("capture_state position %d after a snapshot request", n)
	}
	stop()
	d.exec(`UPDATE schedsync.meta SET value = value || '_copy' WHERE key = 'slot'`)
	d.exec(`UPDATE t SET v = 2 WHERE id = 1`)
	r2 := NewLogicalReader(LogicalOptions{ConnConfig: mustConfig(t, d.url)}, sink)
	if err := r2.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r2.Serve(ctx) }()
	rowChanges(t, sink, 7)
	// A later commit as a fence: anything the reader sends again reaches
	// the sink before it.
	d.exec(`UPDATE t SET v = 3 WHERE id = 2`)
	rowChanges(t, sink, 8)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, _ := rowChanges(t, sink, 8)
	if len(got) != 8 || got[6].New[1].Text != "2" || got[7].New[1].Text != "3" {
		t.Fatalf("after restart: %d changes, want 8: v = 2 last of the first 7, then the fence's v = 3: %+v", len(got), got)
	}
}

func TestLogicalSnapshotEqualsItsPosition(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE t (id serial PRIMARY KEY, v int)`)
	d.install(InstallOptions{Mode: config.CaptureLogical})
	sink := &memSink{}
	r, _ := d.logicalReader(sink)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writers := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func() {
			conn, err := pgx.Connect(ctx, d.url)
			if err != nil {
				writers <- err
				return
			}
			defer conn.Close(context.Background())
			for ctx.Err() == nil {
				if _, err := conn.Exec(ctx, `INSERT INTO t (v) VALUES (1)`); err != nil && ctx.Err() == nil {
					writers <- err
					return
				}
			}
			writers <- nil
		}()
	}
	// Snapshots are taken while the writers and capture are in full swing.
	eventually.True(t, "the writers' inserts to be captured", 20*time.Second, func() (bool, string) {
		n := 0
		for _, txn := range sink.all() {
			for _, c := range txn.Changes {
				if c.Op == change.Insert {
					n++
				}
			}
		}
		return n >= 50, fmt.Sprintf("%d captured", n)
	})
	for round := 0; round < 3; round++ {
		var rows int
		res := <-r.RequestSnapshot(func(ctx context.Context, tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&rows)
		})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		// Count the inserts spooled at or before the position.
		spooled := 0
		sink.mu.Lock()
		for i, txn := range sink.txns {
			if sink.pos[i] > res.Position {
				break
			}
			for _, c := range txn.Changes {
				if c.Op == change.Insert {
					spooled++
				}
			}
		}
		sink.mu.Unlock()
		if spooled != rows || rows == 0 {
			t.Fatalf("round %d: the snapshot holds %d rows, the spool up to position %d holds %d inserts", round, rows, res.Position, spooled)
		}
		if res.SequencesAt < res.Position {
			t.Fatalf("sequences at %d, before the position %d", res.SequencesAt, res.Position)
		}
	}
	cancel()
	for w := 0; w < 4; w++ {
		if err := <-writers; err != nil {
			t.Fatal(err)
		}
	}
}

func mustConfig(t *testing.T, url string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (d *testDB) count(sql string) int {
	d.t.Helper()
	c := d.conn()
	defer c.Close(context.Background()) // waits call it again and again
	var n int
	if err := c.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestLogicalStreamFailsBeforeSync: the replication connection dies while
// transactions are appended to the spool and not yet synced. The next
// reader must make them durable and skip them when the slot sends them
// again, not spool them twice.
func TestLogicalStreamFailsBeforeSync(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	d.install(InstallOptions{Mode: config.CaptureLogical})
	for i := 1; i <= 3; i++ {
		d.exec(`INSERT INTO t VALUES ($1)`, i)
	}
	sink := &killingSink{memSink: &memSink{}}
	r := NewLogicalReader(LogicalOptions{ConnConfig: mustConfig(t, d.url), PollInterval: time.Hour}, sink)
	admin := d.conn()
	sink.kill = func() {
		if _, err := admin.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, r.repl.PID()); err != nil {
			t.Errorf("terminate the replication connection: %v", err)
		}
		// Until the reader has the error queued behind what it received
		// (its receive goroutine then returns): it fails before the queue
		// runs dry and it syncs.
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			t.Errorf("the reader did not see its replication connection die")
		}
	}
	if err := r.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Serve(context.Background()); err == nil {
		t.Fatal("the reader survived its replication connection's death")
	}
	if got := len(sink.all()); got == 0 || got > 3 {
		t.Fatalf("%d transactions reached the sink before the stream failed", got)
	}

	_, stop := d.logicalReader(sink.memSink)
	d.exec(`INSERT INTO t VALUES (4)`)
	// A later commit as a fence: anything sent twice reaches the sink
	// before it.
	d.exec(`INSERT INTO t VALUES (5)`)
	rowChanges(t, sink.memSink, 5)
	stop()
	got, _ := rowChanges(t, sink.memSink, 5)
	var ids []string
	for _, c := range got {
		ids = append(ids, c.New[0].Text)
	}
	if fmt.Sprint(ids) != "[1 2 3 4 5]" {
		t.Fatalf("spooled %v, want [1 2 3 4 5] once each", ids)
	}
}
