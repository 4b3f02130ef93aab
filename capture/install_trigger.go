package capture

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Trigger capture's objects on the replicated tables. The audit table and
// the trigger functions are sql.Capture, run by install's schema step.

// Trigger names. Uninstall drops exactly these and nothing else.
const (
	rowTrigger       = "schedsync_capture_row"
	statementTrigger = "schedsync_capture_statement"
)

// installTriggers reconciles the triggers with the tables that should have
// them.
func installTriggers(ctx context.Context, tx pgx.Tx, opts InstallOptions, rep *InstallReport) error {
	tables, err := listTables(ctx, tx, opts.Schemas)
	if err != nil {
		return err
	}
	var want []tableRef
	var noPK []string
	for _, t := range tables {
		if !matchTables(opts.Tables, t.schema, t.name) {
			continue
		}
		want = append(want, t)
		if !t.hasPK {
			noPK = append(noPK, t.String())
		}
	}
	if len(noPK) > 0 && !opts.AllowNoPK {
		return &NoPrimaryKeyError{Tables: noPK}
	}
	rep.NoPK = noPK
	have, err := listTriggered(ctx, tx)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, t := range want {
		wanted[t.String()] = true
	}
	// CREATE TRIGGER needs SHARE ROW EXCLUSIVE, DROP TRIGGER ACCESS
	// EXCLUSIVE: one mode for all, taken at once.
	var locked []string
	mode := "SHARE ROW EXCLUSIVE"
	for _, t := range want {
		if !t.hasTrigger {
			locked = append(locked, t.quoted())
		}
	}
	for _, t := range have {
		if !wanted[t.String()] {
			locked, mode = append(locked, t.quoted()), "ACCESS EXCLUSIVE"
		}
	}
	if err := lockTables(ctx, tx, locked, mode); err != nil {
		return err
	}
	for _, t := range want {
		rep.Tables = append(rep.Tables, t.String())
		if t.hasTrigger {
			continue
		}
		if err := createTriggers(ctx, tx, t); err != nil {
			return err
		}
		rep.Added = append(rep.Added, t.String())
	}
	for _, t := range have {
		if wanted[t.String()] {
			continue
		}
		if err := dropTriggers(ctx, tx, t); err != nil {
			return err
		}
		rep.Removed = append(rep.Removed, t.String())
	}
	return nil
}

// listTriggered lists the tables that carry the capture triggers.
func listTriggered(ctx context.Context, tx pgx.Tx) ([]tableRef, error) {
	rows, err := tx.Query(ctx, `
		SELECT DISTINCT n.nspname, c.relname
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname IN ($1, $2)
		ORDER BY 1, 2`, rowTrigger, statementTrigger)
	if err != nil {
		return nil, fmt.Errorf("list triggered tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableRef, error) {
		var t tableRef
		err := r.Scan(&t.schema, &t.name)
		return t, err
	})
}

func createTriggers(ctx context.Context, tx pgx.Tx, t tableRef) error {
	stmts := []string{
		fmt.Sprintf(`CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION schedsync.capture_row()`,
			rowTrigger, t.quoted()),
		fmt.Sprintf(`CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION schedsync.capture_statement()`,
			statementTrigger, t.quoted()),
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("create capture trigger on %s: %w", t, err)
		}
	}
	return nil
}

func dropTriggers(ctx context.Context, tx pgx.Tx, t tableRef) error {
	for _, name := range []string{rowTrigger, statementTrigger} {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, name, t.quoted())); err != nil {
			return fmt.Errorf("drop capture trigger on %s: %w", t, err)
		}
	}
	return nil
}
