package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrSchema: the slave's tables or sequences do not match the backup.
// Nothing was changed.
var ErrSchema = errors.New("the slave's schema does not match the backup")

// target is what Restore found in the slave before touching it.
type target struct {
	needsResync bool            // the mark before this restore
	partitioned map[string]bool // tables (schema.name) partitioned on the slave
}

// checkTarget checks, before anything is changed, that the slave can take
// the backup: schedsync is installed, it is not the very database the
// backup was taken from, the encodings agree, and every table exists with
// every column of the same type and every sequence exists.
func checkTarget(ctx context.Context, conn *pgx.Conn, m *Manifest) (*target, error) {
	tg := &target{partitioned: map[string]bool{}}
	err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinSettings); err != nil {
			return fmt.Errorf("pin session settings: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT needs_resync FROM schedsync.state WHERE id = 1`).Scan(&tg.needsResync); err != nil {
			return fmt.Errorf("read schedsync.state (run schedsync install on the slave): %w", err)
		}
		src, err := readSource(ctx, tx)
		if err != nil {
			return err
		}
		if src.SystemIdentifier == m.Source.SystemIdentifier && src.Database == m.Source.Database {
			return fmt.Errorf("the backup was taken from this very database (%s, system %d); restore it on the slave", src.Database, src.SystemIdentifier)
		}
		var problems []string
		if src.Encoding != m.Source.Encoding {
			problems = append(problems, fmt.Sprintf("the slave database's encoding is %s, the backup's %s", src.Encoding, m.Source.Encoding))
		}
		p, err := checkTables(ctx, tx, m, tg)
		if err != nil {
			return err
		}
		problems = append(problems, p...)
		if p, err = checkSequences(ctx, tx, m); err != nil {
			return err
		}
		problems = append(problems, p...)
		if len(problems) > 0 {
			return fmt.Errorf("%w; nothing was changed:\n%s", ErrSchema, strings.Join(problems, "\n"))
		}
		return nil
	})
	return tg, err
}

// slaveColumn is a column of a slave table.
type slaveColumn struct {
	typ       string
	generated bool
	// needsValue: NOT NULL with no default, identity or generation, so a
	// row without a value for it cannot be loaded.
	needsValue bool
}

func checkTables(ctx context.Context, tx pgx.Tx, m *Manifest, tg *target) ([]string, error) {
	names := make([]string, len(m.Tables))
	for i := range m.Tables {
		names[i] = m.Tables[i].QualifiedName()
	}
	rows, err := tx.Query(ctx, `
		SELECT q.i::int, c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '',
		       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
		FROM unnest($1::text[]) WITH ORDINALITY q(name, i)
		LEFT JOIN pg_class c ON c.oid = to_regclass(q.name)
		LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped`, names)
	if err != nil {
		return nil, fmt.Errorf("read the slave's tables: %w", err)
	}
	kinds := map[int]string{}
	cols := map[int]map[string]slaveColumn{}
	for rows.Next() {
		var i int
		var kind, name, typ *string
		var generated, needsValue *bool
		if err := rows.Scan(&i, &kind, &name, &typ, &generated, &needsValue); err != nil {
			return nil, fmt.Errorf("read the slave's tables: %w", err)
		}
		i-- // ordinality starts at 1
		if kind != nil {
			kinds[i] = *kind
		}
		if name != nil {
			if cols[i] == nil {
				cols[i] = map[string]slaveColumn{}
			}
			cols[i][*name] = slaveColumn{typ: *typ, generated: *generated, needsValue: *needsValue}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the slave's tables: %w", err)
	}
	var problems []string
	for i := range m.Tables {
		t := &m.Tables[i]
		switch kinds[i] {
		case "":
			problems = append(problems, fmt.Sprintf("table %s does not exist on the slave", t))
			continue
		case "p":
			tg.partitioned[t.String()] = true
		case "r":
		default:
			problems = append(problems, fmt.Sprintf("%s is not a table on the slave (relkind %s)", t, kinds[i]))
			continue
		}
		problems = append(problems, checkColumns(t, cols[i])...)
	}
	return problems, nil
}

// checkColumns compares a table's columns in the backup and on the slave.
func checkColumns(t *Table, cols map[string]slaveColumn) []string {
	var problems, extra []string
	inBackup := map[string]bool{}
	for _, c := range t.Columns {
		inBackup[c.Name] = true
		sc, ok := cols[c.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("table %s: column %s is missing on the slave (%s in the backup)", t, c.Name, c.Type))
		case sc.typ != c.Type:
			problems = append(problems, fmt.Sprintf("table %s: column %s is %s on the slave but %s in the backup", t, c.Name, sc.typ, c.Type))
		case sc.generated:
			problems = append(problems, fmt.Sprintf("table %s: column %s is generated on the slave but stored in the backup", t, c.Name))
		}
	}
	for name, sc := range cols {
		if !inBackup[name] && sc.needsValue {
			extra = append(extra, fmt.Sprintf("table %s: column %s is NOT NULL without a default on the slave, and the backup has no values for it", t, name))
		}
	}
	slices.Sort(extra)
	return append(problems, extra...)
}

func checkSequences(ctx context.Context, tx pgx.Tx, m *Manifest) ([]string, error) {
	names := make([]string, len(m.Sequences))
	for i := range m.Sequences {
		names[i] = m.Sequences[i].QualifiedName()
	}
	rows, err := tx.Query(ctx, `SELECT q.i::int FROM unnest($1::text[]) WITH ORDINALITY q(name, i)
		WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = to_regclass(q.name) AND c.relkind = 'S')`, names)
	if err != nil {
		return nil, fmt.Errorf("read the slave's sequences: %w", err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("read the slave's sequences: %w", err)
	}
	var problems []string
	for _, i := range missing {
		s := m.Sequences[i-1]
		problems = append(problems, fmt.Sprintf("sequence %s.%s does not exist on the slave", s.Schema, s.Name))
	}
	return problems, nil
}
