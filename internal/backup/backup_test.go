package backup

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/pipetest"
)

// schedDDL is a scheduler-like schema: enums, jsonb, bytea, arrays (an
// array of an enum, which must travel as text), a generated column, an
// identity, a foreign key with cascade, a unique constraint other than the
// key, and sequences, one never used.
const schedDDL = `
CREATE TYPE mood AS ENUM ('happy', 'sad', 'ok');
CREATE TABLE jobs (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, state mood NOT NULL DEFAULT 'ok',
	payload jsonb, data bytea, at timestamptz NOT NULL DEFAULT now(), score numeric, note text, tags text[]);
CREATE TABLE moods (id int PRIMARY KEY, history mood[]);
CREATE TABLE runs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	took interval, rc int, doubled int GENERATED ALWAYS AS (rc * 2) STORED);
CREATE TABLE counters (k text PRIMARY KEY, v bigint NOT NULL);
CREATE SEQUENCE ticket_seq;
CREATE SEQUENCE never_used_seq START 100;`

const schedData = `
INSERT INTO jobs (name, payload, data, score, note, tags)
	SELECT 'job-' || g, jsonb_build_object('g', g), decode(md5(g::text), 'hex'), g / 7.0, repeat('x', 300), ARRAY['a', g::text]
	FROM generate_series(1, 20000) g;
INSERT INTO runs (job_id, took, rc) SELECT g % 20000 + 1, make_interval(secs => g), g % 3 FROM generate_series(1, 20000) g;
INSERT INTO counters SELECT 'c' || g, 0 FROM generate_series(1, 50) g;
INSERT INTO moods SELECT g, ARRAY['happy', 'sad']::mood[] FROM generate_series(1, 1000) g;`

// workload writes on the master like a scheduler until stopped: new jobs
// and runs, updates of hot rows, deletes with cascades, and name swaps
// that make replay onto a later snapshot hit unique conflicts.
type workload struct {
	url  string
	txns atomic.Int64
	stop chan struct{}
	done chan error
}

func startWorkload(t *testing.T, url string) *workload {
	w := &workload{url: url, stop: make(chan struct{}), done: make(chan error, 1)}
	go func() { w.done <- w.run() }()
	t.Cleanup(func() { w.halt(t) })
	return w
}

func (w *workload) halt(t *testing.T) {
	select {
	case <-w.stop:
		return
	default:
	}
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Errorf("workload: %v", err)
	}
}

func (w *workload) run() error {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, w.url)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	rng := rand.New(rand.NewPCG(7, 7))
	for {
		select {
		case <-w.stop:
			return nil
		default:
		}
		a, b := rng.Int64N(20000)+1, rng.Int64N(20000)+1
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { return w.step(ctx, tx, rng.IntN(6), a, b) })
		if err != nil {
			return err
		}
		w.txns.Add(1)
	}
}

func (w *workload) step(ctx context.Context, tx pgx.Tx, kind int, a, b int64) error {
	var err error
	switch kind {
	case 0:
		_, err = tx.Exec(ctx, `WITH j AS (INSERT INTO jobs (name, payload, tags) VALUES ('new-' || nextval('ticket_seq'), '{"n": 1}', '{x}') RETURNING id)
			INSERT INTO runs (job_id, took, rc) SELECT id, '1 hour', 1 FROM j`)
	case 1:
		_, err = tx.Exec(ctx, `UPDATE jobs SET score = coalesce(score, 0) + 1, state = 'happy', at = now() WHERE id = $1`, a)
	case 2: // swap two names among a few hot rows: unique on name
		a, b = a%30+1, b%30+1
		var an, bn string
		if err = tx.QueryRow(ctx, `SELECT (SELECT name FROM jobs WHERE id = $1), (SELECT name FROM jobs WHERE id = $2)`, a, b).Scan(&an, &bn); err != nil || a == b {
			return nil // one of them is gone
		}
		if _, err = tx.Exec(ctx, `UPDATE jobs SET name = 'swap-' || id WHERE id = $1`, a); err == nil {
			if _, err = tx.Exec(ctx, `UPDATE jobs SET name = $2 WHERE id = $1`, b, an); err == nil {
				_, err = tx.Exec(ctx, `UPDATE jobs SET name = $2 WHERE id = $1`, a, bn)
			}
		}
	case 3:
		_, err = tx.Exec(ctx, `DELETE FROM jobs WHERE id = $1`, a)
	case 4:
		_, err = tx.Exec(ctx, `UPDATE counters SET v = v + 1 WHERE k = 'c' || ($1 % 50 + 1)`, a)
	case 5:
		_, err = tx.Exec(ctx, `UPDATE moods SET history = history || 'ok'::mood WHERE id = $1 % 1000 + 1`, a)
	}
	return err
}

// capturer polls capture in the background, as the master service does,
// unless paused.
type capturer struct {
	paused atomic.Bool
	halt   chan struct{}
	done   chan error
}

func startCapture(r *rig) *capturer {
	c := &capturer{halt: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		for {
			select {
			case <-c.halt:
				c.done <- nil
				return
			default:
			}
			if c.paused.Load() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			n, err := r.Poll(context.Background())
			if err != nil {
				c.done <- err
				return
			}
			if n == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return c
}

func (c *capturer) stop() error {
	close(c.halt)
	return <-c.done
}

// gate is a Progress that holds the backup at its first chunk until the
// workload has committed more transactions and capture has moved on, so
// that the master really changes during the backup.
type gate struct {
	once sync.Once
	wait func()
}

func (g *gate) Begin(string, Totals) {}
func (g *gate) Add(int64, int64)     { g.once.Do(g.wait) }
func (g *gate) End()                 {}

// TestBackupUnderLoadConverges: a backup taken while the master keeps
// writing and capture keeps running, restored into a slave that holds
// other rows, then the spool after the backup's position applied: the
// slave equals the master exactly.
func TestBackupUnderLoadConverges(t *testing.T) {
	r := newRig(t, schedDDL+schedData, schedDDL+`INSERT INTO counters VALUES ('junk', 1)`)
	r.Capture()
	w := startWorkload(t, r.MasterURL)

	c := startCapture(r)
	eventually.True(t, "capture to spool 100 transactions", time.Minute, func() (bool, string) {
		return r.Spool.DurablePosition() >= 100, fmt.Sprintf("at position %d", r.Spool.DurablePosition())
	})
	// Capture lags: the snapshot will hold transactions that get
	// positions above the backup's, whose replay onto it must converge.
	c.paused.Store(true)
	lagFrom := w.txns.Load()
	eventually.True(t, "500 transactions while capture is paused", time.Minute, func() (bool, string) {
		return w.txns.Load() >= lagFrom+500, fmt.Sprintf("%d", w.txns.Load()-lagFrom)
	})
	g := &gate{wait: func() {
		c.paused.Store(false)
		from, pos := w.txns.Load(), r.Spool.DurablePosition()
		// In the backup's goroutine, which must not end the test.
		err := eventually.Wait("300 transactions and 50 captured during the backup", time.Minute, func() (bool, string) {
			txns, captured := w.txns.Load()-from, r.Spool.DurablePosition()-pos
			return txns >= 300 && captured >= 50, fmt.Sprintf("%d transactions, %d captured", txns, captured)
		})
		if err != nil {
			t.Error(err)
		}
	}}
	path, m := backupFile(r, Options{Progress: g})
	during := r.Spool.DurablePosition()
	after := w.txns.Load()
	eventually.True(t, "200 transactions after the backup", time.Minute, func() (bool, string) {
		return w.txns.Load() >= after+200, fmt.Sprintf("%d", w.txns.Load()-after)
	})
	w.halt(t)
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	r.Capture()
	t.Logf("backup at position %d; capture was at %d when it ended and is at %d now; %d rows, %d tables",
		m.Position, during, r.Spool.DurablePosition(), m.Rows, len(m.Tables))
	if m.Position >= during {
		t.Errorf("the position did not move during the backup (%d, then %d)", m.Position, during)
	}
	if got, err := Verify(context.Background(), mustOpen(t, path)); err != nil || fmt.Sprint(got) != fmt.Sprint(m) {
		t.Fatalf("verify: %v\n got %+v\nwant %+v", err, got, m)
	}
	if format := tableFormat(m, "moods"); format != formatText {
		t.Errorf("moods (mood[]) travels as %q; want text", format)
	}

	if _, err := Restore(context.Background(), r.Conn(r.SlaveURL), openFile(path), RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	requireState(t, r.SlaveURL, m.Position, false)
	_, seqs := pipetest.Contents(t, r.SlaveURL)
	for _, s := range m.Sequences {
		if !s.IsCalled {
			continue // pg_sequences shows no last_value; never_used_seq is checked below
		}
		if seqs[s.Name] != s.LastValue {
			t.Errorf("sequence %s restored to %d; want the backup's %d", s.Name, seqs[s.Name], s.LastValue)
		}
	}
	r.ApplyAll()
	r.RequireEqual()
	var next int64
	if err := r.Conn(r.SlaveURL).QueryRow(context.Background(), `SELECT nextval('never_used_seq')`).Scan(&next); err != nil || next != 100 {
		t.Errorf("never_used_seq gives %d (%v) on the slave; want 100", next, err)
	}
}

func tableFormat(m Manifest, name string) string {
	for _, t := range m.Tables {
		if t.Name == name {
			return t.Format
		}
	}
	return ""
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func requireState(t *testing.T, url string, pos uint64, needsResync bool) {
	t.Helper()
	var applied int64
	var marked bool
	pgtest.QueryRow(t, url, `SELECT applied_position, needs_resync FROM schedsync.state`).Scan(&applied, &marked)
	if uint64(applied) != pos || marked != needsResync {
		t.Errorf("schedsync.state: applied_position %d, needs_resync %v; want %d, %v", applied, marked, pos, needsResync)
	}
}

// TestRestoreRejectsCorruptFile: a damaged or truncated file is refused
// in pass 1 and the slave is left exactly as it was.
func TestRestoreRejectsCorruptFile(t *testing.T) {
	r := newRig(t, schedDDL+schedData, schedDDL+`INSERT INTO counters VALUES ('junk', 1); SELECT nextval('ticket_seq')`)
	path, _ := backupFile(r, Options{})
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, beforeSeqs := pipetest.Contents(t, r.SlaveURL)
	flipped := []byte(strings.Clone(string(data)))
	flipped[len(data)/2] ^= 0x10
	for name, bad := range map[string][]byte{"flipped byte": flipped, "truncated": data[:len(data)*2/3]} {
		p := path + "." + strings.ReplaceAll(name, " ", "-")
		if err := os.WriteFile(p, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Restore(context.Background(), r.Conn(r.SlaveURL), openFile(p), RestoreOptions{})
		t.Logf("%s: %v", name, err)
		if err == nil || !strings.Contains(err.Error(), "bad backup file at byte ") {
			t.Errorf("%s: got %v; want a bad backup file error with its offset", name, err)
		}
		requireUnchanged(t, r.SlaveURL, before, beforeSeqs)
	}
}

// TestRestoreRejectsIncompatibleSchema: a missing column, a column of
// another type and a missing sequence are all named, and nothing changes.
func TestRestoreRejectsIncompatibleSchema(t *testing.T) {
	slave := strings.NewReplacer("rc int, doubled int GENERATED ALWAYS AS (rc * 2) STORED", "doubled int",
		"v bigint NOT NULL", "v integer NOT NULL", "CREATE SEQUENCE never_used_seq START 100;", "",
		"history mood[]", "history mood[], extra int NOT NULL").Replace(schedDDL)
	r := newRig(t, schedDDL+schedData, slave+`INSERT INTO counters VALUES ('junk', 1)`)
	path, _ := backupFile(r, Options{})
	before, beforeSeqs := pipetest.Contents(t, r.SlaveURL)
	_, err := Restore(context.Background(), r.Conn(r.SlaveURL), openFile(path), RestoreOptions{})
	t.Logf("restore said: %v", err)
	for _, want := range []string{
		"the slave's schema does not match the backup; nothing was changed",
		"table public.runs: column rc is missing on the slave (integer in the backup)",
		"table public.counters: column v is integer on the slave but bigint in the backup",
		"sequence public.never_used_seq does not exist on the slave",
		"table public.moods: column extra is NOT NULL without a default on the slave, and the backup has no values for it",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	requireUnchanged(t, r.SlaveURL, before, beforeSeqs)

	// Restoring into the database the backup came from is refused too.
	_, err = Restore(context.Background(), r.Conn(r.MasterURL), openFile(path), RestoreOptions{})
	if err == nil || !strings.Contains(err.Error(), "the backup was taken from this very database") {
		t.Errorf("restore into the master: %v", err)
	}
}

// TestRestoreLoadFailureRollsBack: a load that fails inside the
// transaction (here the TRUNCATE, because a table of the slave's own, not
// in the backup, references a replicated one) leaves the slave as it was,
// needs_resync included.
func TestRestoreLoadFailureRollsBack(t *testing.T) {
	r := newRig(t, schedDDL+schedData, schedDDL+`INSERT INTO counters VALUES ('junk', 1);
		CREATE TABLE local_notes (job_id bigint REFERENCES jobs (id))`)
	r.Exec(r.SlaveURL, `UPDATE schedsync.state SET applied_position = 7`)
	path, _ := backupFile(r, Options{})
	before, beforeSeqs := pipetest.Contents(t, r.SlaveURL)
	_, err := Restore(context.Background(), r.Conn(r.SlaveURL), openFile(path), RestoreOptions{})
	t.Logf("restore said: %v", err)
	if err == nil || !strings.Contains(err.Error(), "truncate the replicated tables") || !strings.Contains(err.Error(), "local_notes") {
		t.Errorf("got %v; want the TRUNCATE error naming local_notes", err)
	}
	requireUnchanged(t, r.SlaveURL, before, beforeSeqs)
	requireState(t, r.SlaveURL, 7, false)
}
