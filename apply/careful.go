package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/schedsync/schedsync/internal/change"
)

// careful applies the transactions of the group that failed, one change at
// a time under a savepoint. A change that collides with another row on a
// unique constraint removes that row and tries again: the row holds a later
// version that the rest of the stream rewrites (replay onto a snapshot
// taken after the position it resumes from), so the end state is the
// master's. Constraints are checked immediately so every conflict surfaces
// at its statement.
func (s *session) careful(ctx context.Context) error {
	after, upto := s.a.applied.Load(), s.failedAt
	r, err := s.a.log.NewReader(after)
	if err != nil {
		return fmt.Errorf("read the spool after position %d: %w", after, err)
	}
	defer r.Close()
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET CONSTRAINTS ALL IMMEDIATE"); err != nil {
		return err
	}
	p := &pipeline{send: tx}
	var pos uint64
	var src change.TxnSource
	// Start over from what is committed: the failed group had taken a
	// capture history and an end position of its own (a slave that started
	// empty takes its history from the first transaction again).
	s.epoch, s.queued = s.a.epoch.Load(), after
	start, txns, changes := time.Now(), 0, s.changes
	for pos < upto {
		if pos, src, err = r.Next(ctx); err != nil {
			return err
		}
		if err := s.admit(pos, src.Header()); err != nil {
			return err
		}
		if err := s.carefulTxn(ctx, tx, src); err != nil {
			return fmt.Errorf("apply transaction at position %d: %w", pos, err)
		}
		txns++
	}
	if err := s.commit(ctx, tx, p, pos, src.Header().CommitTime); err != nil {
		return err
	}
	s.a.opts.Metrics.Applied(txns, s.changes-changes, time.Since(start))
	return nil
}

func (s *session) carefulTxn(ctx context.Context, tx pgx.Tx, src change.TxnSource) error {
	var truncs []string
	for {
		c, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read the spool: %w", err)
		}
		s.changes++
		if c.Op == change.DDL {
			if len(truncs) > 0 {
				if _, err := tx.Exec(ctx, truncate(truncs).sql); err != nil {
					return err
				}
				truncs = nil
			}
			if err := s.runDDL(ctx, tx, c); err != nil {
				return err
			}
			continue
		}
		stmts, err := s.statements(ctx, c, &truncs)
		if err != nil {
			return err
		}
		if len(stmts) > 0 && len(truncs) > 0 {
			if _, err := tx.Exec(ctx, truncate(truncs).sql); err != nil {
				return err
			}
			truncs = nil
		}
		for _, st := range stmts {
			if err := s.execClearing(ctx, tx, c, st); err != nil {
				return err
			}
		}
	}
	if len(truncs) > 0 {
		_, err := tx.Exec(ctx, truncate(truncs).sql)
		return err
	}
	return nil
}

// execClearing runs one statement; on a unique violation it deletes the
// row holding the new row's values on that constraint and retries.
func (s *session) execClearing(ctx context.Context, tx pgx.Tx, c *change.Change, st stmt) error {
	for attempt := 0; ; attempt++ {
		if _, err := tx.Exec(ctx, "SAVEPOINT change"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, st.sql, st.args...)
		if err == nil {
			_, err = tx.Exec(ctx, "RELEASE SAVEPOINT change")
			return err
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" || attempt >= 8 {
			return err
		}
		if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT change"); rerr != nil {
			return rerr
		}
		if cerr := s.clearConflict(ctx, tx, c, pgErr.ConstraintName); cerr != nil {
			return fmt.Errorf("%w (clearing it: %v)", err, cerr)
		}
	}
}

// clearConflict deletes the rows whose values on the unique constraint are
// those of c's new row, other than c's own row.
func (s *session) clearConflict(ctx context.Context, tx pgx.Tx, c *change.Change, constraint string) error {
	t, err := s.tables.get(ctx, s.conn, c.Schema, c.Table)
	if err != nil {
		return err
	}
	cols := t.unique[constraint]
	if len(cols) == 0 {
		return fmt.Errorf("constraint %s is not a unique constraint of %s (a unique index without a constraint?)", constraint, t.qname)
	}
	// A column a partial update did not send has no value here: a unique
	// column left unchanged cannot be matched (an error below), and a
	// primary key column left unchanged drops out of the own-row exclusion,
	// which then spares more rows, never fewer.
	val := map[string]change.Value{}
	for i, col := range c.Columns {
		if !c.New[i].Unchanged {
			val[col] = c.New[i]
		}
	}
	var conds, own []string
	var args []any
	add := func(col string, v change.Value, into *[]string) {
		args = append(args, any(nil))
		if !v.Null {
			args[len(args)-1] = v.Text
		}
		*into = append(*into, fmt.Sprintf("%s = %s", change.QuoteIdent(col), t.cast(len(args), col)))
	}
	for _, col := range cols {
		v, ok := val[col]
		if !ok || v.Null {
			return fmt.Errorf("row has no value for %s.%s", t.qname, col)
		}
		add(col, v, &conds)
	}
	for _, col := range t.pk {
		if v, ok := val[col]; ok {
			add(col, v, &own)
		}
	}
	sql := fmt.Sprintf("DELETE FROM %s WHERE %s", t.qname, strings.Join(conds, " AND "))
	if len(own) > 0 {
		sql += fmt.Sprintf(" AND NOT (%s)", strings.Join(own, " AND "))
	}
	_, err = tx.Exec(ctx, sql, args...)
	return err
}
