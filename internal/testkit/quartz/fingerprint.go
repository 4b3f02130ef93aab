package quartz

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Fingerprint returns, for each Quartz table, "rows:md5" where md5 is a
// checksum of the table's contents that does not depend on row order. Two
// databases with the same rows have the same fingerprints, whatever their
// physical layout, which is what a replica must match.
//
// The tables are read in one REPEATABLE READ transaction, so the result is
// a consistent snapshot even while Run writes. Rows are compared in their
// text form, with bytea_output set for the transaction so that a server
// configured for "escape" still agrees with one using "hex".
func Fingerprint(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("fingerprint: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SET LOCAL bytea_output = 'hex'`); err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	fp := make(map[string]string, len(tables))
	for _, table := range tables {
		// The table name is one of ours, not input: quoting is for form.
		q := fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '')
			FROM (SELECT md5(t::text) AS h FROM %s t) s`, pgx.Identifier{table}.Sanitize())
		var n int64
		var sum string
		if err := tx.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
			return nil, fmt.Errorf("fingerprint %s: %w", table, err)
		}
		fp[table] = fmt.Sprintf("%d:%s", n, sum)
	}
	return fp, nil
}
