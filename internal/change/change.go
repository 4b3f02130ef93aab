// Package change is the data model that flows through the pipeline: a source
// transaction (Txn) made of row changes (Change), as captured on the master,
// spooled, shipped and applied on the slave.
//
// Column values travel in PostgreSQL's text representation (the type's output
// function, produced with DateStyle=ISO, IntervalStyle=postgres,
// extra_float_digits=3, bytea_output=hex), which the type's input function on
// the slave turns back into exactly the same value for every type: bytea,
// arrays, jsonb, enums, numeric NaN, float ±Infinity and timestamp infinity
// included. NULL is a flag, distinct from the empty string.
//
// This package owns the binary encoding of a Change. It must never panic or
// allocate without bound on corrupt or hostile bytes: it decodes data read from
// disk and from the network.
package change

import (
	"fmt"
	"strings"
)

// Op is the kind of a row change.
type Op byte

const (
	Insert   Op = 'I'
	Update   Op = 'U'
	Delete   Op = 'D'
	Truncate Op = 'T'
	// Sequence carries a sequence's last value: Schema.Table names the
	// sequence and New holds one value. Applied with setval, never backwards.
	Sequence Op = 'S'
	// DDL is a schema change, at its place among the row changes: see
	// DDLChange for its fields.
	DDL Op = 'L'
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "INSERT"
	case Update:
		return "UPDATE"
	case Delete:
		return "DELETE"
	case Truncate:
		return "TRUNCATE"
	case Sequence:
		return "SEQUENCE"
	case DDL:
		return "DDL"
	}
	return fmt.Sprintf("Op(%d)", byte(o))
}

// Valid reports whether o is one of the known ops.
func (o Op) Valid() bool {
	switch o {
	case Insert, Update, Delete, Truncate, Sequence, DDL:
		return true
	}
	return false
}

// Value is one column value in PostgreSQL text form.
type Value struct {
	Null bool
	Text string
	// Unchanged: the column's value did not change and was not sent (an
	// unchanged TOASTed value in logical capture). Only in the New image of
	// an Update, with neither Null nor Text set; apply keeps the slave's
	// value.
	Unchanged bool
}

// Text returns a non-NULL value.
func Text(s string) Value { return Value{Text: s} }

// Null is the SQL NULL.
var Null = Value{Null: true}

// UnchangedValue stands for a column an update left alone and did not send.
var UnchangedValue = Value{Unchanged: true}

func (v Value) String() string {
	switch {
	case v.Unchanged:
		return "UNCHANGED"
	case v.Null:
		return "NULL"
	}
	return fmt.Sprintf("%q", v.Text)
}

// Change is one row change of a source transaction.
//
//   - Insert: Columns/New hold the full new row.
//   - Update: Columns/New hold the new row; KeyColumns/OldKey identify the
//     row before the update (they differ from the new key on a key update).
//     Columns names every column, but a New value may be Unchanged (not
//     sent): such an update is Partial and only sets the values it has.
//   - Delete: KeyColumns/OldKey identify the deleted row.
//   - Truncate: only Schema and Table.
//   - Sequence: Schema/Table name the sequence, New[0] its last value.
//
// KeyColumns is the primary key, or every column of a table replicated by
// full-row identity (no primary key, capture.allow_no_pk).
type Change struct {
	Op         Op
	Schema     string
	Table      string
	Columns    []string
	New        []Value
	KeyColumns []string
	OldKey     []Value
}

// QualifiedName is schema.table, each part quoted as an SQL identifier.
func (c *Change) QualifiedName() string {
	return QuoteIdent(c.Schema) + "." + QuoteIdent(c.Table)
}

// Validate checks the shape invariants of a change (lengths that must match,
// fields an op requires). Decoded changes are validated before use.
func (c *Change) Validate() error {
	if !c.Op.Valid() {
		return fmt.Errorf("unknown op %d", byte(c.Op))
	}
	if c.Table == "" {
		return fmt.Errorf("%s change without a table name", c.Op)
	}
	if len(c.Columns) != len(c.New) {
		return fmt.Errorf("%s on %s: %d column names for %d values", c.Op, c.Table, len(c.Columns), len(c.New))
	}
	if len(c.KeyColumns) != len(c.OldKey) {
		return fmt.Errorf("%s on %s: %d key columns for %d key values", c.Op, c.Table, len(c.KeyColumns), len(c.OldKey))
	}
	switch c.Op {
	case Insert:
		if len(c.New) == 0 {
			return fmt.Errorf("INSERT on %s without a row image", c.Table)
		}
	case Update:
		if len(c.New) == 0 || len(c.OldKey) == 0 {
			return fmt.Errorf("UPDATE on %s needs a new row image and an old key", c.Table)
		}
	case Delete:
		if len(c.OldKey) == 0 {
			return fmt.Errorf("DELETE on %s without an old key", c.Table)
		}
	case Sequence:
		if len(c.New) != 1 || c.New[0].Null {
			return fmt.Errorf("SEQUENCE %s needs exactly one non-null value", c.Table)
		}
	case DDL:
		if _, err := c.DDL(); err != nil {
			return err
		}
	}
	return c.validateUnchanged()
}

// validateUnchanged checks that Unchanged values stand only where the
// slave holds the value to keep, a column of the row an update rewrites,
// and carry no value of their own. Lengths are checked already.
func (c *Change) validateUnchanged() error {
	for i, v := range c.OldKey {
		if v.Unchanged {
			return fmt.Errorf("%s on %s: old key column %q is marked unchanged; a key must carry its value", c.Op, c.Table, c.KeyColumns[i])
		}
	}
	for i, v := range c.New {
		switch {
		case !v.Unchanged:
		case c.Op != Update:
			return fmt.Errorf("%s on %s: column %q is marked unchanged, which only an UPDATE's new row may be", c.Op, c.Table, c.Columns[i])
		case v.Null || v.Text != "":
			return fmt.Errorf("%s on %s: column %q is marked unchanged but also carries a value", c.Op, c.Table, c.Columns[i])
		}
	}
	return nil
}

// Partial reports whether some New value is Unchanged: the change does not
// hold the whole new row, so it cannot be written as a full image.
func (c *Change) Partial() bool {
	for _, v := range c.New {
		if v.Unchanged {
			return true
		}
	}
	return false
}

// Size is an estimate of the change's raw bytes (names and values), used for
// batching and accounting.
func (c *Change) Size() int {
	n := 1 + len(c.Schema) + len(c.Table)
	for _, s := range c.Columns {
		n += len(s)
	}
	for _, s := range c.KeyColumns {
		n += len(s)
	}
	for _, v := range c.New {
		n += 1 + len(v.Text)
	}
	for _, v := range c.OldKey {
		n += 1 + len(v.Text)
	}
	return n
}

// QuoteIdent quotes s as an SQL identifier.
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
