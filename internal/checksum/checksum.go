// Package checksum computes the table checksums that `schedsync verify`
// compares between master and slave. Both sides compute them with the same
// SQL inside a REPEATABLE READ transaction with pinned output settings, so
// that equal rows give equal checksums whatever the servers' defaults.
//
// A table's checksum is the row count and the sum of a 64-bit hash of each
// row's text, split into Buckets buckets by a hash of the row's key. The sum
// is order-independent (no dependence on collation or physical order), and
// the buckets say which part of the key space differs.
package checksum

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/capture"

	"github.com/schedsync/schedsync/internal/change"
)

// Buckets is the number of key-hash buckets per table.
const Buckets = 16

// Spec names a table and the columns its checksum covers.
type Spec struct {
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Columns []string `json:"columns"`
	Key     []string `json:"key"`
}

// Table is a table's checksum.
type Table struct {
	Spec
	Rows    int64            `json:"rows"`
	Buckets [Buckets]Partial `json:"buckets"`
}

// Partial is the checksum of one bucket.
type Partial struct {
	Rows int64  `json:"rows"`
	Sum  string `json:"sum"` // numeric, as text: a sum of 64-bit hashes
}

// Sequence is a sequence's last value.
type Sequence struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Value  int64  `json:"value"`
}

// Report is one side's checksums at a position.
type Report struct {
	Position uint64 `json:"position"`
	// Epoch is the capture history of Position on the master, and of the
	// data on the slave; 0 when unknown.
	Epoch uint64 `json:"capture_epoch,string,omitempty"`
	// SequencesAt is the position from which the slave's sequences are
	// compared (at or after Position; 0 means Position): sequences are not
	// transactional, and the master may read them after Position.
	SequencesAt uint64     `json:"sequences_at,omitempty"`
	Tables      []Table    `json:"tables"`
	Sequences   []Sequence `json:"sequences"`
}

// pin makes row text identical on both sides; it needs a transaction.
var pin = change.SetSQL(true)

// CapturedSpecs lists the replicated tables (capture triggers or the
// publication, by capture mode), with
// their non-generated columns and their key (the primary key, or every
// column when there is none).
func CapturedSpecs(ctx context.Context, tx pgx.Tx) ([]Spec, error) {
	rows, err := tx.Query(ctx, `
		SELECT n.nspname, c.relname,
		  array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
		        AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum),
		  coalesce((SELECT array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
		        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.n ORDER BY k.o)
		     FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+capture.ReplicatedCondition+`
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list replicated tables: %w", err)
	}
	specs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Spec, error) {
		var s Spec
		err := r.Scan(&s.Schema, &s.Name, &s.Columns, &s.Key)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list replicated tables: %w", err)
	}
	for i := range specs {
		if len(specs[i].Key) == 0 {
			specs[i].Key = specs[i].Columns
		}
	}
	return specs, nil
}

// Compute checksums the tables of specs and the sequences of schemas in
// tx, which must be a REPEATABLE READ transaction.
func Compute(ctx context.Context, tx pgx.Tx, specs []Spec, schemas []string) ([]Table, []Sequence, error) {
	if _, err := tx.Exec(ctx, pin); err != nil {
		return nil, nil, fmt.Errorf("pin output settings: %w", err)
	}
	tables := make([]Table, 0, len(specs))
	for _, s := range specs {
		t, err := computeTable(ctx, tx, s)
		if err != nil {
			return nil, nil, err
		}
		tables = append(tables, t)
	}
	rows, err := tx.Query(ctx, `SELECT schemaname, sequencename, coalesce(last_value, 0) FROM pg_sequences
		WHERE schemaname = ANY ($1) ORDER BY 1, 2`, schemas)
	if err != nil {
		return nil, nil, fmt.Errorf("read sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Sequence, error) {
		var s Sequence
		err := r.Scan(&s.Schema, &s.Name, &s.Value)
		return s, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read sequences: %w", err)
	}
	return tables, seqs, nil
}

func quoteAll(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = change.QuoteIdent(c)
	}
	return strings.Join(q, ", ")
}

func computeTable(ctx context.Context, tx pgx.Tx, s Spec) (Table, error) {
	t := Table{Spec: s}
	qname := change.QuoteIdent(s.Schema) + "." + change.QuoteIdent(s.Name)
	sql := fmt.Sprintf(`SELECT b, count(*), sum(h)::text FROM (
		SELECT abs(hashtextextended(ROW(%s)::text, 0) %% %d) AS b,
		       ('x' || substr(md5(ROW(%s)::text), 1, 16))::bit(64)::bigint AS h
		FROM %s) x GROUP BY b`, quoteAll(s.Key), Buckets, quoteAll(s.Columns), qname)
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return t, fmt.Errorf("checksum %s: %w", qname, err)
	}
	defer rows.Close()
	for i := range t.Buckets {
		t.Buckets[i].Sum = "0"
	}
	for rows.Next() {
		var b int
		var p Partial
		if err := rows.Scan(&b, &p.Rows, &p.Sum); err != nil {
			return t, fmt.Errorf("checksum %s: %w", qname, err)
		}
		t.Buckets[b] = p
		t.Rows += p.Rows
	}
	return t, rows.Err()
}
