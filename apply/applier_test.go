package apply_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

const mixedSchema = `
CREATE TYPE state AS ENUM ('WAITING', 'ACQUIRED', 'COMPLETE');
CREATE TABLE job (sched text, name text, grp text, data bytea, meta jsonb, tags text[], ratio float8, amount numeric,
	at timestamptz, until timestamp, st state, PRIMARY KEY (sched, name, grp));
CREATE TABLE trig (sched text, name text, grp text, job_name text, next_fire bigint,
	PRIMARY KEY (sched, name, grp),
	FOREIGN KEY (sched, job_name, grp) REFERENCES job (sched, name, grp) ON DELETE CASCADE ON UPDATE CASCADE);
CREATE TABLE event (id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb);
CREATE TABLE blobkey (k bytea PRIMARY KEY, v int);
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, doubled int GENERATED ALWAYS AS (length(v) * 2) STORED);
`

// TestReplayMixedWorkload replays inserts, updates (key updates included),
// deletes, FK cascades, TRUNCATE, identity and generated columns, bytea
// keys, enums, arrays, jsonb, NaN and infinities, and sequences; the slave
// must end exactly equal.
func TestReplayMixedWorkload(t *testing.T) {
	r := newRig(t, mixedSchema, false)
	m := r.MasterURL
	r.Exec(m, `INSERT INTO job VALUES
		('s', 'j1', 'g', '\x00ff5c22', '{"a": [1, 2.50, null], "b": "q\"uote"}', '{a,"b c",NULL,""}', 'NaN', 'NaN', 'infinity', '-infinity', 'WAITING'),
		('s', 'j2', 'g', '', 'null', '{}', '-Infinity', '1.500', '2026-01-01 10:00:00+02', '2026-01-01 10:00:00.123456', NULL),
		('s', 'j3', 'g2', NULL, NULL, NULL, 1e-300, '-0.0001', NULL, NULL, 'COMPLETE')`)
	r.Exec(m, `INSERT INTO trig VALUES ('s', 't1', 'g', 'j1', 100), ('s', 't2', 'g', 'j2', 200), ('s', 't3', 'g2', 'j3', 300)`)
	r.Exec(m, `INSERT INTO event (kind, payload) SELECT 'e' || g, jsonb_build_object('n', g) FROM generate_series(1, 50) g`)
	r.Exec(m, `INSERT INTO blobkey VALUES ('\x00', 1), ('\x0001', 2), ('', 3)`)
	r.Exec(m, `INSERT INTO ident (v) VALUES ('a'), ('bb')`)
	r.Capture()
	r.ApplyAll()
	r.RequireEqual()

	r.Exec(m, `UPDATE job SET name = 'j1-renamed', data = data || '\x01' WHERE name = 'j1'`) // key update
	r.Exec(m, `UPDATE trig SET next_fire = next_fire + 1, job_name = 'j1-renamed' WHERE name = 't1'`)
	r.Exec(m, `DELETE FROM job WHERE name = 'j2'`) // cascades to t2
	r.Exec(m, `UPDATE blobkey SET k = '\x02' WHERE k = '\x00'`)
	r.Exec(m, `DELETE FROM event WHERE id % 3 = 0; UPDATE event SET payload = payload || '{"x": true}' WHERE id % 3 = 1`)
	r.Exec(m, `UPDATE ident SET v = 'ccc' WHERE v = 'a'`)
	r.Exec(m, `TRUNCATE trig, job`)
	r.Exec(m, `INSERT INTO job (sched, name, grp, st) VALUES ('s', 'after', 'g', 'ACQUIRED')`)
	r.Exec(m, `SELECT nextval('event_id_seq') FROM generate_series(1, 10)`) // used, no rows
	r.Exec(m, `INSERT INTO event (kind) VALUES ('last')`)
	r.Capture()
	r.ApplyAll()
	r.RequireEqual()
}

// TestExactlyOnceAcrossApplierCrashes kills the applier again and again
// and restarts it: as a group's commit returns, in the middle of the next
// group before any of it is sent, with half of it sent (the server rolls
// back), or with its COMMIT sent and the outcome never seen (the server
// commits). Each run first commits a group or two, so every restart makes
// progress however slow the machine. A table without a primary key is not
// idempotent under replay, so a transaction applied twice would show as a
// duplicate row; after every kill the slave must hold exactly the
// transactions up to its applied position.
func TestExactlyOnceAcrossApplierCrashes(t *testing.T) {
	r := newRig(t, `CREATE TABLE log (n int, note text); CREATE TABLE counter (id int PRIMARY KEY, n int)`, true)
	r.Exec(r.MasterURL, `INSERT INTO counter VALUES (1, 0)`)
	for i := 1; i <= 300; i++ {
		r.Exec(r.MasterURL, fmt.Sprintf(`INSERT INTO log VALUES (%d, 'x'); UPDATE counter SET n = n + 1`, i))
	}
	r.Capture()
	end := r.Spool.DurablePosition()
	rng := rand.New(rand.NewSource(3))
	slave := r.Conn(r.SlaveURL)
	var kills [killPoints]int
	unseenCommits := 0
	pos := appliedExactly(t, slave)
	restarts := 0
	for pos < end {
		restarts++
		ctx, cancel := context.WithCancel(context.Background())
		plan := newKillPlan(rng, cancel, end)
		app := fmt.Sprintf("crashing-applier-%d", restarts)
		// About 47 bytes of changes per transaction: groups of 1 to 9.
		a, err := plan.applier(r.SlaveURL, app, apply.SpoolLog(r.Spool), 1+rng.Intn(420))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d, to be killed %s: %v", restarts, plan, err)
			}
		case <-time.After(time.Minute):
			cancel()
			t.Fatalf("run %d, to be killed %s, neither got there nor ended (applied %d)", restarts, plan, a.Applied())
		}
		cancel()
		// The killed session's backend may still be working through what
		// it was sent (a COMMIT) while the next run starts: apply must
		// notice when that commit lands under it (see setApplied), and the
		// checks below prove it did; no wait for the dead session.
		if restarts%2 == 0 {
			// Every other run, the killed session's backend finishes
			// first, so that a COMMIT it was sent shows here as a commit
			// the applier never saw; on the others the next run races
			// it, and set_applied must catch it.
			eventually.True(t, "the killed session's backend to end", 30*time.Second, func() (bool, string) {
				var n int
				err := slave.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
				return err == nil && n == 0, fmt.Sprintf("%d backends, %v", n, err)
			})
		}
		before := pos
		pos = appliedExactly(t, slave)
		if pos <= before {
			t.Fatalf("run %d, killed %s, made no progress from position %d", restarts, plan, before)
		}
		if pos < end {
			kills[plan.point]++
		}
		if pos > plan.committed {
			unseenCommits++
		}
	}
	r.RequireEqual()
	for point, n := range kills {
		if n == 0 {
			t.Errorf("the applier was never killed %s in %d runs", killPointNames[point], restarts)
		}
	}
	if unseenCommits == 0 {
		t.Errorf("no kill left a commit the applier did not see; the hardest case was not tested")
	}
	t.Logf("converged after %d applier runs, killed %v times %v; %d kills left a commit the applier never saw",
		restarts, kills, killPointNames, unseenCommits)
}

// appliedExactly reads the slave's applied position and checks, in the
// same snapshot, that the slave holds exactly the transactions up to it,
// each once: position 1 inserted the counter, position i+1 the log row
// n = i, which it also counted.
func appliedExactly(t *testing.T, slave *pgx.Conn) uint64 {
	t.Helper()
	var pos, rows, distinct, last, counter int64
	err := slave.QueryRow(context.Background(), `SELECT (SELECT applied_position FROM schedsync.state WHERE id = 1),
		count(*), count(DISTINCT n), coalesce(max(n), 0), coalesce((SELECT n FROM counter WHERE id = 1), -1) FROM log`).
		Scan(&pos, &rows, &distinct, &last, &counter)
	if err != nil {
		t.Fatal(err)
	}
	if want := max(pos-1, 0); rows != want || distinct != want || last != want || counter != pos-1 {
		t.Fatalf("at applied position %d the slave holds %d log rows (%d distinct, up to n = %d) and counter %d; want %d, %d, %d and %d",
			pos, rows, distinct, last, counter, want, want, want, pos-1)
	}
	return uint64(pos)
}

// TestGroupingCommitsFewerTransactions: a backlog is applied in groups.
func TestGroupingCommitsFewerTransactions(t *testing.T) {
	r := newRig(t, `CREATE TABLE t (id int PRIMARY KEY, v int)`, false)
	for i := 0; i < 200; i++ {
		r.Exec(r.MasterURL, `INSERT INTO t VALUES ($1, $1)`, i)
	}
	r.Capture()
	var commits atomic.Int64
	r.ApplyWith(r.Applier(func(uint64, time.Time) { commits.Add(1) }))
	r.RequireEqual()
	if n := commits.Load(); n >= 100 {
		t.Fatalf("%d commits for 200 waiting transactions: not grouped", n)
	}
}

// TestSchemaMismatchStops: a slave table without a column the master sends
// stops apply with an error naming the table and column; nothing is applied.
func TestSchemaMismatchStops(t *testing.T) {
	r := newRig(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`, false)
	r.Exec(r.SlaveURL, `ALTER TABLE t DROP COLUMN v`)
	r.Exec(r.MasterURL, `INSERT INTO t VALUES (1, 'kept')`)
	r.Capture()
	err := runUntilError(t, r)
	if !errors.Is(err, apply.ErrSchema) || !strings.Contains(err.Error(), `"public"."t"`) || !strings.Contains(err.Error(), `column "v"`) {
		t.Fatalf("want apply.ErrSchema naming public.t and column v, got %v", err)
	}
	if pos, _ := apply.ReadApplied(context.Background(), r.Conn(r.SlaveURL)); pos != 0 {
		t.Fatalf("applied position moved to %d", pos)
	}
	// Fixing the schema lets apply resume and converge.
	r.Exec(r.SlaveURL, `ALTER TABLE t ADD COLUMN v text`)
	r.ApplyAll()
	r.RequireEqual()
}

// TestUniqueConflictFallsBackToPerChange replays from position 0 onto a
// slave that already holds a later state (as after a restore): the first
// insert collides on a unique constraint with a row that the rest of the
// stream rewrites. Apply must converge rather than fail: with the default
// grouping, and with groups of one transaction each (apply.batch_max_delay
// at its least), where the very first group of this slave, which started
// empty, fails, and the change-by-change replay must still take the
// master's capture history as the slave's first.
func TestUniqueConflictFallsBackToPerChange(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{{"default grouping", 0}, {"groups of one transaction", time.Nanosecond}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, `CREATE TABLE u (id int PRIMARY KEY, name text UNIQUE, v int)`, false)
			m := r.MasterURL
			r.Exec(m, `INSERT INTO u VALUES (1, 'a', 1)`)
			r.Exec(m, `UPDATE u SET name = 'b' WHERE id = 1`)
			r.Exec(m, `INSERT INTO u VALUES (2, 'a', 2)`)
			r.Exec(m, `UPDATE u SET v = 20 WHERE id = 2`)
			r.Capture()
			// The slave starts from the state after the third transaction.
			r.Exec(r.SlaveURL, `INSERT INTO u VALUES (1, 'b', 1), (2, 'a', 2)`)
			cfg, _ := pgx.ParseConfig(r.SlaveURL)
			r.ApplyWith(apply.New(apply.Options{ConnConfig: cfg, BatchMaxDelay: tc.delay}, apply.SpoolLog(r.Spool)))
			r.RequireEqual()
		})
	}
}

// TestLargeTransaction applies a 100k-row transaction atomically.
func TestLargeTransaction(t *testing.T) {
	r := newRig(t, `CREATE TABLE big (id int PRIMARY KEY, payload text)`, false)
	r.Exec(r.MasterURL, `INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 100000) g`)
	r.Capture()
	r.ApplyAll()
	r.RequireEqual()
}

// TestApplyKeepsToItsCaptureHistory: a slave that started empty takes the
// capture history of the first transaction it applies and commits it with
// its position; a transaction of another history (capture installed again
// on the master) then stops apply with ErrHistory before any of its rows
// lands, and nothing moves.
func TestApplyKeepsToItsCaptureHistory(t *testing.T) {
	r := newRig(t, `CREATE TABLE k (id int PRIMARY KEY, v text); CREATE TABLE nokey (v text)`, true)
	r.Exec(r.MasterURL, `INSERT INTO k VALUES (1, 'a'); INSERT INTO nokey VALUES ('x'), ('x')`)
	r.Capture()
	r.ApplyAll()
	r.RequireEqual()
	epoch := r.Reader.Epoch()
	state := func() (applied, epoch int64) {
		t.Helper()
		if err := r.Conn(r.SlaveURL).QueryRow(context.Background(),
			`SELECT applied_position, capture_epoch FROM schedsync.state`).Scan(&applied, &epoch); err != nil {
			t.Fatal(err)
		}
		return applied, epoch
	}
	applied, got := state()
	if epoch == 0 || uint64(got) != epoch {
		t.Fatalf("the slave's capture history is %x after its first apply, the master's %x", got, epoch)
	}

	other := &change.Txn{
		TxnHeader: change.TxnHeader{XID: 1 << 40, CommitTime: time.Now(), Epoch: epoch ^ 1},
		Changes:   []change.Change{{Op: change.Insert, Schema: "public", Table: "nokey", Columns: []string{"v"}, New: []change.Value{change.Text("x")}}},
	}
	if _, err := r.Spool.Append(context.Background(), other.Source()); err != nil {
		t.Fatal(err)
	}
	if err := r.Spool.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := runUntilError(t, r)
	if !errors.Is(err, apply.ErrHistory) || !strings.Contains(err.Error(), "capture history") {
		t.Fatalf("apply of another capture history: %v", err)
	}
	if a, e := state(); a != applied || e != got {
		t.Fatalf("state moved to position %d, history %x (was %d, %x)", a, e, applied, got)
	}
	r.RequireEqual() // the keyless row did not land a third time
}
