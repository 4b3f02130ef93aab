package apply

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/schedsync/schedsync/internal/change"
)

// Set-based apply. A group's row changes are collapsed, per table, to
// their net effect: for a table with a primary key, the last state of
// every key the group touched (a full row image, deleted, or a set of
// columns to update in place); for a table without one, the rows it
// inserted. Each table's net effect then goes to the server as a few
// statements over arrays of rows (DELETE ... USING unnest, INSERT ...
// SELECT FROM unnest ... ON CONFLICT, UPDATE ... FROM unnest) instead of
// a statement per change: on a backlog, the rows a hot table rewrote a
// thousand times are written once.
//
// This is exact because apply runs with session_replication_role =
// replica: foreign keys and ordinary triggers do not fire, so statements
// on different tables do not see each other and only the order within a
// table matters; and within a table, the rows of different keys are
// independent. What would break that is handled in order instead: a
// change the net effect cannot absorb (an update or delete by full-row
// identity, a partial update that moves its key or follows a delete)
// first writes out the table's net effect so far, then runs as its own
// statements, exactly where it stood. A TRUNCATE drops the net effect of
// the table's earlier changes, which it wipes anyway. The one thing order
// inside a statement can still do is trip a unique constraint other than
// the key (row A takes a value row B gives up later in the group); the
// group then fails with a unique violation and is replayed change by
// change (careful), as before set-based apply.

// netChanges is the net effect of the changes read so far, per table.
type netChanges struct {
	tables map[*table]*netTable
	order  []*netTable // tables in first-touched order: deterministic SQL
	bytes  int         // raw size of the changes held, to bound memory
}

// netTable is one table's net effect.
type netTable struct {
	t    *table
	rows map[string]*netRow // by key text (primary-key tables)
	keys []string           // rows' keys in first-touched order
	// inserts are the rows inserted into a table without a primary key.
	inserts []*change.Change
}

// rowState is what the group leaves of one key.
type rowState byte

const (
	rowImage   rowState = iota // the full row: upserted
	rowDeleted                 // gone: deleted if it is there
	rowPartial                 // some columns set where the row stands
)

// netRow is the net effect on one key: the image (all columns), or for
// rowPartial the columns to set (non-key), with the key in pk order.
type netRow struct {
	state rowState
	key   []change.Value
	cols  []string
	vals  []change.Value
}

func newNetChanges() *netChanges {
	return &netChanges{tables: map[*table]*netTable{}}
}

func (n *netChanges) table(t *table) *netTable {
	nt := n.tables[t]
	if nt == nil {
		nt = &netTable{t: t, rows: map[string]*netRow{}}
		n.tables[t] = nt
		n.order = append(n.order, nt)
	}
	return nt
}

// empty reports whether nothing is held.
func (n *netChanges) empty() bool { return len(n.order) == 0 }

// add folds a row change into the net effect. A change it cannot absorb
// flushes the table's net effect so far to queue and returns the change's
// own statements, to be queued after it.
func (n *netChanges) add(t *table, c *change.Change, queue func(stmt)) ([]stmt, error) {
	if err := t.check(c); err != nil {
		return nil, err
	}
	nt := n.table(t)
	if nt.absorb(c) {
		n.bytes += c.Size()
		return nil, nil
	}
	nt.flush(queue)
	stmts, err := t.statements(c)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", c.Op, t.qname, err)
	}
	return stmts, nil
}

// drop forgets a table's net effect: a TRUNCATE wipes it.
func (n *netChanges) drop(t *table) {
	if nt := n.tables[t]; nt != nil {
		nt.reset()
	}
}

// flush queues the statements of every table's net effect and empties it.
func (n *netChanges) flush(queue func(stmt)) {
	for _, nt := range n.order {
		nt.flush(queue)
	}
	clear(n.tables)
	n.order = n.order[:0]
	n.bytes = 0
}

func (nt *netTable) reset() {
	clear(nt.rows)
	nt.keys = nt.keys[:0]
	nt.inserts = nt.inserts[:0]
}

// absorb folds c into the table's net effect, or reports that it cannot.
// The change's slices are kept: decoding allocates them per change.
func (nt *netTable) absorb(c *change.Change) bool {
	t := nt.t
	if len(t.pk) == 0 {
		if c.Op != change.Insert {
			return false
		}
		cp := *c
		nt.inserts = append(nt.inserts, &cp)
		return true
	}
	switch c.Op {
	case change.Insert:
		key, ok := t.keyOf(c.Columns, c.New)
		if !ok {
			return false
		}
		nt.set(key, &netRow{state: rowImage, cols: c.Columns, vals: c.New})
		return true
	case change.Delete:
		if !t.isKey(c.KeyColumns) {
			return false
		}
		old := t.inKeyOrder(c.KeyColumns, c.OldKey)
		nt.set(old, &netRow{state: rowDeleted})
		return true
	case change.Update:
		if !t.isKey(c.KeyColumns) {
			return false
		}
		old := t.inKeyOrder(c.KeyColumns, c.OldKey)
		cols, vals := c.Columns, c.New
		if c.Partial() {
			prior := nt.rows[keyText(old)]
			switch {
			case prior != nil && prior.state == rowImage:
				var ok bool
				if cols, vals, ok = merge(prior.cols, prior.vals, c.Columns, c.New); !ok {
					return false
				}
			case keyChanged(c) || (prior != nil && prior.state == rowDeleted):
				return false
			default: // the row as it stands on the slave, some columns set
				nt.setPartial(old, prior, c)
				return true
			}
		}
		key, ok := t.keyOf(cols, vals)
		if !ok {
			return false
		}
		if !slices.Equal(key, old) {
			nt.set(old, &netRow{state: rowDeleted})
		}
		nt.set(key, &netRow{state: rowImage, cols: cols, vals: vals})
		return true
	}
	return false
}

func (nt *netTable) set(key []change.Value, r *netRow) {
	r.key = key
	k := keyText(key)
	if _, ok := nt.rows[k]; !ok {
		nt.keys = append(nt.keys, k)
	}
	nt.rows[k] = r
}

// setPartial records a partial update of a row the group has no image of:
// its sent non-key columns, over those of earlier partial updates.
func (nt *netTable) setPartial(key []change.Value, prior *netRow, c *change.Change) {
	r := &netRow{state: rowPartial}
	if prior != nil {
		r.cols, r.vals = slices.Clone(prior.cols), slices.Clone(prior.vals)
	}
	set, vals := nt.t.sent(c, false)
	for i, col := range set {
		if j := slices.Index(r.cols, col); j >= 0 {
			r.vals[j] = vals[i]
		} else {
			r.cols, r.vals = append(r.cols, col), append(r.vals, vals[i])
		}
	}
	nt.set(key, r)
}

// merge lays the sent values of a partial update over a full image. The
// update must name no column the image lacks.
func merge(cols []string, vals []change.Value, upd []string, updVals []change.Value) ([]string, []change.Value, bool) {
	out := slices.Clone(vals)
	for i, col := range upd {
		j := slices.Index(cols, col)
		if j < 0 {
			return nil, nil, false
		}
		if !updVals[i].Unchanged {
			out[j] = updVals[i]
		}
	}
	return cols, out, true
}

// keyOf is the primary key of a row image, in key order; false if the
// image lacks a key column or holds NULL in one.
func (t *table) keyOf(cols []string, vals []change.Value) ([]change.Value, bool) {
	if len(t.pk) == 1 { // the usual case: the key is a slice of the image
		j := slices.Index(cols, t.pk[0])
		if j < 0 || vals[j].Null || vals[j].Unchanged {
			return nil, false
		}
		return vals[j : j+1 : j+1], true
	}
	key := make([]change.Value, len(t.pk))
	for i, k := range t.pk {
		j := slices.Index(cols, k)
		if j < 0 || vals[j].Null || vals[j].Unchanged {
			return nil, false
		}
		key[i] = vals[j]
	}
	return key, true
}

// inKeyOrder reorders an identity that isKey accepted into t.pk order.
func (t *table) inKeyOrder(cols []string, vals []change.Value) []change.Value {
	if slices.Equal(cols, t.pk) {
		return vals
	}
	key := make([]change.Value, len(t.pk))
	for i, k := range t.pk {
		key[i] = vals[slices.Index(cols, k)]
	}
	return key
}

// keyText is a map key for a primary key's values. Two keys equal in
// PostgreSQL but spelled apart (numeric 1.0 and 1.00) get two entries;
// the bulk statement then touches one row twice, fails, and the group is
// replayed change by change.
func keyText(key []change.Value) string {
	if len(key) == 1 {
		return key[0].Text // a key column is never NULL
	}
	var b strings.Builder
	for _, v := range key {
		b.WriteString(strconv.Itoa(len(v.Text)))
		if v.Null {
			b.WriteByte('N')
		}
		b.WriteByte(':')
		b.WriteString(v.Text)
	}
	return b.String()
}

// flush queues the table's net effect: the deletes, then the images by
// column list, then the partial updates by column list, then the inserts
// of a table without a key; and empties it.
func (nt *netTable) flush(queue func(stmt)) {
	t := nt.t
	var deleted [][]change.Value
	images := map[string]*rowSet{}
	partials := map[string]*rowSet{}
	var shapes, partialShapes []string
	for _, k := range nt.keys {
		r := nt.rows[k]
		switch r.state {
		case rowDeleted:
			deleted = append(deleted, r.key)
		case rowImage:
			shapes = addRow(images, shapes, r.cols, r.vals, nil)
		case rowPartial:
			if len(r.cols) > 0 {
				partialShapes = addRow(partials, partialShapes, r.cols, r.vals, r.key)
			}
		}
	}
	if len(deleted) > 0 {
		queue(stmt{sql: t.bulkDeleteSQL(), args: columnsOf(deleted, len(t.pk))})
	}
	for _, s := range shapes {
		set := images[s]
		queue(stmt{sql: t.bulkUpsertSQL(set.cols), args: columnsOf(set.rows, len(set.cols))})
	}
	for _, s := range partialShapes {
		set := partials[s]
		queue(stmt{sql: t.bulkUpdateSQL(set.cols), args: columnsOf(set.rows, len(set.cols)+len(t.pk))})
	}
	var inserts []string
	inserted := map[string]*rowSet{}
	for _, c := range nt.inserts {
		inserts = addRow(inserted, inserts, c.Columns, c.New, nil)
	}
	for _, s := range inserts {
		set := inserted[s]
		queue(stmt{sql: t.bulkUpsertSQL(set.cols), args: columnsOf(set.rows, len(set.cols))})
	}
	nt.reset()
}

// rowSet is rows of one column list: values, then the key for partials.
type rowSet struct {
	cols []string
	rows [][]change.Value
}

func addRow(sets map[string]*rowSet, shapes []string, cols []string, vals, key []change.Value) []string {
	s := strings.Join(cols, "\x00")
	set := sets[s]
	if set == nil {
		set = &rowSet{cols: cols}
		sets[s] = set
		shapes = append(shapes, s)
	}
	row := vals
	if key != nil {
		row = slices.Concat(vals, key)
	}
	set.rows = append(set.rows, row)
	return shapes
}

// columnsOf turns rows into one text array per column, the parameters of
// a bulk statement; NULL is a nil element.
func columnsOf(rows [][]change.Value, width int) []any {
	out := make([]any, width)
	for i := range width {
		col := make([]*string, len(rows))
		for j, row := range rows {
			if !row[i].Null {
				col[j] = &row[i].Text
			}
		}
		out[i] = col
	}
	return out
}

// The aliases of the bulk statements: the rows (an unnest of the
// parameter arrays, columns v1, v2, ...) and the target table.
const (
	rowsAlias   = "schedsync_rows"
	targetAlias = "schedsync_target"
)

// unnestFrom is "unnest($first::text[], ...) AS schedsync_rows(v1, ...)".
func unnestFrom(n, first int) string {
	params := make([]string, n)
	names := make([]string, n)
	for i := range n {
		params[i] = fmt.Sprintf("$%d::text[]", first+i)
		names[i] = fmt.Sprintf("v%d", first+i)
	}
	return fmt.Sprintf("unnest(%s) AS %s(%s)", strings.Join(params, ", "), rowsAlias, strings.Join(names, ", "))
}

// rowValue is column col of the rows, from parameter n, cast to its type.
func (t *table) rowValue(n int, col string) string {
	return fmt.Sprintf("%s.v%d::%s", rowsAlias, n, t.types[col])
}

// keyJoin matches the target's primary key to the rows' columns from
// parameter first on.
func (t *table) keyJoin(first int) string {
	conds := make([]string, len(t.pk))
	for i, k := range t.pk {
		conds[i] = fmt.Sprintf("%s.%s = %s", targetAlias, change.QuoteIdent(k), t.rowValue(first+i, k))
	}
	return strings.Join(conds, " AND ")
}

// bulkUpsertSQL writes full row images from the parameter arrays, one per
// column of cols: INSERT ... SELECT ... ON CONFLICT (primary key) DO
// UPDATE, or a plain INSERT on a table without a primary key.
func (t *table) bulkUpsertSQL(cols []string) string {
	return t.statement("BI\x00"+strings.Join(cols, "\x00"), func() string {
		casts := make([]string, len(cols))
		for i, c := range cols {
			casts[i] = t.rowValue(i+1, c)
		}
		return fmt.Sprintf("INSERT INTO %s (%s)%s SELECT %s FROM %s%s", t.qname, quoteList(cols), t.overriding(),
			strings.Join(casts, ", "), unnestFrom(len(cols), 1), t.onConflict(cols))
	})
}

// bulkDeleteSQL deletes the rows whose primary keys are in the parameter
// arrays, one per key column in key order.
func (t *table) bulkDeleteSQL() string {
	return t.statement("BD", func() string {
		return fmt.Sprintf("DELETE FROM %s AS %s USING %s WHERE %s", t.qname, targetAlias, unnestFrom(len(t.pk), 1), t.keyJoin(1))
	})
}

// bulkUpdateSQL sets cols (non-key) on the rows at the primary keys given
// after them, where they stand; a key not on the slave changes nothing.
func (t *table) bulkUpdateSQL(cols []string) string {
	return t.statement("BU\x00"+strings.Join(cols, "\x00"), func() string {
		sets := make([]string, len(cols))
		for i, c := range cols {
			sets[i] = fmt.Sprintf("%s = %s", change.QuoteIdent(c), t.rowValue(i+1, c))
		}
		return fmt.Sprintf("UPDATE %s AS %s SET %s FROM %s WHERE %s", t.qname, targetAlias, strings.Join(sets, ", "),
			unnestFrom(len(cols)+len(t.pk), 1), t.keyJoin(len(cols)+1))
	})
}
