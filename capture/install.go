package capture

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
	sqlfiles "github.com/schedsync/schedsync/sql"
)

// Trigger names. Uninstall drops exactly these and nothing else.
const (
	rowTrigger       = "schedsync_capture_row"
	statementTrigger = "schedsync_capture_statement"
)

// installLockKey serialises concurrent installs (pg_advisory_xact_lock).
const installLockKey = 0x5c4ed5c1

// InstallOptions says what to install.
type InstallOptions struct {
	// Schemas whose tables are replicated (repository.schemas).
	Schemas []string
	// Tables optionally limits them: glob patterns matched against the table
	// name, or against schema.table when the pattern holds a dot.
	Tables []string
	// AllowNoPK replicates tables without a primary key by full-row identity
	// instead of refusing them.
	AllowNoPK bool
	// Role is "master" (capture objects and triggers) or "slave" (only the
	// state tables).
	Role string
}

// InstallReport says what install found and did.
type InstallReport struct {
	// Tables are the captured tables, schema.table.
	Tables []string
	// Added are the tables whose triggers this run created.
	Added []string
	// Removed are the tables whose triggers this run dropped because they no
	// longer match repository.schemas / repository.tables.
	Removed []string
	// NoPK are captured tables without a primary key (full-row identity).
	NoPK []string
	// SchemaCreated is true when this run created or upgraded schema schedsync.
	SchemaCreated bool
}

// NoPrimaryKeyError refuses tables without a primary key.
type NoPrimaryKeyError struct{ Tables []string }

func (e *NoPrimaryKeyError) Error() string {
	return fmt.Sprintf("tables without a primary key cannot be replicated safely: %s; add a primary key, or set capture.allow_no_pk = true to identify their rows by the full old row",
		strings.Join(e.Tables, ", "))
}

// Install creates the schedsync objects in the repository and, on a master,
// puts the capture triggers on every matching table. It is idempotent: a
// second run changes nothing, and tables created since the last run get their
// triggers.
func Install(ctx context.Context, conn *pgx.Conn, opts InstallOptions) (InstallReport, error) {
	var rep InstallReport
	if opts.Role != "master" && opts.Role != "slave" {
		return rep, fmt.Errorf("install: role %q is not master or slave", opts.Role)
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", installLockKey); err != nil {
			return fmt.Errorf("take install lock: %w", err)
		}
		created, err := installSchema(ctx, tx, opts.Role)
		if err != nil {
			return err
		}
		rep.SchemaCreated = created
		if opts.Role != "master" {
			return nil
		}
		return installTriggers(ctx, tx, opts, &rep)
	})
	return rep, err
}

// installSchema runs the SQL scripts unless this schema version (and, on a
// master, the capture objects) is already there.
func installSchema(ctx context.Context, tx pgx.Tx, role string) (bool, error) {
	want := sqlfiles.SchemaVersion + "/" + role
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schedsync.meta') IS NOT NULL`).Scan(&exists); err != nil {
		return false, fmt.Errorf("look for schedsync.meta: %w", err)
	}
	var have *string
	if exists {
		err := tx.QueryRow(ctx, `SELECT max(value) FROM schedsync.meta WHERE key = 'version'`).Scan(&have)
		if err != nil {
			return false, fmt.Errorf("read schedsync.meta: %w", err)
		}
	}
	// A master's objects are a superset of a slave's.
	if have != nil && (*have == want || *have == sqlfiles.SchemaVersion+"/master") {
		return false, nil
	}
	return true, runScripts(ctx, tx, role, want)
}

func runScripts(ctx context.Context, tx pgx.Tx, role, version string) error {
	if _, err := tx.Exec(ctx, sqlfiles.State); err != nil {
		return fmt.Errorf("create schedsync state tables: %w", err)
	}
	if role == "master" {
		if _, err := tx.Exec(ctx, sqlfiles.Capture); err != nil {
			return fmt.Errorf("create capture objects: %w", err)
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO schedsync.meta (key, value) VALUES ('version', $1)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, version)
	if err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	return nil
}

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
	wanted := map[string]bool{}
	for _, t := range want {
		wanted[t.String()] = true
		rep.Tables = append(rep.Tables, t.String())
		if t.hasTrigger {
			continue
		}
		if err := createTriggers(ctx, tx, t); err != nil {
			return err
		}
		rep.Added = append(rep.Added, t.String())
	}
	have, err := listTriggered(ctx, tx)
	if err != nil {
		return err
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

type tableRef struct {
	schema, name string
	hasPK        bool
	hasTrigger   bool
}

func (t tableRef) String() string { return t.schema + "." + t.name }

func (t tableRef) quoted() string {
	return change.QuoteIdent(t.schema) + "." + change.QuoteIdent(t.name)
}

// listTables lists the ordinary tables (partitions included, partitioned
// parents not: their rows live in the partitions) of the given schemas.
func listTables(ctx context.Context, tx pgx.Tx, schemas []string) ([]tableRef, error) {
	rows, err := tx.Query(ctx, `
		SELECT n.nspname, c.relname,
		       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
		       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = $2)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname = ANY($1) AND n.nspname <> 'schedsync'
		ORDER BY 1, 2`, schemas, rowTrigger)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableRef, error) {
		var t tableRef
		err := r.Scan(&t.schema, &t.name, &t.hasPK, &t.hasTrigger)
		return t, err
	})
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

// Uninstall drops the capture triggers from every table and schema
// schedsync. It touches nothing else, and is a no-op when nothing is
// installed.
func Uninstall(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", installLockKey); err != nil {
			return fmt.Errorf("take install lock: %w", err)
		}
		have, err := listTriggered(ctx, tx)
		if err != nil {
			return err
		}
		for _, t := range have {
			if err := dropTriggers(ctx, tx, t); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS schedsync CASCADE`); err != nil {
			return fmt.Errorf("drop schema schedsync: %w", err)
		}
		return nil
	})
}

// matchTables reports whether a table passes the repository.tables filter.
func matchTables(patterns []string, schema, name string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		subject := name
		if strings.Contains(p, ".") {
			subject = schema + "." + name
		}
		if ok, _ := path.Match(p, subject); ok {
			return true
		}
	}
	return false
}
