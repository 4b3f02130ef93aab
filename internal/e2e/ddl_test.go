package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

// TestSchemaChangesReplicate is issue 16's end-to-end check, in each
// capture mode: while the Quartz workload runs, the master goes through
// migration steps in the style of River's migration line and of a Quartz
// upgrade script (a multi-statement migration with DML between the DDL,
// ADD COLUMN with a default on a busy table, a new enum type and table
// with a sequence, new indexes, CREATE INDEX CONCURRENTLY, RENAME COLUMN,
// ALTER TYPE, DROP COLUMN, a new enum value, a table created without a
// key that gets one later). The slave must end with the master's rows
// and schema (compared through the catalogs), and verify must pass. Then
// a schema change that cannot run on the slave stops apply with
// apply_error naming it, and apply resumes once the slave is fixed.
func TestSchemaChangesReplicate(t *testing.T) {
	inEachMode(t, schemaChangesReplicate)
}

// migrations are the steps, each one Exec (a string of several statements
// runs as one simple-protocol query, as migration tools send them).
func migrations(mode string) []string {
	steps := []string{
		// Quartz upgrade style: a column with a default on a table the
		// workload writes all the time.
		`ALTER TABLE qrtz_fired_triggers ADD COLUMN fired_host text NOT NULL DEFAULT 'unknown'`,
		// River's first migration, abridged: an enum, a table with a
		// bigserial key, jsonb and an array, indexes, and rows, in one
		// text with DML between the DDL.
		`CREATE TYPE river_job_state AS ENUM ('available', 'cancelled', 'completed', 'discarded', 'retryable', 'running', 'scheduled');
CREATE TABLE river_job (
	id bigserial PRIMARY KEY,
	state river_job_state NOT NULL DEFAULT 'available',
	attempt smallint NOT NULL DEFAULT 0,
	max_attempts smallint NOT NULL,
	args jsonb NOT NULL DEFAULT '{}',
	kind text NOT NULL,
	queue text NOT NULL DEFAULT 'default',
	tags varchar(255)[] NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now(),
	scheduled_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT kind_length CHECK (char_length(kind) > 0 AND char_length(kind) < 128)
);
INSERT INTO river_job (kind, max_attempts, args, tags) SELECT 'kind_' || g % 7, 25, jsonb_build_object('n', g, 'nan', 'NaN'::float8::text), ARRAY['t' || g] FROM generate_series(1, 200) g;
CREATE INDEX river_job_kind ON river_job USING btree (kind);
CREATE INDEX river_job_prioritized_fetching_index ON river_job USING btree (state, queue, scheduled_at, id);
UPDATE river_job SET attempt = 1 WHERE id % 3 = 0;
COMMENT ON TABLE river_job IS 'River jobs; migrated';`,
		`CREATE TABLE river_leader (
	elected_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	leader_id text NOT NULL,
	name text PRIMARY KEY
);
INSERT INTO river_leader VALUES (now(), now() + interval '5 seconds', 'node-1', 'default')`,
		// A new enum value is a statement of its own (it cannot be used
		// in the transaction that adds it).
		`ALTER TYPE river_job_state ADD VALUE IF NOT EXISTS 'pending' AFTER 'discarded'`,
		`UPDATE river_job SET state = 'pending' WHERE id % 5 = 0`,
		// Renames and type changes between DML.
		`ALTER TABLE river_job RENAME COLUMN tags TO labels;
UPDATE river_job SET labels = ARRAY['renamed'] WHERE id % 2 = 0;
ALTER TABLE river_job ALTER COLUMN kind TYPE varchar(200);
INSERT INTO river_job (kind, max_attempts, labels) VALUES ('after_rename', 3, ARRAY['x', 'y'])`,
		`ALTER TABLE river_job DROP COLUMN created_at;
DELETE FROM river_job WHERE id % 11 = 0`,
		// Outside a transaction block, as CONCURRENTLY requires.
		`CREATE INDEX CONCURRENTLY river_job_args_index ON river_job USING gin (args)`,
		`CREATE TABLE river_queue (name text PRIMARY KEY, paused_at timestamptz, metadata jsonb NOT NULL DEFAULT '{}');
INSERT INTO river_queue (name) VALUES ('default'), ('critical')`,
		// Rows of one table before and after its shape changes, in one
		// transaction: each is read by the shape it was written with.
		`INSERT INTO river_queue (name, paused_at) VALUES ('before', now());
ALTER TABLE river_queue DROP COLUMN paused_at;
ALTER TABLE river_queue RENAME COLUMN metadata TO meta;
INSERT INTO river_queue (name, meta) VALUES ('after', '{"k": [1, 2]}');
UPDATE river_queue SET meta = '{"u": true}' WHERE name = 'before'`,
		`ALTER TABLE job_history ADD COLUMN attempt int DEFAULT 1, ADD COLUMN note text`,
		`CREATE SEQUENCE river_sequence START 100; SELECT nextval('river_sequence')`,
		// A later River-style migration: defaults and NOT NULL set with
		// the backfill between, a check constraint replaced, a notify
		// trigger added then dropped, comments inside the statements,
		// and an enum value added in the same transaction.
		`ALTER TABLE /* schema */ river_job ADD COLUMN metadata jsonb;
ALTER TABLE /* schema */ river_job ALTER COLUMN metadata SET DEFAULT '{}';
UPDATE /* schema */ river_job SET metadata = '{}' WHERE metadata IS NULL;
ALTER TABLE /* schema */ river_job ALTER COLUMN metadata SET NOT NULL;
ALTER TYPE /* schema */ river_job_state ADD VALUE IF NOT EXISTS 'stalled' AFTER 'scheduled';
ALTER TABLE river_job DROP CONSTRAINT kind_length;
ALTER TABLE river_job ADD CONSTRAINT kind_length CHECK (char_length(kind) > 0 AND char_length(kind) < 200);
CREATE OR REPLACE FUNCTION river_job_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('river_insert', NEW.queue);
  RETURN NULL;
END;
$$;
CREATE TRIGGER river_notify AFTER INSERT ON river_job FOR EACH ROW EXECUTE FUNCTION river_job_notify();
INSERT INTO river_job (kind, max_attempts) VALUES ('with_trigger', 1)`,
		`DROP TRIGGER river_notify ON river_job; DROP FUNCTION river_job_notify;
ALTER TABLE river_leader ALTER COLUMN name SET DEFAULT 'default', ADD CONSTRAINT name_length CHECK (char_length(name) > 0)`,
		// Quartz upgrade style: a new index on a busy table, a wider
		// column.
		`CREATE INDEX idx_qrtz_ft_sched_time ON qrtz_fired_triggers (sched_name, sched_time)`,
		`ALTER TABLE qrtz_job_details ALTER COLUMN description TYPE varchar(500)`,
		// Tables renamed and dropped, with rows around the change.
		`ALTER TABLE river_leader RENAME TO river_leadership;
UPDATE river_leadership SET expires_at = expires_at + interval '1 minute'`,
		`CREATE TABLE scratch_jobs (id int PRIMARY KEY, v text);
INSERT INTO scratch_jobs SELECT g, 'v' || g FROM generate_series(1, 50) g`,
		`DELETE FROM scratch_jobs WHERE id < 10; DROP TABLE scratch_jobs`,
		// A trigger that stays: the master's rows carry what it did, and
		// on the slave (replica role) it does not fire again.
		`CREATE FUNCTION river_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.meta := NEW.meta || '{"touched": true}';
	RETURN NEW;
END $$;
CREATE TRIGGER river_touch BEFORE UPDATE ON river_queue FOR EACH ROW EXECUTE FUNCTION river_touch();
UPDATE river_queue SET name = name`,
	}
	if mode == "trigger" {
		// A table created without a key joins when it gets one, and the
		// rows it had by then go along (logical decoding cannot send
		// those: see README, Schema changes).
		steps = append(steps, `CREATE TABLE late_key (a int, b text);
INSERT INTO late_key VALUES (1, 'before the key'), (2, 'also before');
ALTER TABLE late_key ADD PRIMARY KEY (a);
INSERT INTO late_key VALUES (3, 'after the key');
UPDATE late_key SET b = 'changed after' WHERE a = 1`)
	}
	return steps
}

func schemaChangesReplicate(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, mode)
	out := w.master.mustRun(t, cmdTimeout, "install")
	if !strings.Contains(out, "schema changes: on") {
		t.Fatalf("master install does not turn schema change replication on:\n%s", out)
	}
	w.slave.mustRun(t, cmdTimeout, "install")
	if err := quartz.Seed(ctx, w.pool, quartzOptions); err != nil {
		t.Fatalf("seed the quartz tables: %v", err)
	}
	if !t.Run("start", w.startServices) {
		return
	}
	l := startLoad(w.pool)
	t.Cleanup(l.stop)
	conn := connect(t, ctx, w.master.repo)
	for i, step := range migrations(mode) {
		time.Sleep(300 * time.Millisecond)
		// A step that locks tables the workload holds may deadlock with
		// it; like a migration tool, try it again.
		for attempt := 1; ; attempt++ {
			_, err := conn.Exec(ctx, step, pgx.QueryExecModeSimpleProtocol)
			if err == nil {
				break
			}
			if !strings.Contains(err.Error(), "40P01") || attempt == 5 {
				t.Fatalf("migration step %d on the master: %v\n%s", i+1, err, step)
			}
		}
	}
	// The workload keeps writing the changed tables after the migrations.
	time.Sleep(2 * time.Second)
	l.stop()
	l.report(t)
	if !t.Run("catch up", w.waitCaughtUp) {
		return
	}
	t.Run("rows equal", func(t *testing.T) { w.requireSameRows(t, ctx) })
	t.Run("schema equal", func(t *testing.T) { requireSameSchema(t, ctx, w.master.repo, w.slave.repo) })
	t.Run("sequences", func(t *testing.T) { w.checkEqual(t, ctx) })
	t.Run("verify", w.verifyEqual)
	t.Run("failing schema change", func(t *testing.T) { w.failingSchemaChange(t, ctx, conn) })
	t.Run("table without a key is a warning", func(t *testing.T) {
		if _, err := conn.Exec(ctx, `CREATE TABLE no_key_here (a int)`); err != nil {
			t.Fatal(err)
		}
		eventually.True(t, "the master's status to warn of the table", 30*time.Second, func() (bool, string) {
			st, err := w.master.status()
			if err != nil {
				return false, err.Error()
			}
			return strings.Contains(strings.Join(st.Warnings, "\n"), "no_key_here"), fmt.Sprintf("warnings %q", st.Warnings)
		})
	})
}

// failingSchemaChange: a table the slave already has (made there behind
// schedsync's back) makes the master's CREATE TABLE fail on the slave:
// apply stops with apply_error naming it, holds back the rows after it,
// and resumes once the operator drops the slave's table.
func (w *world) failingSchemaChange(t *testing.T, ctx context.Context, master *pgx.Conn) {
	execOn(t, ctx, w.slave.repo, `CREATE TABLE clash (x int)`)
	if _, err := master.Exec(ctx, `CREATE TABLE clash (id int PRIMARY KEY, v text); INSERT INTO clash VALUES (1, 'one')`,
		pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the slave to stop with apply_error naming the statement", 60*time.Second, func() (bool, string) {
		st, err := w.slave.status()
		if err != nil {
			return false, err.Error()
		}
		return st.State == "apply_error" && strings.Contains(st.Error, "CREATE TABLE clash"), fmt.Sprintf("state %s: %s", st.State, st.Error)
	})
	if n := queryRow(t, ctx, w.slave.repo, `SELECT count(*) FROM pg_attribute WHERE attrelid = 'clash'::regclass AND attname = 'id'`); n != "0" {
		t.Fatalf("the failed schema change left a trace on the slave")
	}
	execOn(t, ctx, w.slave.repo, `DROP TABLE clash`)
	w.waitCaughtUp(t)
	if got := queryRow(t, ctx, w.slave.repo, `SELECT v FROM clash WHERE id = 1`); got != "one" {
		t.Errorf("after the fix the slave's clash row is %q, want one", got)
	}
	requireSameSchema(t, ctx, w.master.repo, w.slave.repo)
}

// schemaQueries describe a repository's schema public through the
// catalogs: columns (type, default, nullability, in order), indexes,
// constraints, enum values and comments.
var schemaQueries = map[string]string{
	"columns": `SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' null=' || (NOT a.attnotnull)::text
		|| ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY c.relname, (SELECT count(*) FROM pg_attribute b WHERE b.attrelid = a.attrelid AND b.attnum < a.attnum AND b.attnum > 0 AND NOT b.attisdropped)`,
	"indexes":     `SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname`,
	"constraints": `SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1`,
	"enums":       `SELECT t.typname || ' ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid GROUP BY t.typname ORDER BY 1`,
	"comments":    `SELECT c.relname || ': ' || obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND obj_description(c.oid, 'pg_class') IS NOT NULL ORDER BY 1`,
	"sequences":   `SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`,
	"triggers":    `SELECT tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text FROM pg_trigger WHERE NOT tgisinternal AND tgname NOT LIKE 'schedsync%' ORDER BY 1`,
	"functions":   `SELECT p.oid::regprocedure::text || ' ' || pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1`,
	"owners":      `SELECT c.relname || ' ' || pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1`,
}

// requireSameSchema compares the schemas of the two repositories.
func requireSameSchema(t *testing.T, ctx context.Context, masterURL, slaveURL string) {
	t.Helper()
	read := func(url, q string) []string {
		conn := connect(t, ctx, url)
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return out
	}
	for what, q := range schemaQueries {
		m, s := read(masterURL, q), read(slaveURL, q)
		if strings.Join(m, "\n") != strings.Join(s, "\n") {
			t.Errorf("%s differ:\nmaster:\n  %s\nslave:\n  %s", what, strings.Join(m, "\n  "), strings.Join(s, "\n  "))
		}
	}
}
