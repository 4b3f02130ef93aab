package apply

import (
	"fmt"
	"slices"
	"strings"

	"github.com/schedsync/schedsync/internal/change"
)

// partialUpdate replays an update whose new row lacks values capture did
// not send (Unchanged: TOASTed values the update left alone, in logical
// capture). Without them the row cannot be written as a full image, so it
// is updated where it stands, setting only the sent columns, and the slave
// keeps its own value for the others. An update whose row is not on the
// slave does nothing: that only happens when replaying onto a snapshot that
// holds a later state, and the row's later full image or delete comes later
// in the stream.
func (t *table) partialUpdate(c *change.Change) []stmt {
	if len(t.pk) == 0 || !t.isKey(c.KeyColumns) {
		return t.updateOneRow(c)
	}
	if keyChanged(c) {
		return t.updateMovingKey(c)
	}
	return t.updateInPlace(c)
}

// updateInPlace updates the sent non-key columns of the row at its
// unchanged primary key. With none sent there is nothing to write.
func (t *table) updateInPlace(c *change.Change) []stmt {
	set, vals := t.sent(c, false)
	if len(set) == 0 {
		return nil
	}
	return []stmt{{sql: t.updateSQL(set, c.KeyColumns, true), args: args(slices.Concat(vals, c.OldKey))}}
}

// updateMovingKey replays a partial update that changed the primary key, in
// two statements:
//
//  1. if a row already sits at the new key, set its sent non-key columns
//     and delete the row at the old key;
//  2. update the row at the old key, key included, which moves it to the
//     new key with the values that were not sent.
//
// In normal streaming the new key is free (the master just moved the row
// into it), so 1 does nothing and 2 moves the row. When replaying onto a
// restored snapshot that already holds later versions, the row may already
// live at the new key: then 1 updates it there and removes the stale row at
// the old key (a later re-insert of the old key comes as a full INSERT
// later in the stream), and 2 finds nothing. The row at the old key must
// never be moved over an existing row at the new key: that would give the
// new-key row the old row's value for every column that was not sent.
//
// A GENERATED ALWAYS identity key cannot be assigned by UPDATE; PostgreSQL
// refuses statement 2 then, and apply stops with its error.
func (t *table) updateMovingKey(c *change.Change) []stmt {
	set, setVals := t.sent(c, false)
	all, allVals := t.sent(c, true)
	return []stmt{
		{sql: t.settleSQL(set, c.KeyColumns), args: args(slices.Concat(setVals, newKey(c), c.OldKey))},
		{sql: t.updateSQL(all, c.KeyColumns, true), args: args(slices.Concat(allVals, c.OldKey))},
	}
}

// updateOneRow updates the sent columns of one row matching the identity
// when it is not the slave's primary key (a table replicated by full-row
// identity), as delete removes one such row.
func (t *table) updateOneRow(c *change.Change) []stmt {
	set, vals := t.sent(c, true)
	if len(set) == 0 {
		return nil
	}
	return []stmt{{sql: t.updateSQL(set, c.KeyColumns, false), args: args(slices.Concat(vals, c.OldKey))}}
}

// sent returns the columns of c's new row that carry a value, and their
// values; primary key columns only if withKey.
func (t *table) sent(c *change.Change, withKey bool) ([]string, []change.Value) {
	var cols []string
	var vals []change.Value
	for i, col := range c.Columns {
		if c.New[i].Unchanged || (!withKey && slices.Contains(t.pk, col)) {
			continue
		}
		cols = append(cols, col)
		vals = append(vals, c.New[i])
	}
	return cols, vals
}

// newKey is the row's key after the update c, in KeyColumns order: each key
// column's new value, or its old one where the update did not send it.
func newKey(c *change.Change) []change.Value {
	key := slices.Clone(c.OldKey)
	for i, k := range c.KeyColumns {
		if j := slices.Index(c.Columns, k); j >= 0 && !c.New[j].Unchanged {
			key[i] = c.New[j]
		}
	}
	return key
}

// updateSQL is "UPDATE t SET set WHERE where", parameters being the set
// values then the where values. byKey: where is the primary key; otherwise
// an identity of which one matching row is updated.
func (t *table) updateSQL(set, where []string, byKey bool) string {
	kind := "UR"
	if byKey {
		kind = "UK"
	}
	return t.statement(shape(kind, set, where), func() string {
		match := t.oneRowMatch(where, len(set)+1)
		if byKey {
			match = t.keyMatch(where, len(set)+1)
		}
		return fmt.Sprintf("UPDATE %s SET %s WHERE %s", t.qname, t.assignments(set, 1), match)
	})
}

// settleSQL is statement 1 of updateMovingKey: parameters are the set
// values, the new key, then the old key. With no non-key column to set it
// only looks for the row at the new key: assigning a key column to itself
// would write a row version for nothing, and PostgreSQL refuses any
// assignment to a GENERATED ALWAYS identity column.
func (t *table) settleSQL(set, key []string) string {
	return t.statement(shape("M", set, key), func() string {
		newAt := t.keyMatch(key, len(set)+1)
		atNew := fmt.Sprintf("SELECT 1 FROM %s WHERE %s", t.qname, newAt)
		if len(set) > 0 {
			atNew = fmt.Sprintf("UPDATE %s SET %s WHERE %s RETURNING 1", t.qname, t.assignments(set, 1), newAt)
		}
		return fmt.Sprintf("WITH moved AS (%s) DELETE FROM %s WHERE %s AND EXISTS (SELECT 1 FROM moved)",
			atNew, t.qname, t.keyMatch(key, len(set)+len(key)+1))
	})
}

// assignments is "col = $n::text::type, ..." for cols from parameter first.
func (t *table) assignments(cols []string, first int) string {
	return strings.Join(t.equalities(cols, first), ", ")
}

// equalities are "col = $n::text::type" for cols from parameter first: a
// match on a key, or assignments.
func (t *table) equalities(cols []string, first int) []string {
	eqs := make([]string, len(cols))
	for i, c := range cols {
		eqs[i] = fmt.Sprintf("%s = %s", change.QuoteIdent(c), t.cast(first+i, c))
	}
	return eqs
}

// shape is the t.stmts key of a statement of the given kind over two column
// lists. Names cannot contain NUL, and the count of the first list tells
// where it ends.
func shape(kind string, a, b []string) string {
	return fmt.Sprintf("%s%d\x00%s\x00%s", kind, len(a), strings.Join(a, "\x00"), strings.Join(b, "\x00"))
}
