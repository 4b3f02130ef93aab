package capture

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
)

// relation is what the reader needs to name the fields of an audit row.
type relation struct {
	schema, name string
	// attrs are the live columns in attnum order: the fields of a record
	// literal of the table.
	attrs []attr
	// columns are the names shipped in a row image (generated columns
	// left out); keyColumns the identity, and keyIdx the position of each
	// key column in attrs.
	columns    []string
	keyColumns []string
	keyIdx     []int
	// fullRow: no primary key, rows are identified by all their columns.
	fullRow bool
}

type attr struct {
	name      string
	generated bool
}

func (r *relation) String() string { return r.schema + "." + r.name }

// loadRelation reads the catalog description of a table. A table without a
// primary key is identified by all its non-generated columns.
func loadRelation(ctx context.Context, q pgx.Tx, relid uint32) (*relation, error) {
	var s shapeJSON
	err := q.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, relid).Scan(&s.Schema, &s.Name)
	if err == pgx.ErrNoRows {
		return nil, fmt.Errorf("audit rows reference table oid %d, which no longer exists: it was dropped while its changes were pending; drop it on the slave too and delete those rows from schedsync.audit (relid = %d)", relid, relid)
	}
	if err != nil {
		return nil, fmt.Errorf("look up table oid %d: %w", relid, err)
	}
	rows, err := q.Query(ctx, `
		SELECT a.attname, a.attgenerated <> '',
		       COALESCE(a.attnum = ANY (i.indkey::int2[]), false)
		FROM pg_attribute a
		LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, relid)
	name := s.Schema + "." + s.Name
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var a shapeAttr
		if err := rows.Scan(&a.Name, &a.Generated, &a.Key); err != nil {
			return nil, fmt.Errorf("read columns of %s: %w", name, err)
		}
		s.Attrs = append(s.Attrs, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	return relationOf(s), nil
}

func (r *relation) checkFields(n int) error {
	if n > len(r.attrs) {
		return fmt.Errorf("a captured row of %s has %d fields but the table has %d columns: a column was dropped while its changes were pending; re-sync the slave (schedsync resync --force)", r, n, len(r.attrs))
	}
	return nil
}

// rowImage names the fields of a record literal: the shipped columns and
// their values. A record with fewer fields than the table has columns was
// captured before columns were added; it carries the leading columns only.
func (r *relation) rowImage(fields []change.Value) ([]string, []change.Value, error) {
	if err := r.checkFields(len(fields)); err != nil {
		return nil, nil, err
	}
	if len(fields) == len(r.attrs) && len(r.columns) == len(r.attrs) {
		return r.columns, fields, nil
	}
	var cols []string
	vals := make([]change.Value, 0, len(fields))
	for i, f := range fields {
		if r.attrs[i].generated {
			continue
		}
		cols = append(cols, r.attrs[i].name)
		vals = append(vals, f)
	}
	return cols, vals, nil
}

// key picks the identity columns and values out of a record literal's fields.
func (r *relation) key(fields []change.Value) ([]string, []change.Value, error) {
	if r.fullRow {
		return r.rowImage(fields)
	}
	if err := r.checkFields(len(fields)); err != nil {
		return nil, nil, err
	}
	key := make([]change.Value, len(r.keyIdx))
	for i, idx := range r.keyIdx {
		if idx >= len(fields) {
			return nil, nil, fmt.Errorf("a captured row of %s lacks key column %s: the key changed while its changes were pending", r, r.keyColumns[i])
		}
		key[i] = fields[idx]
	}
	return r.keyColumns, key, nil
}
