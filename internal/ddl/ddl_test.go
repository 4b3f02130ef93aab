package ddl

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		name  string
		query string
		want  []string
	}{
		{"plain", "ALTER TABLE a ADD c int; UPDATE a SET c = 1;\nCREATE INDEX i ON a (c)",
			[]string{"ALTER TABLE a ADD c int", "UPDATE a SET c = 1", "CREATE INDEX i ON a (c)"}},
		{"strings and comments", `INSERT INTO a VALUES ('x;y', E'it\'s;', 'a''b;'); -- c; d
/* one; /* nested; */ still; */ ALTER TABLE "we;ird" ADD c int`,
			[]string{`INSERT INTO a VALUES ('x;y', E'it\'s;', 'a''b;')`, "-- c; d\n/* one; /* nested; */ still; */ ALTER TABLE \"we;ird\" ADD c int"}},
		{"dollar quotes", "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$; SELECT $1, $$;$$",
			[]string{"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$", "SELECT $1, $$;$$"}},
		{"begin atomic", "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END; DROP TABLE x",
			[]string{"CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END", "DROP TABLE x"}},
		{"transaction blocks and empties", "BEGIN;; ALTER TABLE a DROP c ; COMMIT;", []string{"BEGIN", "ALTER TABLE a DROP c", "COMMIT"}},
	} {
		if got := Split(c.query); !slices.Equal(got, c.want) {
			t.Errorf("%s: Split = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestFind(t *testing.T) {
	q := `ALTER TABLE river_job ADD COLUMN unique_key bytea;
UPDATE river_job SET unique_key = ''::bytea;
CREATE UNIQUE INDEX CONCURRENTLY river_job_kind_unique_key_idx ON river_job (kind, unique_key);
alter table river_job alter column args set default '{}';
CREATE OR REPLACE FUNCTION river_job_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ALTER TABLE x ADD y int; RETURN NULL; END $$;
CREATE TEMP TABLE scratch (a int);
COMMENT ON TABLE river_job IS 'jobs; all of them';
CREATE TABLE copy AS SELECT * FROM river_job;`
	for _, c := range []struct {
		tag  string
		nth  int
		want string
	}{
		{"ALTER TABLE", 1, "ALTER TABLE river_job ADD COLUMN unique_key bytea"},
		{"ALTER TABLE", 2, "alter table river_job alter column args set default '{}'"},
		{"CREATE INDEX", 1, "CREATE UNIQUE INDEX CONCURRENTLY river_job_kind_unique_key_idx ON river_job (kind, unique_key)"},
		{"CREATE FUNCTION", 1, "CREATE OR REPLACE FUNCTION river_job_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ALTER TABLE x ADD y int; RETURN NULL; END $$"},
		{"CREATE TABLE", 1, "CREATE TEMP TABLE scratch (a int)"},
		{"COMMENT", 1, "COMMENT ON TABLE river_job IS 'jobs; all of them'"},
		{"CREATE TABLE AS", 2, "CREATE TABLE copy AS SELECT * FROM river_job"},
	} {
		got, err := Find(q, c.tag, c.nth)
		if err != nil || got != c.want {
			t.Errorf("Find(%s, %d) = %q, %v; want %q", c.tag, c.nth, got, err, c.want)
		}
	}
	if _, err := Find(q, "ALTER TABLE", 3); err == nil {
		t.Errorf("Find found a third ALTER TABLE, which only runs inside the function body")
	}
	if _, err := Find("DO $$ BEGIN EXECUTE 'ALTER TABLE a ADD b int'; END $$", "ALTER TABLE", 1); err == nil {
		t.Errorf("Find took DDL run by a DO block for a statement")
	}
}

func TestWithoutConcurrently(t *testing.T) {
	for in, want := range map[string]string{
		"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)": "CREATE UNIQUE INDEX  IF NOT EXISTS i ON t (a)",
		"drop index concurrently i":                                 "drop index  i",
		"CREATE INDEX i ON t (concurrently)":                        "CREATE INDEX i ON t (concurrently)",
		"ALTER TABLE t ADD concurrently int":                        "ALTER TABLE t ADD concurrently int",
	} {
		if got := WithoutConcurrently(in); got != want {
			t.Errorf("WithoutConcurrently(%q) = %q, want %q", in, got, want)
		}
	}
}
