package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

// extraTables are the replicated tables besides Quartz's.
var extraTables = []string{"job_history"}

// snapshot is what must be equal between a master and its slave once the
// slave has caught up: a fingerprint per table ("rows:md5"), and the
// sequences' last values.
type snapshot struct {
	tables    map[string]string
	sequences map[string]int64
}

func takeSnapshot(ctx context.Context, url string) (snapshot, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return snapshot{}, err
	}
	defer conn.Close(context.Background())
	s := snapshot{sequences: map[string]int64{}}
	if s.tables, err = quartz.Fingerprint(ctx, conn); err != nil {
		return s, err
	}
	for _, table := range extraTables {
		if s.tables[table], err = fingerprint(ctx, conn, table); err != nil {
			return s, err
		}
	}
	// last_value is NULL for a sequence never used (or set with
	// is_called false): count it as 0.
	rows, err := conn.Query(ctx, `SELECT sequencename, coalesce(last_value, 0) FROM pg_sequences
		WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		return s, fmt.Errorf("read sequences: %w", err)
	}
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return s, fmt.Errorf("read sequences: %w", err)
		}
		s.sequences[name] = v
	}
	return s, rows.Err()
}

// fingerprint is quartz.Fingerprint's checksum for any table: the row
// count and an md5 of the rows' text forms in sorted order.
func fingerprint(ctx context.Context, conn *pgx.Conn, table string) (string, error) {
	q := fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '')
		FROM (SELECT md5(t::text) AS h FROM %s t) s`, pgx.Identifier{table}.Sanitize())
	var n int64
	var sum string
	if err := conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
		return "", fmt.Errorf("fingerprint %s: %w", table, err)
	}
	return fmt.Sprintf("%d:%s", n, sum), nil
}

// differences lists, one per line, every table whose fingerprint differs
// and every sequence that is behind on the slave; "" means none.
func differences(master, slave snapshot) string {
	var out []string
	for _, table := range slices.Sorted(maps.Keys(master.tables)) {
		if m, s := master.tables[table], slave.tables[table]; m != s {
			out = append(out, fmt.Sprintf("table %s: master %s, slave %s", table, m, s))
		}
	}
	for _, seq := range slices.Sorted(maps.Keys(master.sequences)) {
		m := master.sequences[seq]
		if s, ok := slave.sequences[seq]; !ok || s < m {
			out = append(out, fmt.Sprintf("sequence %s: master last_value %d, slave %d (exists: %v)", seq, m, s, ok))
		}
	}
	return strings.Join(out, "\n")
}
