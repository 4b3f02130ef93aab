package change

import (
	"fmt"
	"slices"
	"strconv"
)

// DDLInfo is a schema change as the master's event trigger recorded it.
//
// Query is the whole text the client sent (current_query()), which may
// hold several statements, DML among them; Tag (the command tag, such as
// "ALTER TABLE") and Nth (1-based: the Nth command with that tag that the
// text ran) say which statement of it this change is. The slave runs that
// statement alone (package ddl finds it), with SearchPath, and as Role
// when it may.
type DDLInfo struct {
	Query      string
	Tag        string
	Nth        int
	SearchPath string
	Role       string
}

// The columns of a DDL change, in order.
var ddlColumns = []string{"query", "tag", "nth", "search_path", "role"}

// DDLChange is the change carrying d; schema and object name the (first)
// object it changed, for messages and for the caches apply refreshes.
func DDLChange(schema, object string, d DDLInfo) *Change {
	return &Change{Op: DDL, Schema: schema, Table: object, Columns: ddlColumns, New: []Value{
		Text(d.Query), Text(d.Tag), Text(strconv.Itoa(d.Nth)), Text(d.SearchPath), Text(d.Role),
	}}
}

// DDL reads the schema change a DDL change carries.
func (c *Change) DDL() (DDLInfo, error) {
	if c.Op != DDL {
		return DDLInfo{}, fmt.Errorf("%s change is not a schema change", c.Op)
	}
	if !slices.Equal(c.Columns, ddlColumns) || len(c.KeyColumns) != 0 {
		return DDLInfo{}, fmt.Errorf("DDL on %s: fields %v, want %v", c.Table, c.Columns, ddlColumns)
	}
	for i, v := range c.New {
		if v.Null || v.Unchanged {
			return DDLInfo{}, fmt.Errorf("DDL on %s: %s is %s", c.Table, ddlColumns[i], v)
		}
	}
	n, err := strconv.Atoi(c.New[2].Text)
	if err != nil || n < 1 {
		return DDLInfo{}, fmt.Errorf("DDL on %s: command number %q is not a positive number", c.Table, c.New[2].Text)
	}
	if c.New[0].Text == "" || c.New[1].Text == "" {
		return DDLInfo{}, fmt.Errorf("DDL on %s: empty query or command tag", c.Table)
	}
	return DDLInfo{Query: c.New[0].Text, Tag: c.New[1].Text, Nth: n, SearchPath: c.New[3].Text, Role: c.New[4].Text}, nil
}
