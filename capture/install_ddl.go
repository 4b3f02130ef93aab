package capture

import (
	"context"
	"crypto/sha256"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	sqlfiles "github.com/schedsync/schedsync/sql"
)

// Event trigger names. Uninstall drops exactly these.
const (
	ddlEndTrigger  = "schedsync_ddl_end"
	sqlDropTrigger = "schedsync_sql_drop"
)

// InDDLSetting, set to on in a transaction, makes the event triggers
// ignore its DDL: install's and uninstall's own triggers and publication
// changes are not schema changes of the scheduler.
const InDDLSetting = "schedsync.in_ddl"

// installDDL sets up schema change capture on a master (sql.DDL): the
// configuration the event triggers read, the first shape of every
// captured table (trigger mode), and the event triggers, which need a
// superuser; without one, or with ddl.replicate off, there are none and
// rep.DDL says why.
func installDDL(ctx context.Context, tx pgx.Tx, opts InstallOptions, rep *InstallReport) error {
	// The script runs when it changed since the last install, so that a
	// second install changes nothing.
	version := fmt.Sprintf("%x", sha256.Sum256([]byte(sqlfiles.DDL)))
	have, err := getMeta(ctx, tx, "ddl_version")
	if err != nil {
		return err
	}
	if have != version {
		if _, err := tx.Exec(ctx, sqlfiles.DDL); err != nil {
			return fmt.Errorf("create schema change capture: %w", err)
		}
		if err := setMeta(ctx, tx, "ddl_version", version); err != nil {
			return err
		}
	}
	names, qualified := globRegexps(opts.Tables)
	if _, err := tx.Exec(ctx, `INSERT INTO schedsync.ddl_config AS c (id, mode, schemas, names, qualified, allow_no_pk)
		VALUES (1, $1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET mode = $1, schemas = $2, names = $3, qualified = $4, allow_no_pk = $5
		WHERE (c.mode, c.schemas, c.names, c.qualified, c.allow_no_pk) IS DISTINCT FROM ($1, $2, $3, $4, $5)`,
		string(opts.Mode), opts.Schemas, names, qualified, opts.AllowNoPK); err != nil {
		return fmt.Errorf("write schedsync.ddl_config: %w", err)
	}
	// The first shape of each captured table holds from the start;
	// tables that have one keep their history.
	if _, err := tx.Exec(ctx, `INSERT INTO schedsync.relshape (relid, from_id, shape)
		SELECT c.oid, 0, schedsync.table_shape(c.oid) FROM pg_class c
		WHERE `+ReplicatedCondition+` AND NOT EXISTS (SELECT 1 FROM schedsync.relshape s WHERE s.relid = c.oid)`); err != nil {
		return fmt.Errorf("record table shapes: %w", err)
	}
	if !opts.DDL {
		rep.DDL = "off (ddl.replicate = false): schema changes are not replicated"
		return dropEventTriggers(ctx, tx)
	}
	var super bool
	if err := tx.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return fmt.Errorf("read the install role: %w", err)
	}
	if !super {
		rep.DDL = "off: creating event triggers needs a superuser, and this role is not one; schema changes are not replicated (run schedsync install once as a superuser to turn it on, or set ddl.replicate = false)"
		return nil
	}
	for _, et := range []struct{ name, event, fn string }{
		{sqlDropTrigger, "sql_drop", "schedsync.on_sql_drop()"},
		{ddlEndTrigger, "ddl_command_end", "schedsync.on_ddl_end()"},
	} {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1)`, et.name).Scan(&exists); err != nil {
			return fmt.Errorf("look for event trigger %s: %w", et.name, err)
		}
		if exists {
			continue
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE EVENT TRIGGER %s ON %s EXECUTE FUNCTION %s`, et.name, et.event, et.fn)); err != nil {
			return fmt.Errorf("create event trigger %s: %w", et.name, err)
		}
	}
	rep.DDL = "on: schema changes of the replicated schemas are replicated"
	return nil
}

// dropEventTriggers drops the event triggers, if any.
func dropEventTriggers(ctx context.Context, tx pgx.Tx) error {
	for _, name := range []string{ddlEndTrigger, sqlDropTrigger} {
		if _, err := tx.Exec(ctx, `DROP EVENT TRIGGER IF EXISTS `+name); err != nil {
			return fmt.Errorf("drop event trigger %s: %w", name, err)
		}
	}
	return nil
}

// globRegexps turns repository.tables patterns (path.Match globs) into
// anchored POSIX regular expressions, for the event triggers: those on
// the table name, and those on schema.name (a pattern with a dot).
func globRegexps(patterns []string) (names, qualified []string) {
	names, qualified = []string{}, []string{}
	for _, p := range patterns {
		var b strings.Builder
		b.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch c := p[i]; c {
			case '*':
				b.WriteString(".*")
			case '?':
				b.WriteString(".")
			case '[':
				j := strings.IndexByte(p[i+1:], ']')
				if j < 0 {
					b.WriteString(`\[`)
					continue
				}
				class := p[i+1 : i+1+j]
				if strings.HasPrefix(class, "!") {
					class = "^" + class[1:]
				}
				b.WriteString("[" + class + "]")
				i += j + 1
			case '\\':
				if i+1 < len(p) {
					i++
					b.WriteString(regexp.QuoteMeta(p[i : i+1]))
				}
			default:
				b.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		b.WriteString("$")
		if strings.Contains(p, ".") {
			qualified = append(qualified, b.String())
		} else {
			names = append(names, b.String())
		}
	}
	return names, qualified
}
