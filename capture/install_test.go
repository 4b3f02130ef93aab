package capture

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/schedsync/schedsync/internal/config"
)

// catalogState fingerprints every object install may touch, by xmin, so a
// second install can be shown to change nothing.
func catalogState(t *testing.T, d *testDB) string {
	t.Helper()
	var s string
	err := d.conn().QueryRow(context.Background(), `
		SELECT coalesce(string_agg(x, ',' ORDER BY x), '') FROM (
		  SELECT 'trg:' || tgrelid::regclass || '.' || tgname || '@' || xmin FROM pg_trigger WHERE NOT tgisinternal
		  UNION ALL SELECT 'proc:' || proname || '@' || p.xmin FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = 'schedsync'
		  UNION ALL SELECT 'rel:' || relname || '@' || c.xmin FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'schedsync'
		  UNION ALL SELECT 'meta:' || key || '=' || value || '@' || xmin FROM schedsync.meta) s(x)`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInstallIdempotentAndPicksUpNewTables(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY);
		CREATE SCHEMA other; CREATE TABLE other.c (id int PRIMARY KEY)`)
	rep := d.install(InstallOptions{})
	if !rep.SchemaCreated || !reflect.DeepEqual(rep.Added, []string{"public.a", "public.b"}) {
		t.Fatalf("first install: %+v", rep)
	}
	before := catalogState(t, d)
	rep = d.install(InstallOptions{})
	if rep.SchemaCreated || len(rep.Added) != 0 || len(rep.Removed) != 0 {
		t.Fatalf("second install did something: %+v", rep)
	}
	if after := catalogState(t, d); after != before {
		t.Fatalf("second install changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
	d.exec(`CREATE TABLE c2 (id int PRIMARY KEY)`)
	rep = d.install(InstallOptions{})
	if !reflect.DeepEqual(rep.Added, []string{"public.c2"}) {
		t.Fatalf("new table not picked up: %+v", rep)
	}
	// Narrowing the filter removes triggers from tables no longer matched.
	rep = d.install(InstallOptions{Tables: []string{"a", "other.*"}, Schemas: []string{"public", "other"}})
	if !reflect.DeepEqual(rep.Added, []string{"other.c"}) || !reflect.DeepEqual(rep.Removed, []string{"public.b", "public.c2"}) {
		t.Fatalf("filter: %+v", rep)
	}
}

func TestUninstallRemovesOnlyWhatInstallCreated(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE a (id int PRIMARY KEY, v text);
		INSERT INTO a VALUES (1, 'x');
		CREATE FUNCTION user_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
		CREATE TRIGGER user_own BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION user_trg()`)
	d.install(InstallOptions{})
	if err := Uninstall(context.Background(), d.conn()); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(context.Background(), d.conn()); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
	var schemas, ours, theirs, rows int
	err := d.conn().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM pg_namespace WHERE nspname = 'schedsync'),
		(SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'schedsync%'),
		(SELECT count(*) FROM pg_trigger WHERE tgname = 'user_own'),
		(SELECT count(*) FROM a)`).Scan(&schemas, &ours, &theirs, &rows)
	if err != nil {
		t.Fatal(err)
	}
	if schemas != 0 || ours != 0 || theirs != 1 || rows != 1 {
		t.Fatalf("after uninstall: schema %d, our triggers %d, user trigger %d, rows %d", schemas, ours, theirs, rows)
	}
}

func TestInstallRefusesTablesWithoutPrimaryKey(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE ok (id int PRIMARY KEY); CREATE TABLE nopk1 (v text); CREATE TABLE nopk2 (v int)`)
	_, err := Install(context.Background(), d.conn(), InstallOptions{Schemas: []string{"public"}, Role: config.RoleMaster})
	var npk *NoPrimaryKeyError
	if !errors.As(err, &npk) || !reflect.DeepEqual(npk.Tables, []string{"public.nopk1", "public.nopk2"}) {
		t.Fatalf("want NoPrimaryKeyError listing both tables, got %v", err)
	}
	if !strings.Contains(err.Error(), "capture.allow_no_pk") {
		t.Fatalf("error does not say how to fix it: %v", err)
	}
	var n int
	d.conn().QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname = 'schedsync'`).Scan(&n)
	if n != 0 {
		t.Fatalf("a refused install left schema schedsync behind")
	}

	rep := d.install(InstallOptions{AllowNoPK: true})
	if !reflect.DeepEqual(rep.NoPK, []string{"public.nopk1", "public.nopk2"}) {
		t.Fatalf("NoPK: %+v", rep)
	}
	// Full-row identity: a delete carries the whole old row as its key.
	d.exec(`INSERT INTO nopk1 VALUES ('a'), ('b'); DELETE FROM nopk1 WHERE v = 'a'`)
	sink := &memSink{}
	drain(t, d.reader(sink, 100))
	txns := sink.all()
	last := txns[len(txns)-1].Changes
	del := last[len(last)-1]
	if del.Op != 'D' || !reflect.DeepEqual(del.KeyColumns, []string{"v"}) || del.OldKey[0].Text != "a" {
		t.Fatalf("full-row delete: %+v", del)
	}
}

func TestSlaveInstallCreatesOnlyStateTables(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE TABLE a (id int PRIMARY KEY)`)
	d.install(InstallOptions{Role: config.RoleSlave})
	var state, audit, trg int
	d.conn().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM schedsync.state),
		(SELECT count(*) FROM pg_class WHERE relname = 'audit' AND relnamespace = 'schedsync'::regnamespace),
		(SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'schedsync%')`).Scan(&state, &audit, &trg)
	if state != 1 || audit != 0 || trg != 0 {
		t.Fatalf("slave install: state rows %d, audit %d, triggers %d", state, audit, trg)
	}
}
