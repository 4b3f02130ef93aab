package backup

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestRestoreRebuildsIndexes: a big table's indexes are dropped for the
// load and built again, those that something depends on are kept, and
// afterwards the slave's indexes, constraints and comments are exactly
// what they were.
func TestRestoreRebuildsIndexes(t *testing.T) {
	ddl := `
	CREATE TABLE big (id int PRIMARY KEY, code text NOT NULL, grp int, note text,
		CONSTRAINT big_code_key UNIQUE (code));
	CREATE INDEX big_grp ON big (grp) WITH (fillfactor = 70) WHERE grp > 0;
	CREATE INDEX big_lower ON big (lower(note));
	CREATE INDEX big_commented ON big (note);
	COMMENT ON INDEX big_commented IS 'kept as it is';
	CREATE TABLE ref (id int PRIMARY KEY, code text REFERENCES big (code));`
	r := newRig(t, ddl+`INSERT INTO big SELECT g, 'c' || g, g % 10, 'n' || g FROM generate_series(1, 120000) g;
		INSERT INTO ref VALUES (1, 'c1')`, ddl)
	path, m := backupFile(r, Options{})
	before := catalogState(t, r.SlaveURL)
	var log bytes.Buffer
	opts := RestoreOptions{Logger: slog.New(slog.NewTextHandler(&log, nil))}
	if _, err := Restore(context.Background(), r.Conn(r.SlaveURL), openFile(path), opts); err != nil {
		t.Fatal(err)
	}
	// The key, big_grp and big_lower; not big_code_key (ref's foreign key
	// needs it) nor big_commented.
	if !strings.Contains(log.String(), "table=public.big rows=120000") || !strings.Contains(log.String(), "indexes_rebuilt=3") {
		t.Errorf("want 3 indexes of big rebuilt; the restore logged:\n%s", log.String())
	}
	if after := catalogState(t, r.SlaveURL); after != before {
		t.Errorf("indexes or constraints changed:\nbefore %s\nafter  %s", before, after)
	}
	r.RequireEqual()
	requireState(t, r.SlaveURL, m.Position, false)
	_, err := r.Conn(r.SlaveURL).Exec(context.Background(), `INSERT INTO big VALUES (0, 'c5', 0, '')`)
	if err == nil {
		t.Error("the rebuilt unique constraint let a duplicate in")
	}
}

// catalogState prints the indexes, constraints and comments of public.
func catalogState(t *testing.T, url string) string {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), `
		SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
		UNION ALL SELECT 'constraint ' || conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace
		UNION ALL SELECT 'comment ' || objoid::regclass::text || ': ' || description FROM pg_description WHERE classoid = 'pg_class'::regclass
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(lines)
}
