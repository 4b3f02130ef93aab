package apply

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/ddl"
)

// execer is the group's open transaction: the session's connection inside
// the BEGIN it sent, or the careful path's pgx.Tx.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// runDDL runs a replicated schema change in the group's transaction, at
// its place: what was queued before it must have run. It finds the
// statement in the client's query text (package ddl), runs it with the
// master's search_path and, when this session may, as the role that owns
// the changed object (so that a scheduler running as that role on a
// promoted slave owns its new tables), then puts the session's settings
// back and forgets what it knew of the tables. A failure stops apply as a
// schema error (apply_error) naming the statement; it is never skipped.
func (s *session) runDDL(ctx context.Context, q execer, c *change.Change) error {
	d, err := c.DDL()
	if err != nil {
		return err
	}
	st, err := ddl.Find(d.Query, d.Tag, d.Nth)
	if err != nil {
		return fmt.Errorf("%w: schema change %s on %s: %v; the query was: %s", ErrSchema, d.Tag, c.Table, err, abbrevSQL(d.Query))
	}
	// CONCURRENTLY cannot run in a transaction block; on the slave, which
	// nothing else writes, the plain form locks nothing that matters.
	st = ddl.WithoutConcurrently(st)
	var asRole bool
	if d.Role != "" {
		err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
			AND pg_has_role(current_user, (SELECT oid FROM pg_roles WHERE rolname = $1), 'MEMBER')`, d.Role).Scan(&asRole)
		if err != nil {
			return fmt.Errorf("look up role %s for schema change %s: %w", d.Role, d.Tag, err)
		}
		if !asRole {
			s.a.logger.Warn("running a replicated schema change as the apply role: the master's role is missing here or not granted to it, so the objects it creates belong to the apply role",
				"role", d.Role, "statement", abbrevSQL(st))
		}
	}
	if asRole {
		if _, err := q.Exec(ctx, "SET LOCAL ROLE "+change.QuoteIdent(d.Role), pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("%w: cannot run schema change %s as role %s: %v", ErrSchema, d.Tag, d.Role, err)
		}
	}
	if _, err := q.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, true)`, d.SearchPath); err != nil {
		return fmt.Errorf("set search_path for schema change %s: %w", d.Tag, err)
	}
	if _, err := q.Exec(ctx, st, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("%w: schema change failed on the slave: %s: %v (fix the slave's schema so that it can run; apply retries it)", ErrSchema, abbrevSQL(st), err)
	}
	if asRole {
		if _, err := q.Exec(ctx, "RESET ROLE", pgx.QueryExecModeSimpleProtocol); err != nil {
			return err
		}
	}
	if _, err := q.Exec(ctx, change.SetSQL(true), pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("restore the session settings after schema change %s: %w", d.Tag, err)
	}
	// Columns, types and keys may have changed, and so may the plans of
	// prepared statements.
	s.tables, s.seqs = tables{}, map[string]bool{}
	if err := s.conn.DeallocateAll(ctx); err != nil {
		return fmt.Errorf("drop prepared statements after schema change %s: %w", d.Tag, err)
	}
	s.a.logger.Info("applied a schema change", "tag", d.Tag, "object", c.Table, "statement", abbrevSQL(st))
	return nil
}

// abbrevSQL shortens a statement for a message.
func abbrevSQL(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
