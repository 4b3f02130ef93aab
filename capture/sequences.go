package capture

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
)

// sequenceSampler reads the last values of the sequences in the replicated
// schemas and turns the ones that moved into a transaction of Sequence
// changes. nextval is not transactional, so a value read after a
// transaction committed covers every value that transaction used: sampling
// in each poll that delivers transactions keeps the slave's sequences at or
// ahead of every row it receives.
type sequenceSampler struct {
	schemas []string
	last    map[string]string // schema.name → last value shipped
}

func newSequenceSampler(schemas []string) *sequenceSampler {
	return &sequenceSampler{schemas: schemas, last: map[string]string{}}
}

// querier is a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// sample returns the sequence changes since the last sample, or nil.
func (s *sequenceSampler) sample(ctx context.Context, q querier) ([]change.Change, error) {
	rows, err := q.Query(ctx, `SELECT schemaname, sequencename, last_value::text FROM pg_sequences
		WHERE schemaname = ANY ($1) AND schemaname <> 'schedsync' AND last_value IS NOT NULL ORDER BY 1, 2`, s.schemas)
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	var out []change.Change
	for rows.Next() {
		var schema, name, value string
		if err := rows.Scan(&schema, &name, &value); err != nil {
			return nil, fmt.Errorf("read sequences: %w", err)
		}
		key := schema + "." + name
		if s.last[key] == value {
			continue
		}
		out = append(out, change.Change{Op: change.Sequence, Schema: schema, Table: name,
			Columns: []string{"last_value"}, New: []change.Value{change.Text(value)}})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	return out, nil
}

// sampleAfterDDL is sample, with the number of the last schema change
// committed (schedsync.ddl_counter) read in the same snapshot.
func (s *sequenceSampler) sampleAfterDDL(ctx context.Context, q querier) ([]change.Change, int64, error) {
	rows, err := q.Query(ctx, `SELECT (SELECT n FROM schedsync.ddl_counter WHERE id = 1), schemaname, sequencename, last_value::text
		FROM (SELECT 1) one LEFT JOIN pg_sequences ON schemaname = ANY ($1) AND schemaname <> 'schedsync' AND last_value IS NOT NULL
		ORDER BY 2, 3`, s.schemas)
	if err != nil {
		return nil, 0, fmt.Errorf("read sequences: %w", err)
	}
	var out []change.Change
	var committed int64
	for rows.Next() {
		var schema, name, value *string
		if err := rows.Scan(&committed, &schema, &name, &value); err != nil {
			return nil, 0, fmt.Errorf("read sequences: %w", err)
		}
		if schema == nil || s.last[*schema+"."+*name] == *value {
			continue
		}
		out = append(out, change.Change{Op: change.Sequence, Schema: *schema, Table: *name,
			Columns: []string{"last_value"}, New: []change.Value{change.Text(*value)}})
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read sequences: %w", err)
	}
	return out, committed, nil
}

// shipped records that the sampled values are durable.
func (s *sequenceSampler) shipped(changes []change.Change) {
	for _, c := range changes {
		s.last[c.Schema+"."+c.Table] = c.New[0].Text
	}
}
