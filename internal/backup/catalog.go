package backup

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/capture"

	"github.com/schedsync/schedsync/internal/change"
)

// pinSettings makes text COPY output, and format_type's names, the same on
// both sides whatever the servers' and roles' defaults; the same settings
// capture and apply pin. It needs a transaction.
var pinSettings = change.SetSQL(true)

// readSource identifies the database tx is connected to.
func readSource(ctx context.Context, tx pgx.Tx) (Source, error) {
	var s Source
	var sysid string
	err := tx.QueryRow(ctx, `SELECT (SELECT system_identifier::text FROM pg_control_system()),
		current_database(), current_setting('server_version_num')::int, pg_encoding_to_char(d.encoding)
		FROM pg_database d WHERE d.datname = current_database()`).Scan(&sysid, &s.Database, &s.ServerVersion, &s.Encoding)
	if err != nil {
		return s, fmt.Errorf("read the database identity: %w", err)
	}
	if s.SystemIdentifier, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return s, fmt.Errorf("parse system identifier %q: %w", sysid, err)
	}
	return s, nil
}

// columnSQL lists a table's stored columns (generated columns are
// recomputed, never copied) with their type, and says whether the binary
// COPY form of each is the same in every database. It is not for arrays
// and composites of user-defined types (they embed type OIDs) nor for the
// reg* types (their binary form is an OID); enums send their label.
const columnSQL = `
	SELECT a.attrelid, a.attnum, a.attname::text, format_type(a.atttypid, a.atttypmod),
	       (b.oid < 16384 OR b.typtype = 'e') AND coalesce(e.typname, b.typname) NOT LIKE 'reg%' AS portable
	FROM pg_attribute a
	JOIN pg_type t ON t.oid = a.atttypid
	JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
	LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
	WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''`

// tableInfo is a table in the catalog, with size estimates for progress.
type tableInfo struct {
	TableHeader
	estRows, estBytes int64
}

// listTables lists the replicated tables: those that carry the capture
// trigger, as internal/checksum.CapturedSpecs does.
func listTables(ctx context.Context, tx pgx.Tx) ([]tableInfo, error) {
	rows, err := tx.Query(ctx, `
		SELECT n.nspname::text, c.relname::text, array_agg(col.attname ORDER BY col.attnum),
		       array_agg(col.format_type ORDER BY col.attnum), bool_and(col.portable),
		       greatest(c.reltuples, 0)::bigint, pg_table_size(c.oid)
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN (`+columnSQL+`) col ON col.attrelid = c.oid
		WHERE `+capture.ReplicatedCondition+`
		GROUP BY n.nspname, c.relname, c.reltuples, c.oid
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list replicated tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableInfo, error) {
		var t tableInfo
		var names, types []string
		var portable bool
		if err := r.Scan(&t.Schema, &t.Name, &names, &types, &portable, &t.estRows, &t.estBytes); err != nil {
			return t, fmt.Errorf("list replicated tables: %w", err)
		}
		for i := range names {
			t.Columns = append(t.Columns, Column{Name: names[i], Type: types[i]})
		}
		t.Format = formatBinary
		if !portable {
			t.Format = formatText
		}
		return t, nil
	})
}

// readSequences reads the sequences of schemas. Sequences are not
// transactional: what is read is the current value, at or above every
// value a transaction visible in the snapshot drew.
func readSequences(ctx context.Context, tx pgx.Tx, schemas []string) ([]Sequence, error) {
	rows, err := tx.Query(ctx, `
		SELECT n.nspname::text, c.relname::text, coalesce(pg_sequence_last_value(c.oid), s.seqstart),
		       pg_sequence_last_value(c.oid) IS NOT NULL
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_sequence s ON s.seqrelid = c.oid
		WHERE c.relkind = 'S' AND c.relpersistence <> 't' AND n.nspname = ANY ($1) AND n.nspname <> 'schedsync'
		ORDER BY 1, 2`, schemas)
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Sequence, error) {
		var s Sequence
		err := r.Scan(&s.Schema, &s.Name, &s.LastValue, &s.IsCalled)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	return seqs, nil
}

func quotedColumns(t *TableHeader) string {
	q := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		q[i] = change.QuoteIdent(c.Name)
	}
	return strings.Join(q, ", ")
}

func copySQL(t *TableHeader, dir string) string {
	return fmt.Sprintf("COPY %s (%s) %s (FORMAT %s)", t.QualifiedName(), quotedColumns(t), dir, t.Format)
}
