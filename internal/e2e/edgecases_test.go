package e2e

import (
	"context"
	"testing"
)

// edgeSchema holds what schedulers' schemas throw at replication beyond
// Quartz: composite keys with bytea, a key that is updated, foreign keys
// with ON DELETE CASCADE and ON UPDATE CASCADE, an enum, arrays, jsonb,
// float and numeric NaN and infinities, timestamps at infinity, a
// generated column, an identity column and a table without a primary key.
const edgeSchema = `
CREATE TYPE job_state AS ENUM ('waiting', 'running', 'done');
CREATE TABLE edge_parent (
	ns   bytea,
	name text,
	state job_state NOT NULL,
	tags text[],
	meta jsonb,
	f    float8,
	n    numeric,
	due  timestamptz,
	big  text,
	len  int GENERATED ALWAYS AS (length(name)) STORED,
	PRIMARY KEY (ns, name));
CREATE TABLE edge_child (
	id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	ns   bytea NOT NULL,
	name text NOT NULL,
	note text,
	FOREIGN KEY (ns, name) REFERENCES edge_parent ON DELETE CASCADE ON UPDATE CASCADE);
CREATE TABLE edge_log (at bigint, line text);
CREATE TABLE edge_scratch (id int PRIMARY KEY, v text);`

// edgeWorkload runs on the master, statement by statement, each in its own
// transaction unless it says otherwise.
var edgeWorkload = []string{
	`INSERT INTO edge_parent (ns, name, state, tags, meta, f, n, due, big) VALUES
		('\x00ff'::bytea, 'a', 'waiting', '{x,NULL,"y z"}', '{"k": [1, 2.5, null, "é"]}', 'NaN', 'NaN', 'infinity', repeat('x', 10)),
		('\x00ff'::bytea, 'b', 'running', '{}', 'null', '-Infinity', '1e-20', '-infinity', NULL),
		('\x01'::bytea, 'a', 'done', NULL, '{}', 'Infinity', '-12345678901234567890.123456789', '2026-01-01 00:00:00.123456+00', NULL)`,
	`INSERT INTO edge_child (ns, name, note) SELECT '\x00ff'::bytea, 'a', 'child ' || g FROM generate_series(1, 5) g`,
	`INSERT INTO edge_child (ns, name, note) SELECT '\x00ff'::bytea, 'b', 'child ' || g FROM generate_series(1, 3) g`,
	// A large value that is TOASTed, then left alone by updates.
	`UPDATE edge_parent SET big = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 20000) g) WHERE name = 'b'`,
	`UPDATE edge_parent SET state = 'done' WHERE name = 'b'`,
	// Key updates: cascaded to the children by the foreign key.
	`UPDATE edge_parent SET name = 'a2' WHERE ns = '\x00ff'::bytea AND name = 'a'`,
	`UPDATE edge_parent SET ns = '\x02'::bytea, tags = tags || '{w}' WHERE name = 'b'`,
	// Swap two keys inside one transaction.
	`BEGIN; UPDATE edge_parent SET name = 'tmp' WHERE ns = '\x01'::bytea AND name = 'a';
	       UPDATE edge_parent SET ns = '\x01'::bytea, name = 'a' WHERE ns = '\x02'::bytea AND name = 'b';
	       UPDATE edge_parent SET ns = '\x02'::bytea, name = 'b' WHERE ns = '\x01'::bytea AND name = 'tmp'; COMMIT`,
	// A cascaded delete.
	`DELETE FROM edge_parent WHERE name = 'a2'`,
	`INSERT INTO edge_log SELECT g, 'line ' || (g % 3) FROM generate_series(1, 20) g`,
	`UPDATE edge_log SET line = 'changed' WHERE at = 7`,
	`DELETE FROM edge_log WHERE ctid = (SELECT ctid FROM edge_log WHERE line = 'line 1' LIMIT 1)`,
	`INSERT INTO edge_scratch SELECT g, 'v' FROM generate_series(1, 50) g`,
	`TRUNCATE edge_scratch`,
	`INSERT INTO edge_scratch VALUES (1, 'after truncate')`,
	// TRUNCATE ... CASCADE empties the children as well.
	`BEGIN; TRUNCATE edge_parent CASCADE; INSERT INTO edge_parent (ns, name, state) VALUES ('\x03', 'c', 'waiting');
	       INSERT INTO edge_child (ns, name) VALUES ('\x03', 'c'); COMMIT`,
}

// TestEdgeCases replays edgeWorkload in both capture modes and requires
// the slave to hold exactly the master's rows, and verify to agree.
func TestEdgeCases(t *testing.T) { inEachMode(t, edgeCases) }

func edgeCases(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorldWith(t, ctx, mode, []string{"capture.allow_no_pk=true"}, nil)
	w.execBoth(t, ctx, edgeSchema)
	w.install(t)
	if !t.Run("start", w.startServices) {
		return
	}
	conn := connect(t, ctx, w.master.repo)
	for _, sql := range edgeWorkload {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", firstLine(sql), err)
		}
	}
	w.waitCaughtUp(t)
	w.requireSameRows(t, ctx)
	if m, s := queryRow(t, ctx, w.master.repo, `SELECT count(*) FROM edge_child`), "1"; m != s {
		t.Fatalf("the workload should leave %s children on the master, found %s", s, m)
	}
	// The identity sequence of edge_child is never behind on the slave.
	seq := `SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = 'edge_child_id_seq'`
	if m, s := queryRow(t, ctx, w.master.repo, seq), queryRow(t, ctx, w.slave.repo, seq); m != s {
		t.Errorf("edge_child_id_seq: master %s, slave %s", m, s)
	}
	w.verifyEqual(t)
	t.Run("stop", w.stopServices)
}
