package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// finish stops the load and checks the end state: the slave catches up,
// holds the master's rows row by row and its sequences at or ahead, and
// verify agrees; then both services stop.
func (w *world) finish(t *testing.T, ctx context.Context, l *load) {
	t.Helper()
	l.stop()
	l.report(t)
	if !t.Run("catch up", w.waitCaughtUp) {
		return
	}
	t.Run("rows equal", func(t *testing.T) { w.requireSameRows(t, ctx) })
	t.Run("sequences", func(t *testing.T) { w.checkEqual(t, ctx) })
	t.Run("verify", w.verifyEqual)
	t.Run("stop", w.stopServices)
}

// requireSameRows compares every table of schema public (and of
// w.schemas) between the two repositories row by row: each table's rows as text, sorted, so that a
// table without a primary key is compared as the multiset it is (a row
// applied twice shows as one more copy). It is independent of schedsync:
// no checksum of ours, no verify.
func (w *world) requireSameRows(t *testing.T, ctx context.Context) {
	t.Helper()
	requireSameRows(t, ctx, w.master.repo, w.slave.repo, w.schemas...)
}

// requireSameRows is world.requireSameRows for any two repositories, the
// master's first, and schema public and more.
func requireSameRows(t *testing.T, ctx context.Context, masterURL, slaveURL string, more ...string) {
	t.Helper()
	master, err := tableRows(ctx, masterURL, more)
	if err != nil {
		t.Fatalf("master: %v", err)
	}
	slave, err := tableRows(ctx, slaveURL, more)
	if err != nil {
		t.Fatalf("slave: %v", err)
	}
	var diffs []string
	total := 0
	for _, table := range slices.Sorted(maps.Keys(master)) {
		m, s := master[table], slave[table]
		total += len(m)
		if only := multisetDiff(m, s); only != "" {
			diffs = append(diffs, fmt.Sprintf("table %s: master %d rows, slave %d rows; %s", table, len(m), len(s), only))
		}
	}
	for table := range slave {
		if _, ok := master[table]; !ok {
			diffs = append(diffs, fmt.Sprintf("table %s is on the slave only", table))
		}
	}
	if len(diffs) > 0 {
		t.Fatalf("the slave's rows differ from the master's:\n%s", strings.Join(diffs, "\n"))
	}
	t.Logf("row by row: %d tables, %d rows, equal", len(master), total)
}

// tableRows reads every row of every table of schema public (named
// without it) and of the schemas more (named schema.table) as text, with
// the output settings pinned so that both servers print alike.
func tableRows(ctx context.Context, url string, more []string) (map[string][]string, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SET extra_float_digits = 3; SET bytea_output = 'hex'; SET DateStyle = 'ISO, YMD';
		SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'`); err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = ANY ($1) AND c.relkind = 'r' ORDER BY 1, 2`, append([]string{"public"}, more...))
	if err != nil {
		return nil, err
	}
	type table struct{ Schema, Name string }
	tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[table])
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, tb := range tables {
		key := tb.Name
		if tb.Schema != "public" {
			key = tb.Schema + "." + tb.Name
		}
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT t::text FROM %s t ORDER BY 1`, pgx.Identifier{tb.Schema, tb.Name}.Sanitize()))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		if out[key], err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
	}
	return out, nil
}

// multisetDiff says which rows one sorted list has more often than the
// other (the first few), or "" if they are equal.
func multisetDiff(master, slave []string) string {
	var onlyM, onlyS []string
	i, j := 0, 0
	for i < len(master) || j < len(slave) {
		switch {
		case j >= len(slave) || (i < len(master) && master[i] < slave[j]):
			onlyM = append(onlyM, master[i])
			i++
		case i >= len(master) || slave[j] < master[i]:
			onlyS = append(onlyS, slave[j])
			j++
		default:
			i++
			j++
		}
	}
	if len(onlyM) == 0 && len(onlyS) == 0 {
		return ""
	}
	return fmt.Sprintf("%d rows only (or more often) on the master %s; %d only on the slave %s",
		len(onlyM), firstRows(onlyM), len(onlyS), firstRows(onlyS))
}

func firstRows(rows []string) string {
	if len(rows) > 3 {
		return fmt.Sprintf("%q…", rows[:3])
	}
	return fmt.Sprintf("%q", rows)
}
