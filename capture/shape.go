package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
)

// shapeVersion is a table's shape from an audit id on: an audit row is a
// record literal of the table as it was when the row was written, and a
// schema change in between (a column added, dropped or renamed) changes
// how its fields are named. schedsync.relshape keeps every shape with the
// id of the DDL audit row that brought it (0 for the one install found).
type shapeVersion struct {
	from int64
	rel  *relation
}

// shapeJSON is schedsync.table_shape's output.
type shapeJSON struct {
	Schema string      `json:"schema"`
	Name   string      `json:"name"`
	Attrs  []shapeAttr `json:"attrs"`
}

// shapeAttr is one live column of a shape.
type shapeAttr struct {
	Name      string `json:"n"`
	Generated bool   `json:"g"`
	Key       bool   `json:"k"`
}

// relationOf builds a relation from a shape: recorded (relshape), or read
// from the catalog by loadRelation. A table without a primary key is
// identified by all its non-generated columns.
func relationOf(s shapeJSON) *relation {
	rel := &relation{schema: s.Schema, name: s.Name}
	var allIdx []int
	for _, a := range s.Attrs {
		if !a.Generated {
			rel.columns = append(rel.columns, a.Name)
			allIdx = append(allIdx, len(rel.attrs))
			if a.Key {
				rel.keyColumns = append(rel.keyColumns, a.Name)
				rel.keyIdx = append(rel.keyIdx, len(rel.attrs))
			}
		}
		rel.attrs = append(rel.attrs, attr{name: a.Name, generated: a.Generated})
	}
	if len(rel.keyIdx) == 0 {
		rel.keyColumns, rel.keyIdx, rel.fullRow = rel.columns, allIdx, true
	}
	return rel
}

// loadShapes reads the shapes of the tables not known yet: their recorded
// history, or for a table with none (installed before shapes were
// recorded) its shape in the catalog now.
func (r *TriggerReader) loadShapes(ctx context.Context, tx pgx.Tx, relids []uint32) error {
	var missing []uint32
	for _, id := range relids {
		if _, ok := r.shapes[id]; !ok && id != 0 && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if r.haveShapes {
		rows, err := tx.Query(ctx, `SELECT relid, from_id, shape FROM schedsync.relshape
			WHERE relid = ANY ($1) ORDER BY relid, from_id`, missing)
		if err != nil {
			return fmt.Errorf("read table shapes: %w", err)
		}
		for rows.Next() {
			var (
				relid uint32
				from  int64
				raw   []byte
				s     shapeJSON
			)
			if err := rows.Scan(&relid, &from, &raw); err != nil {
				rows.Close()
				return fmt.Errorf("read table shapes: %w", err)
			}
			if err := json.Unmarshal(raw, &s); err != nil {
				rows.Close()
				return fmt.Errorf("table shape of oid %d from audit id %d: %w", relid, from, err)
			}
			r.shapes[relid] = append(r.shapes[relid], shapeVersion{from: from, rel: relationOf(s)})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read table shapes: %w", err)
		}
	}
	for _, id := range missing {
		if len(r.shapes[id]) > 0 {
			continue
		}
		rel, err := loadRelation(ctx, tx, id)
		if err != nil {
			return err
		}
		r.shapes[id] = []shapeVersion{{rel: rel}}
	}
	return nil
}

// shapeAt is the table's shape for the audit row id: the last one that
// holds from at or before it (the first one for rows older than any).
func (r *TriggerReader) shapeAt(relid uint32, id int64) (*relation, error) {
	vs := r.shapes[relid]
	if len(vs) == 0 {
		return nil, fmt.Errorf("audit row %d of unknown table oid %d", id, relid)
	}
	rel := vs[0].rel
	for _, v := range vs[1:] {
		if v.from > id {
			break
		}
		rel = v.rel
	}
	return rel, nil
}

// ddlPayload is what the event trigger records of a schema change.
type ddlPayload struct {
	Query      string `json:"query"`
	Tag        string `json:"tag"`
	Nth        int    `json:"nth"`
	SearchPath string `json:"search_path"`
	Role       string `json:"role"`
	Schema     string `json:"schema"`
	Object     string `json:"object"`
	// Seq numbers the schema changes of logical mode (ddl_counter).
	Seq int64 `json:"seq"`
}

// ddlChange decodes a recorded schema change: an audit row's new_row, or a
// logical decoding message's content.
func ddlChange(payload []byte) (change.Change, error) {
	c, _, err := ddlChangeSeq(payload)
	return c, err
}

// ddlChangeSeq is ddlChange with the change's number (logical mode).
func ddlChangeSeq(payload []byte) (change.Change, int64, error) {
	var p ddlPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return change.Change{}, 0, fmt.Errorf("decode recorded schema change: %w", err)
	}
	if p.Object == "" {
		p.Object = p.Tag
	}
	c := change.DDLChange(p.Schema, p.Object, change.DDLInfo{Query: p.Query, Tag: p.Tag, Nth: p.Nth, SearchPath: p.SearchPath, Role: p.Role})
	if err := c.Validate(); err != nil {
		return change.Change{}, 0, fmt.Errorf("recorded schema change: %w", err)
	}
	return *c, p.Seq, nil
}

// ddlAuditChange decodes a DDL audit row.
func ddlAuditChange(newRow *string) (change.Change, error) {
	if newRow == nil {
		return change.Change{}, fmt.Errorf("DDL audit row without its record")
	}
	return ddlChange([]byte(*newRow))
}
