package backup

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
)

// rebuildMinRows is the size from which a table's indexes are dropped
// before its COPY and built again after it: one sorted build is much
// cheaper than a million inserts into a B-tree (pgbench_accounts, 2M
// rows: 1.7 s instead of 2.8 s), and small tables are not worth the DDL.
const rebuildMinRows = 100_000

// rebuildable lists the indexes of a table that can be dropped and built
// again, in the load transaction, with nothing lost: only indexes that
// nothing depends on (no foreign key references them), that carry no
// comment, statistics target, tablespace, replica identity or CLUSTER
// mark, and are not part of a partitioned index. What pg_get_indexdef or
// pg_get_constraintdef prints recreates them exactly. If anything fails,
// the transaction rolls back and the indexes are as they were. Only the
// table's owner may drop its indexes: a least-privilege role (README:
// Database roles) loads into them as they are, more slowly.
const rebuildableSQL = `
	SELECT ic.relname::text, coalesce(c.conname::text, ''),
	       CASE WHEN c.oid IS NULL THEN pg_get_indexdef(i.indexrelid) ELSE pg_get_constraintdef(c.oid) END
	FROM pg_index i
	JOIN pg_class ic ON ic.oid = i.indexrelid
	LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')
	WHERE i.indrelid = $1::text::regclass
	  AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = i.indrelid), 'USAGE')
	  AND i.indisvalid AND i.indisready AND i.indislive AND NOT i.indisreplident AND NOT i.indisclustered
	  AND ic.reltablespace = 0
	  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid OR h.inhparent = i.indexrelid)
	  AND NOT EXISTS (SELECT 1 FROM pg_description d WHERE (d.classoid = 'pg_class'::regclass AND d.objoid = i.indexrelid)
	                  OR (d.classoid = 'pg_constraint'::regclass AND d.objoid = c.oid))
	  AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND a.attstattarget IS NOT NULL AND a.attstattarget <> -1)
	  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indexrelid)
	  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_constraint'::regclass AND d.refobjid = c.oid
	                  AND NOT (d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid))
	ORDER BY 1`

// droppedIndex is an index dropped for a load, and how to build it again.
type droppedIndex struct {
	index, constraint string
	def               string // CREATE INDEX ..., or the constraint's definition
}

// dropIndexes drops the rebuildable indexes of a big table.
func dropIndexes(ctx context.Context, tx pgx.Tx, t *Table) ([]droppedIndex, error) {
	if t.Rows < rebuildMinRows {
		return nil, nil
	}
	rows, err := tx.Query(ctx, rebuildableSQL, t.QualifiedName())
	if err != nil {
		return nil, fmt.Errorf("list the indexes of %s: %w", t.String(), err)
	}
	idx, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (droppedIndex, error) {
		var d droppedIndex
		err := r.Scan(&d.index, &d.constraint, &d.def)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("list the indexes of %s: %w", t.String(), err)
	}
	for _, d := range idx {
		sql := "DROP INDEX " + change.QuoteIdent(t.Schema) + "." + change.QuoteIdent(d.index)
		if d.constraint != "" {
			sql = "ALTER TABLE " + t.QualifiedName() + " DROP CONSTRAINT " + change.QuoteIdent(d.constraint)
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("drop index %s of %s for the load: %w", d.index, t.String(), err)
		}
	}
	return idx, nil
}

// buildIndexes builds the dropped indexes again, checking unique ones.
func buildIndexes(ctx context.Context, tx pgx.Tx, t *Table, idx []droppedIndex) error {
	for _, d := range idx {
		sql := d.def
		if d.constraint != "" {
			sql = "ALTER TABLE " + t.QualifiedName() + " ADD CONSTRAINT " + change.QuoteIdent(d.constraint) + " " + d.def
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("build index %s of %s again: %w", d.index, t.String(), withDetail(err))
		}
	}
	return nil
}
