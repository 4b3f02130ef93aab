package apply_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"math/rand"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/testkit/pipetest"
)

// Partial updates come from logical capture, which the rig does not run:
// the tests put rows on the slave (through trigger capture or directly) and
// then append the partial updates to the spool as logical capture would.

var (
	text = change.Text
	u    = change.UnchangedValue
)

// blob is n random bytes, different for each seed, that PostgreSQL cannot
// compress: a value this size is stored out of line (TOASTed).
func blob(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// byteaText is b in bytea's hex text form, as capture sends it.
func byteaText(b []byte) change.Value { return text(`\x` + hex.EncodeToString(b)) }

// feed appends one transaction per change to the spool and applies them
// all in one apply session (so statement shapes are cached across them).
func feed(t *testing.T, r *pipetest.Pipeline, changes ...change.Change) {
	t.Helper()
	ctx := context.Background()
	for i := range changes {
		txn := &change.Txn{
			TxnHeader: change.TxnHeader{XID: 1_000_000 + r.Spool.LastPosition(), CommitTime: time.Now(), Epoch: r.Reader.Epoch()},
			Changes:   changes[i : i+1],
		}
		if _, err := r.Spool.Append(ctx, txn.Source()); err != nil {
			t.Fatalf("append %+v: %v", changes[i], err)
		}
	}
	if err := r.Spool.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	r.ApplyAll()
}

func update(table string, keyCols []string, oldKey []change.Value, cols []string, vals ...change.Value) change.Change {
	return change.Change{Op: change.Update, Schema: "public", Table: table,
		Columns: cols, New: vals, KeyColumns: keyCols, OldKey: oldKey}
}

// requireBlob checks the slave's bytea at the row sql selects, byte for byte.
func requireBlob(t *testing.T, r *pipetest.Pipeline, sql string, want []byte) {
	t.Helper()
	var got []byte
	if err := r.Conn(r.SlaveURL).QueryRow(context.Background(), sql).Scan(&got); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: bytea of %d bytes differs from the %d bytes expected", sql, len(got), len(want))
	}
}

// requireRows checks the slave rows sql selects, as sorted row texts.
func requireRows(t *testing.T, r *pipetest.Pipeline, want string, sql string, args ...any) {
	t.Helper()
	var got string
	if err := r.Conn(r.SlaveURL).QueryRow(context.Background(),
		`SELECT coalesce(string_agg(t::text, ' ' ORDER BY t::text), '') FROM (`+sql+`) t`, args...).Scan(&got); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if got != want {
		t.Fatalf("%s:\n got %s\nwant %s", sql, got, want)
	}
}

// TestPartialUpdateKeepsUnsentValue: a 1 MB bytea that an update left alone
// (not sent) survives on the slave byte for byte while the sent columns
// change, whether the key column is sent or also left unchanged.
func TestPartialUpdateKeepsUnsentValue(t *testing.T) {
	r := newRig(t, `CREATE TABLE doc (id int PRIMARY KEY, name text, data bytea, n int)`, false)
	b1, b2 := blob(1, 1<<20), blob(2, 1<<20)
	r.Exec(r.MasterURL, `INSERT INTO doc VALUES (1, 'a', $1, 1), (2, 'b', $2, 1)`, b1, b2)
	r.Capture()
	r.ApplyAll()
	requireBlob(t, r, `SELECT data FROM doc WHERE id = 1`, b1)

	cols, key := []string{"id", "name", "data", "n"}, []string{"id"}
	feed(t, r,
		update("doc", key, []change.Value{text("1")}, cols, text("1"), change.Null, u, text("2")),
		update("doc", key, []change.Value{text("1")}, cols, u, text("a2"), u, text("3")),
		update("doc", key, []change.Value{text("2")}, cols, u, u, u, text("5")),
		// Nothing sent, the key included: not a key change, nothing to do.
		update("doc", key, []change.Value{text("2")}, cols, u, u, u, u),
	)
	requireBlob(t, r, `SELECT data FROM doc WHERE id = 1`, b1)
	requireBlob(t, r, `SELECT data FROM doc WHERE id = 2`, b2)
	requireRows(t, r, `(1,a2,3) (2,b,5)`, `SELECT id, name, n FROM doc`)
}

const jobSchema = `CREATE TABLE job (sched text, name text, grp text, data bytea, descr text,
	PRIMARY KEY (sched, name, grp))`

var jobCols, jobKey = []string{"sched", "name", "grp", "data", "descr"}, []string{"sched", "name", "grp"}

func jobKeyOf(name string) []change.Value { return []change.Value{text("s"), text(name), text("g")} }

// TestPartialUpdateMovesKey: a partial update that changes a composite
// primary key moves the row to the new key with its unsent bytea, also
// when a key column is itself unchanged and when no non-key column is sent.
func TestPartialUpdateMovesKey(t *testing.T) {
	r := newRig(t, jobSchema, false)
	b := blob(3, 1<<20)
	r.Exec(r.SlaveURL, `INSERT INTO job VALUES ('s', 'j1', 'g', $1, 'd'), ('s', 'other', 'g', '\x01', 'o')`, b)
	feed(t, r,
		update("job", jobKey, jobKeyOf("j1"), jobCols, u, text("j2"), text("g"), u, text("d2")),
		update("job", jobKey, jobKeyOf("j2"), jobCols, u, text("j3"), u, u, u),
	)
	requireRows(t, r, `(s,j3,g,d2) (s,other,g,o)`, `SELECT sched, name, grp, descr FROM job`)
	requireBlob(t, r, `SELECT data FROM job WHERE name = 'j3'`, b)
}

// TestPartialKeyUpdateOntoLaterSnapshot replays a partial key update onto a
// slave restored from a later snapshot: the row already lives at the new
// key (with its own, later bytea) and the old key holds a different row.
// The new-key row must keep its bytea and take the sent columns, and the
// stale old-key row must go; the old row must never overwrite the new one.
func TestPartialKeyUpdateOntoLaterSnapshot(t *testing.T) {
	r := newRig(t, jobSchema, false)
	oldB, newB, oldB2, newB2 := blob(4, 1<<20), blob(5, 1<<20), blob(6, 1<<20), blob(7, 1<<20)
	r.Exec(r.SlaveURL, `INSERT INTO job VALUES ('s', 'j1', 'g', $1, 'stale'), ('s', 'j2', 'g', $2, 'later'),
		('s', 'k1', 'g', $3, 'stale'), ('s', 'k2', 'g', $4, 'later')`, oldB, newB, oldB2, newB2)
	feed(t, r,
		update("job", jobKey, jobKeyOf("j1"), jobCols, text("s"), text("j2"), text("g"), u, text("sent")),
		// Only the key is sent: nothing to set at the new key.
		update("job", jobKey, jobKeyOf("k1"), jobCols, u, text("k2"), u, u, u),
	)
	requireRows(t, r, `(s,j2,g,sent) (s,k2,g,later)`, `SELECT sched, name, grp, descr FROM job`)
	requireBlob(t, r, `SELECT data FROM job WHERE name = 'j2'`, newB)
	requireBlob(t, r, `SELECT data FROM job WHERE name = 'k2'`, newB2)
}

// TestPartialUpdateOfMissingRow: replay onto a snapshot where the row is
// gone (deleted later on the master) does nothing, by key, by key move and
// by full-row identity, and inserts nothing.
func TestPartialUpdateOfMissingRow(t *testing.T) {
	r := newRig(t, jobSchema+`; CREATE TABLE loose (a int, data bytea)`, true)
	r.Exec(r.SlaveURL, `INSERT INTO job VALUES ('s', 'kept', 'g', '\x02', 'k'); INSERT INTO loose VALUES (1, '\x03')`)
	feed(t, r,
		update("job", jobKey, jobKeyOf("gone"), jobCols, u, u, u, u, text("x")),
		update("job", jobKey, jobKeyOf("gone"), jobCols, u, text("moved"), u, u, text("x")),
		update("loose", []string{"a", "data"}, []change.Value{text("2"), text(`\x03`)}, []string{"a", "data"}, text("9"), u),
	)
	requireRows(t, r, `(s,kept,g,"\\x02",k)`, `SELECT sched, name, grp, data, descr FROM job`)
	requireRows(t, r, `(1,"\\x03")`, `SELECT a, data FROM loose`)
}

// TestPartialUpdateByFullRowIdentity: on a table without a primary key the
// partial update changes one of two identical rows, keeping its bytea.
func TestPartialUpdateByFullRowIdentity(t *testing.T) {
	r := newRig(t, `CREATE TABLE loose (a int, note text, data bytea)`, true)
	b, other := blob(8, 1<<20), blob(9, 1<<20)
	r.Exec(r.SlaveURL, `INSERT INTO loose VALUES (1, 'x', $1), (1, 'x', $1), (2, 'x', $2)`, b, other)
	cols := []string{"a", "note", "data"}
	feed(t, r, update("loose", cols, []change.Value{text("1"), text("x"), byteaText(b)}, cols, text("1"), text("z"), u))
	requireRows(t, r, `(1,x,t) (1,z,t) (2,x,f)`, `SELECT a, note, data = $1 FROM loose`, b)
	requireBlob(t, r, `SELECT data FROM loose WHERE note = 'z'`, b)
	requireBlob(t, r, `SELECT data FROM loose WHERE a = 2`, other)
}

// TestPartialUpdatesWithinOneGroup: partial updates meet other changes of
// the same row within one apply group, where set-based apply (net.go)
// folds them: over an image of the group (merged, also when the key
// moves), over another partial update (the sent columns add up), and
// after a delete of the group (applied in order: the row is gone).
func TestPartialUpdatesWithinOneGroup(t *testing.T) {
	r := newRig(t, `CREATE TABLE doc (id int PRIMARY KEY, name text, data bytea, n int)`, false)
	b1 := blob(10, 1<<20)
	r.Exec(r.SlaveURL, `INSERT INTO doc VALUES (1, 'a', $1, 1), (2, 'b', '\x02', 1), (3, 'c', '\x03', 1)`, b1)
	cols, key := []string{"id", "name", "data", "n"}, []string{"id"}
	k := func(id string) []change.Value { return []change.Value{text(id)} }
	feed(t, r,
		change.Change{Op: change.Insert, Schema: "public", Table: "doc", Columns: cols, New: []change.Value{text("4"), text("d"), text(`\x04`), text("1")}},
		update("doc", key, k("4"), cols, u, text("d2"), u, text("2")),
		update("doc", key, k("4"), cols, text("5"), u, u, u),
		update("doc", key, k("1"), cols, u, text("a2"), u, u),
		update("doc", key, k("1"), cols, u, u, u, text("7")),
		change.Change{Op: change.Delete, Schema: "public", Table: "doc", KeyColumns: key, OldKey: k("2")},
		update("doc", key, k("2"), cols, u, text("ghost"), u, u),
		update("doc", key, k("3"), cols, text("3"), text("c"), text(`\x33`), text("1")),
		update("doc", key, k("3"), cols, u, u, u, text("9")),
	)
	requireRows(t, r, `(1,a2,7) (3,c,9) (5,d2,2)`, `SELECT id, name, n FROM doc`)
	requireBlob(t, r, `SELECT data FROM doc WHERE id = 1`, b1)
	requireBlob(t, r, `SELECT data FROM doc WHERE id = 3`, []byte{0x33})
	requireBlob(t, r, `SELECT data FROM doc WHERE id = 5`, []byte{0x04})
}
