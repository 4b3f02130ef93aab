package capture

import (
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/schedsync/schedsync/internal/change"
)

// logicalRelation is a table as pgoutput's Relation message describes it:
// the columns its tuples carry (generated columns are not sent), in order,
// and which of them identify a row.
type logicalRelation struct {
	schema, name string
	columns      []string
	keyColumns   []string
	keyIdx       []int
	// fullRow: REPLICA IDENTITY FULL, the old image is the whole row and
	// identifies it (a table without a primary key).
	fullRow bool
}

func (r *logicalRelation) String() string { return r.schema + "." + r.name }

func newLogicalRelation(m *pglogrepl.RelationMessage) *logicalRelation {
	rel := &logicalRelation{schema: m.Namespace, name: m.RelationName, fullRow: m.ReplicaIdentity == 'f'}
	for i, c := range m.Columns {
		rel.columns = append(rel.columns, c.Name)
		if c.Flags&1 != 0 {
			rel.keyColumns = append(rel.keyColumns, c.Name)
			rel.keyIdx = append(rel.keyIdx, i)
		}
	}
	if rel.fullRow {
		rel.keyColumns = rel.columns
		rel.keyIdx = make([]int, len(rel.columns))
		for i := range rel.keyIdx {
			rel.keyIdx[i] = i
		}
	}
	return rel
}

// values turns a tuple into column values: 'n' is NULL, 't' text, and 'u'
// an unchanged TOASTed value that was not sent.
func (r *logicalRelation) values(t *pglogrepl.TupleData, what string) ([]change.Value, error) {
	if t == nil {
		return nil, fmt.Errorf("%s of %s: no tuple", what, r)
	}
	if len(t.Columns) != len(r.columns) {
		return nil, fmt.Errorf("%s of %s has %d columns, the relation %d", what, r, len(t.Columns), len(r.columns))
	}
	vals := make([]change.Value, len(t.Columns))
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			vals[i] = change.Null
		case pglogrepl.TupleDataTypeText:
			vals[i] = change.Text(string(c.Data))
		case pglogrepl.TupleDataTypeToast:
			vals[i] = change.UnchangedValue
		default:
			return nil, fmt.Errorf("%s of %s: column %s has tuple data type %q, not text", what, r, r.columns[i], c.DataType)
		}
	}
	return vals, nil
}

// key picks the identity out of a full tuple's values.
func (r *logicalRelation) key(vals []change.Value, what string) ([]string, []change.Value, error) {
	if len(r.keyIdx) == 0 {
		return nil, nil, fmt.Errorf("%s of %s: the table has no replica identity (no primary key); run schedsync install, which refuses such tables or sets REPLICA IDENTITY FULL (capture.allow_no_pk)", what, r)
	}
	key := make([]change.Value, len(r.keyIdx))
	for i, idx := range r.keyIdx {
		key[i] = vals[idx]
		if key[i].Unchanged {
			return nil, nil, fmt.Errorf("%s of %s: key column %s was not sent (an unchanged TOASTed key value); such keys cannot be replicated", what, r, r.columns[idx])
		}
	}
	return r.keyColumns, key, nil
}

// insertChange decodes an Insert message.
func (r *logicalRelation) insertChange(m *pglogrepl.InsertMessage) (change.Change, error) {
	c := change.Change{Op: change.Insert, Schema: r.schema, Table: r.name, Columns: r.columns}
	var err error
	if c.New, err = r.values(m.Tuple, "insert"); err != nil {
		return c, err
	}
	for i, v := range c.New {
		if v.Unchanged {
			return c, fmt.Errorf("insert of %s: column %s was not sent", r, r.columns[i])
		}
	}
	return c, nil
}

// updateChange decodes an Update message. pgoutput sends the old key only
// when it changed ('K'), or the whole old row under REPLICA IDENTITY FULL
// ('O'); otherwise the key is the new row's.
func (r *logicalRelation) updateChange(m *pglogrepl.UpdateMessage) (change.Change, error) {
	c := change.Change{Op: change.Update, Schema: r.schema, Table: r.name, Columns: r.columns}
	var err error
	if c.New, err = r.values(m.NewTuple, "update"); err != nil {
		return c, err
	}
	old := c.New
	if m.OldTuple != nil {
		if old, err = r.values(m.OldTuple, "old row of update"); err != nil {
			return c, err
		}
	}
	c.KeyColumns, c.OldKey, err = r.key(old, "update")
	return c, err
}

// deleteChange decodes a Delete message.
func (r *logicalRelation) deleteChange(m *pglogrepl.DeleteMessage) (change.Change, error) {
	c := change.Change{Op: change.Delete, Schema: r.schema, Table: r.name}
	old, err := r.values(m.OldTuple, "delete")
	if err != nil {
		return c, err
	}
	c.KeyColumns, c.OldKey, err = r.key(old, "delete")
	return c, err
}
