package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
)

// ErrSchema is wrapped by errors that say the slave's schema cannot take
// what the master sends (a missing table or column, no matching key).
// Apply stops on them; fixing the slave's schema and restarting resumes.
var ErrSchema = errors.New("slave schema does not match the master")

// table is the slave's description of a replicated table.
type table struct {
	qname  string            // "schema"."name"
	types  map[string]string // column → format_type, for casts
	ident  bool              // has a GENERATED ALWAYS identity column
	pk     []string          // primary key columns, in key order
	unique map[string][]string
	stmts  map[string]string // cached SQL by shape
}

// tables caches slave table descriptions for one apply session.
type tables map[string]*table

// cached is the table's description if it was looked up already.
func (ts tables) cached(schema, name string) *table {
	return ts[change.QuoteIdent(schema)+"."+change.QuoteIdent(name)]
}

func (ts tables) get(ctx context.Context, conn *pgx.Conn, schema, name string) (*table, error) {
	qname := change.QuoteIdent(schema) + "." + change.QuoteIdent(name)
	if t := ts[qname]; t != nil {
		return t, nil
	}
	t, err := loadTable(ctx, conn, qname)
	if err != nil {
		return nil, err
	}
	ts[qname] = t
	return t, nil
}

func loadTable(ctx context.Context, conn *pgx.Conn, qname string) (*table, error) {
	var oid *uint32
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1)::oid`, qname).Scan(&oid); err != nil {
		return nil, fmt.Errorf("look up %s on the slave: %w", qname, err)
	}
	if oid == nil {
		return nil, fmt.Errorf("%w: the slave has no table %s; create it like the master's", ErrSchema, qname)
	}
	t := &table{qname: qname, types: map[string]string{}, unique: map[string][]string{}, stmts: map[string]string{}}
	rows, err := conn.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod), attidentity = 'a', attgenerated <> ''
		FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, *oid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", qname, err)
	}
	for rows.Next() {
		var name, typ string
		var identAlways, generated bool
		if err := rows.Scan(&name, &typ, &identAlways, &generated); err != nil {
			return nil, fmt.Errorf("read columns of %s: %w", qname, err)
		}
		if generated {
			continue // cannot be written; a master value for it is an error below
		}
		t.types[name] = typ
		t.ident = t.ident || identAlways
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", qname, err)
	}
	rows, err = conn.Query(ctx, `SELECT c.conname, c.contype = 'p',
		array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
		      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i)::text[]
		FROM pg_constraint c WHERE c.conrelid = $1 AND c.contype IN ('p', 'u')`, *oid)
	if err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", qname, err)
	}
	for rows.Next() {
		var name string
		var primary bool
		var cols []string
		if err := rows.Scan(&name, &primary, &cols); err != nil {
			return nil, fmt.Errorf("read keys of %s: %w", qname, err)
		}
		t.unique[name] = cols
		if primary {
			t.pk = cols
		}
	}
	return t, rows.Err()
}

// statement is the SQL cached under key (a statement's shape), built the
// first time it is asked for.
func (t *table) statement(key string, build func() string) string {
	if sql, ok := t.stmts[key]; ok {
		return sql
	}
	sql := build()
	t.stmts[key] = sql
	return sql
}

// check refuses a change whose columns the slave table cannot hold. That
// includes columns a partial update did not send (Unchanged): the master
// has them, so a slave without them would be missing data.
func (t *table) check(c *change.Change) error {
	for _, cols := range [][]string{c.Columns, c.KeyColumns} {
		for _, col := range cols {
			if _, ok := t.types[col]; !ok {
				return fmt.Errorf("%w: the slave table %s has no column %q that the master sends (or it is generated on the slave); add it (ALTER TABLE %s ADD COLUMN %s ...) and restart the slave",
					ErrSchema, t.qname, col, t.qname, change.QuoteIdent(col))
			}
		}
	}
	return nil
}

// isKey reports whether cols are the slave table's primary key, as a set.
func (t *table) isKey(cols []string) bool {
	if len(cols) != len(t.pk) {
		return false
	}
	if slices.Equal(cols, t.pk) {
		return true // the usual case, without a map
	}
	seen := map[string]bool{}
	for _, c := range t.pk {
		seen[c] = true
	}
	for _, c := range cols {
		if !seen[c] {
			return false
		}
	}
	return true
}

// cast renders parameter n cast to column col's type.
func (t *table) cast(n int, col string) string {
	return fmt.Sprintf("$%d::text::%s", n, t.types[col])
}

func quoteList(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = change.QuoteIdent(c)
	}
	return strings.Join(q, ", ")
}
