package apply

import (
	"fmt"
	"slices"
	"strings"

	"github.com/schedsync/schedsync/internal/change"
)

// stmt is one SQL statement and its arguments: text values cast to the
// column types by the SQL, so every type goes through its input function.
type stmt struct {
	sql  string
	args []any
}

func args(vals []change.Value) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		if !v.Null {
			out[i] = v.Text
		}
	}
	return out
}

// statements turns one row change into the statements that replay it.
func (t *table) statements(c *change.Change) ([]stmt, error) {
	if err := t.check(c); err != nil {
		return nil, err
	}
	switch c.Op {
	case change.Insert:
		return []stmt{t.upsert(c.Columns, c.New)}, nil
	case change.Update:
		if c.Partial() {
			return t.partialUpdate(c), nil
		}
		if len(t.pk) > 0 && !keyChanged(c) {
			return []stmt{t.upsert(c.Columns, c.New)}, nil
		}
		return []stmt{t.delete(c.KeyColumns, c.OldKey), t.upsert(c.Columns, c.New)}, nil
	case change.Delete:
		return []stmt{t.delete(c.KeyColumns, c.OldKey)}, nil
	}
	return nil, fmt.Errorf("apply: %s is not a row change", c.Op)
}

// keyChanged reports whether an update moved the row to another key. A key
// column whose new value is Unchanged (not sent) kept its old value.
func keyChanged(c *change.Change) bool {
	return !slices.Equal(newKey(c), c.OldKey)
}

// upsert writes a full row image: INSERT ... ON CONFLICT (primary key) DO
// UPDATE, or a plain INSERT on a table without a primary key.
func (t *table) upsert(cols []string, vals []change.Value) stmt {
	sql := t.statement("I\x00"+strings.Join(cols, "\x00"), func() string {
		casts := make([]string, len(cols))
		for i, c := range cols {
			casts[i] = t.cast(i+1, c)
		}
		return fmt.Sprintf("INSERT INTO %s (%s)%s VALUES (%s)%s", t.qname, quoteList(cols), t.overriding(),
			strings.Join(casts, ", "), t.onConflict(cols))
	})
	return stmt{sql: sql, args: args(vals)}
}

// overriding lets an INSERT write a GENERATED ALWAYS identity column.
func (t *table) overriding() string {
	if t.ident {
		return " OVERRIDING SYSTEM VALUE"
	}
	return ""
}

// onConflict makes an INSERT of cols an upsert on the primary key: the
// row already there takes the new values. Nothing for a table without one.
func (t *table) onConflict(cols []string) string {
	if len(t.pk) == 0 {
		return ""
	}
	var sets []string
	for _, c := range cols {
		if !slices.Contains(t.pk, c) {
			q := change.QuoteIdent(c)
			sets = append(sets, q+" = EXCLUDED."+q)
		}
	}
	if len(sets) == 0 {
		return fmt.Sprintf(" ON CONFLICT (%s) DO NOTHING", quoteList(t.pk))
	}
	return fmt.Sprintf(" ON CONFLICT (%s) DO UPDATE SET %s", quoteList(t.pk), strings.Join(sets, ", "))
}

// delete removes the row with the given identity if it is there. By primary
// key it is an equality match; by any other identity (full row, no primary
// key) it compares the columns' text, which the pinned output settings make
// exact for every type (json and point have no equality operator), and
// removes one matching row only, as the master did.
func (t *table) delete(cols []string, vals []change.Value) stmt {
	byPK := len(t.pk) > 0 && t.isKey(cols)
	sql := t.statement(fmt.Sprintf("D%v\x00%s", byPK, strings.Join(cols, "\x00")), func() string {
		if byPK {
			return fmt.Sprintf("DELETE FROM %s WHERE %s", t.qname, t.keyMatch(cols, 1))
		}
		return fmt.Sprintf("DELETE FROM %s WHERE %s", t.qname, t.oneRowMatch(cols, 1))
	})
	return stmt{sql: sql, args: args(vals)}
}

// keyMatch is the condition that cols equal parameters first, first+1, ...
// cast to the columns' types: an equality match on a key.
func (t *table) keyMatch(cols []string, first int) string {
	return strings.Join(t.equalities(cols, first), " AND ")
}

// oneRowMatch is the condition that picks one row whose cols have the text
// of parameters first, first+1, ...: an identity that is not a key (a full
// row) may match several identical rows, of which the master changed one.
// Text comparison is exact under the pinned output settings, and works for
// types without an equality operator (json, point).
func (t *table) oneRowMatch(cols []string, first int) string {
	conds := make([]string, len(cols))
	for i, c := range cols {
		conds[i] = fmt.Sprintf("%s::text IS NOT DISTINCT FROM $%d::text", change.QuoteIdent(c), first+i)
	}
	return fmt.Sprintf("ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", t.qname, strings.Join(conds, " AND "))
}

// truncate truncates a set of tables in one statement, as the master's
// TRUNCATE did (tables linked by foreign keys must go together). ONLY
// stands before each name: it binds to one table, and inheritance children
// are replicated (and truncated) on their own.
func truncate(qnames []string) stmt {
	return stmt{sql: "TRUNCATE ONLY " + strings.Join(qnames, ", ONLY ")}
}

// setval moves a sequence forward to the master's value, never backwards.
func setval(qname, value string) stmt {
	return stmt{
		sql:  fmt.Sprintf("SELECT setval('%s', greatest($1::text::bigint, last_value), true) FROM %s", strings.ReplaceAll(qname, "'", "''"), qname),
		args: []any{value},
	}
}
