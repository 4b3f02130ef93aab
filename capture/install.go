package capture

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
	sqlfiles "github.com/schedsync/schedsync/sql"
)

// ReplicatedCondition is an SQL condition on pg_class c that holds for the
// tables capture replicates, in either mode: they carry the capture
// trigger, or they are in the publication.
const ReplicatedCondition = `(EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = '` + rowTrigger + `')
	OR EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
	           WHERE p.pubname = '` + PublicationName + `' AND pr.prrelid = c.oid))`

// installLockKey serialises concurrent installs and uninstalls
// (pg_advisory_xact_lock, taken by ddlTx).
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
	// Role is master (capture objects) or slave (only the state tables).
	Role config.Role
	// Mode is the capture mode on a master: trigger (the default) or
	// logical.
	Mode config.CaptureMode
	// DDL replicates schema changes of the replicated schemas
	// (ddl.replicate): event triggers record them.
	DDL bool
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

	// Logical mode only.
	//
	// Unlogged are tables that match but are not replicated: logical
	// decoding cannot see their changes.
	Unlogged []string
	// IdentityFull are the tables without a primary key that this run set
	// to REPLICA IDENTITY FULL (capture.allow_no_pk).
	IdentityFull []string
	// Publication and Slot name the publication and the replication slot;
	// SlotCreated is true when this run created the slot.
	Publication, Slot string
	SlotCreated       bool

	// DDL says whether schema changes are replicated, and if not why.
	DDL string
}

// ModeConflictError refuses to install one capture mode over the other.
type ModeConflictError struct{ Installed, Wanted config.CaptureMode }

func (e *ModeConflictError) Error() string {
	return fmt.Sprintf("schedsync is installed in this repository for capture.mode = %s, not %s; to switch modes stop the master service (schedsync stop), run schedsync uninstall, then schedsync install, start the master again and re-seed every slave with schedsync resync --force (README: Switching capture modes)",
		e.Installed, e.Wanted)
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
//
// Its callers check the privileges it needs first (grants.Check: the
// install command, and promote and switchover before anything changes),
// so that Install does not repeat that work inside a failover.
func Install(ctx context.Context, conn *pgx.Conn, opts InstallOptions) (InstallReport, error) {
	var rep InstallReport
	if opts.Role != config.RoleMaster && opts.Role != config.RoleSlave {
		return rep, fmt.Errorf("install: role %q is not master or slave", opts.Role)
	}
	if opts.Mode == "" {
		opts.Mode = config.CaptureTrigger
	}
	if opts.Mode != config.CaptureTrigger && opts.Mode != config.CaptureLogical {
		return rep, fmt.Errorf("install: capture mode %q is not trigger or logical", opts.Mode)
	}
	if opts.Role == config.RoleMaster && opts.Mode == config.CaptureLogical {
		return installLogical(ctx, conn, opts)
	}
	err := ddlTx(ctx, conn, func(tx pgx.Tx) error {
		created, err := installSchema(ctx, tx, opts.Role, opts.Mode)
		if err != nil {
			return err
		}
		rep.SchemaCreated = created
		if opts.Role != config.RoleMaster {
			return nil
		}
		if err := installTriggers(ctx, tx, opts, &rep); err != nil {
			return err
		}
		return installDDL(ctx, tx, opts, &rep)
	})
	return rep, err
}

// installSchema runs the SQL scripts unless this schema version (and, on a
// master, the capture objects of mode) is already there. It refuses to
// install one capture mode over the other.
func installSchema(ctx context.Context, tx pgx.Tx, role config.Role, mode config.CaptureMode) (bool, error) {
	want := sqlfiles.SchemaVersion + "/" + string(role)
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schedsync.meta') IS NOT NULL`).Scan(&exists); err != nil {
		return false, fmt.Errorf("look for schedsync.meta: %w", err)
	}
	var have, haveMode *string
	if exists {
		err := tx.QueryRow(ctx, `SELECT max(value) FILTER (WHERE key = 'version'), max(value) FILTER (WHERE key = 'capture_mode')
			FROM schedsync.meta`).Scan(&have, &haveMode)
		if err != nil {
			return false, fmt.Errorf("read schedsync.meta: %w", err)
		}
	}
	if role == config.RoleMaster {
		installed, err := installedMode(ctx, tx, haveMode)
		if err != nil {
			return false, err
		}
		if installed != "" && installed != mode {
			return false, &ModeConflictError{Installed: installed, Wanted: mode}
		}
	}
	// A master's objects are a superset of a slave's.
	if have != nil && (*have == want || *have == sqlfiles.SchemaVersion+"/"+string(config.RoleMaster)) {
		return false, nil
	}
	return true, runScripts(ctx, tx, role, mode, want)
}

// installedMode is the capture mode installed on a master: recorded in
// schedsync.meta, or trigger when only an audit table from before the
// mode was recorded says so; "" when none is.
func installedMode(ctx context.Context, tx pgx.Tx, recorded *string) (config.CaptureMode, error) {
	if recorded != nil {
		return config.CaptureMode(*recorded), nil
	}
	var audit bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schedsync.audit') IS NOT NULL`).Scan(&audit); err != nil {
		return "", fmt.Errorf("look for schedsync.audit: %w", err)
	}
	if audit {
		return config.CaptureTrigger, nil
	}
	return "", nil
}

func runScripts(ctx context.Context, tx pgx.Tx, role config.Role, mode config.CaptureMode, version string) error {
	if _, err := tx.Exec(ctx, sqlfiles.State); err != nil {
		return fmt.Errorf("create schedsync state tables: %w", err)
	}
	if role == config.RoleMaster {
		if _, err := tx.Exec(ctx, sqlfiles.CaptureState); err != nil {
			return fmt.Errorf("create capture state: %w", err)
		}
		if err := drawEpoch(ctx, tx); err != nil {
			return err
		}
		if mode == config.CaptureTrigger {
			if _, err := tx.Exec(ctx, sqlfiles.Capture); err != nil {
				return fmt.Errorf("create capture objects: %w", err)
			}
		}
		if err := setMeta(ctx, tx, "capture_mode", string(mode)); err != nil {
			return err
		}
	}
	return setMeta(ctx, tx, "version", version)
}

// drawEpoch gives a new capture state its epoch: a random 63-bit number,
// so that two installs never share one.
func drawEpoch(ctx context.Context, tx pgx.Tx) error {
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return fmt.Errorf("draw a capture epoch: %w", err)
	}
	epoch := int64(binary.BigEndian.Uint64(b[:])>>1) | 1
	if _, err := tx.Exec(ctx, `UPDATE schedsync.capture_state SET epoch = $1 WHERE id = 1 AND epoch = 0`, epoch); err != nil {
		return fmt.Errorf("set the capture epoch: %w", err)
	}
	return nil
}

type tableRef struct {
	schema, name string
	hasPK        bool
	hasTrigger   bool
	unlogged     bool
	// replIdent is pg_class.relreplident: d(efault), f(ull), n(othing), i(ndex).
	replIdent byte
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
		       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = $2),
		       c.relpersistence = 'u', c.relreplident::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname = ANY($1) AND n.nspname <> 'schedsync'
		ORDER BY 1, 2`, schemas, rowTrigger)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableRef, error) {
		var t tableRef
		var ident string
		err := r.Scan(&t.schema, &t.name, &t.hasPK, &t.hasTrigger, &t.unlogged, &ident)
		if ident != "" {
			t.replIdent = ident[0]
		}
		return t, err
	})
}

// Uninstall drops what install created, in either capture mode: the
// replication slot (first, and refused while the master service reads
// from it, so a failed uninstall never leaves a slot without its owner),
// the publication, the capture triggers, schema schedsync, and the REPLICA
// IDENTITY FULL that install set. It touches nothing else, and is a no-op
// when nothing is installed.
func Uninstall(ctx context.Context, conn *pgx.Conn) error {
	if err := uninstallGrants(ctx, conn); err != nil {
		return err
	}
	slot, err := repositorySlot(ctx, conn)
	if err != nil {
		return err
	}
	if err := dropSlot(ctx, conn, slot); err != nil {
		return err
	}
	return ddlTx(ctx, conn, func(tx pgx.Tx) error {
		have, err := listTriggered(ctx, tx)
		if err != nil {
			return err
		}
		full, err := replicaIdentityFull(ctx, tx)
		if err != nil {
			return err
		}
		locked := full
		for _, t := range have {
			locked = append(locked, t.quoted())
		}
		if err := lockTables(ctx, tx, locked, "ACCESS EXCLUSIVE"); err != nil {
			return err
		}
		for _, t := range have {
			if err := dropTriggers(ctx, tx, t); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DROP PUBLICATION IF EXISTS `+PublicationName); err != nil {
			return fmt.Errorf("drop publication %s: %w", PublicationName, err)
		}
		if err := resetReplicaIdentity(ctx, tx, full); err != nil {
			return err
		}
		if err := dropEventTriggers(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS schedsync CASCADE`); err != nil {
			return fmt.Errorf("drop schema schedsync: %w", err)
		}
		return nil
	})
}

// uninstallGrants checks, before uninstall drops anything, that its role
// owns the tables it must change (only a table's owner may drop its
// triggers or reset its REPLICA IDENTITY), and may drop the slot.
func uninstallGrants(ctx context.Context, conn *pgx.Conn) error {
	var full []string
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) (err error) {
		full, err = replicaIdentityFull(ctx, tx)
		return err
	})
	if err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `
		WITH t AS (
			SELECT DISTINCT c.relowner FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
			WHERE g.tgname IN ($1, $2)
			UNION
			SELECT c.relowner FROM pg_class c WHERE c.oid IN (SELECT to_regclass(q) FROM unnest($3::text[]) q))
		SELECT format('GRANT %I TO %I;', pg_get_userbyid(relowner), current_user) FROM t
		WHERE NOT pg_has_role(current_user, relowner, 'USAGE')
		UNION ALL
		SELECT format('ALTER ROLE %I REPLICATION;', current_user)
		WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE 'schedsync%')
		  AND NOT (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)
		ORDER BY 1`, rowTrigger, statementTrigger, full)
	if err != nil {
		return fmt.Errorf("check the privileges uninstall needs: %w", err)
	}
	stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("check the privileges uninstall needs: %w", err)
	}
	if len(stmts) == 0 {
		return nil
	}
	p := &grants.Plan{Exists: true}
	if err := conn.QueryRow(ctx, `SELECT current_user::text, current_database()::text`).Scan(&p.Role, &p.Database); err != nil {
		return err
	}
	for _, s := range stmts {
		p.Needs = append(p.Needs, grants.Need{Statement: s,
			Why: "uninstall drops the capture triggers, the REPLICA IDENTITY FULL it set and the slot: only the tables' owner (or run uninstall as that owner), and a REPLICATION role, may"})
	}
	return &grants.MissingError{Plan: p, Work: "uninstall"}
}

// replicaIdentityFull lists the tables install set to REPLICA IDENTITY
// FULL that still exist and still are.
func replicaIdentityFull(ctx context.Context, tx pgx.Tx) ([]string, error) {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schedsync.meta') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	list, err := getMeta(ctx, tx, "replica_identity_full")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, qname := range splitList(list) {
		var full *bool
		err := tx.QueryRow(ctx, `SELECT relreplident = 'f' FROM pg_class WHERE oid = to_regclass($1)`, qname).Scan(&full)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (full == nil || !*full)) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", qname, err)
		}
		out = append(out, qname)
	}
	return out, nil
}

// resetReplicaIdentity puts back REPLICA IDENTITY DEFAULT on the tables
// install set to FULL (replicaIdentityFull).
func resetReplicaIdentity(ctx context.Context, tx pgx.Tx, qnames []string) error {
	for _, qname := range qnames {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s REPLICA IDENTITY DEFAULT`, qname)); err != nil {
			return fmt.Errorf("reset the replica identity of %s: %w", qname, err)
		}
	}
	return nil
}

// lockTables takes the locks the DDL on qnames needs, all in one
// statement before any DDL, in a random order: a transaction of the
// scheduler that holds one of them and waits for another must not find
// install holding the second and waiting for the first attempt after
// attempt.
func lockTables(ctx context.Context, tx pgx.Tx, qnames []string, mode string) error {
	if len(qnames) == 0 {
		return nil
	}
	// LOCK TABLE in these modes needs UPDATE, DELETE or TRUNCATE, which a
	// master's least-privilege role (SELECT, TRIGGER) lacks: the tables it
	// may not lock are locked by CREATE TRIGGER itself, one at a time.
	rows, err := tx.Query(ctx, `SELECT q FROM unnest($1::text[]) q
		WHERE has_table_privilege(q, 'UPDATE') OR has_table_privilege(q, 'DELETE') OR has_table_privilege(q, 'TRUNCATE')`, qnames)
	if err != nil {
		return fmt.Errorf("lock the tables: %w", err)
	}
	if qnames, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("lock the tables: %w", err)
	}
	if len(qnames) == 0 {
		return nil
	}
	rand.Shuffle(len(qnames), func(i, j int) { qnames[i], qnames[j] = qnames[j], qnames[i] })
	if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(qnames, ", ")+" IN "+mode+" MODE"); err != nil {
		return fmt.Errorf("lock the tables: %w", err)
	}
	return nil
}

// matchTables reports whether a table passes the repository.tables filter.
func matchTables(patterns []string, schema, name string) bool {
	return config.MatchTables(patterns, schema, name)
}

// ddlTx runs install's or uninstall's transaction, again when it cannot
// get its locks in time or loses a deadlock: install takes table locks
// while the scheduler keeps writing, and a scheduler transaction that
// holds one of them while it waits for another would deadlock with it.
// Each lock is waited for a short while (growing from 100 ms to 500 ms,
// below the server's deadlock_timeout, so that install, not the
// scheduler, gives way), then the transaction is tried again after a short
// random pause, for ddlPatience in all.
func ddlTx(ctx context.Context, conn *pgx.Conn, fn func(pgx.Tx) error) error {
	deadline := time.Now().Add(ddlPatience)
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", wait.Milliseconds())); err != nil {
				return err
			}
			// Concurrent installs and uninstalls take turns.
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", installLockKey); err != nil {
				return fmt.Errorf("take install lock: %w", err)
			}
			// schedsync's own DDL is not the scheduler's schema change.
			if _, err := tx.Exec(ctx, "SET LOCAL "+InDDLSetting+" = on"); err != nil {
				return err
			}
			return fn(tx)
		})
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "55P03") {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (tried %d times in %s while the scheduler kept the tables busy: run it again, or at a quieter moment)",
				err, attempt, ddlPatience)
		}
		wait = min(wait*3/2, 500*time.Millisecond)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(10+rand.IntN(90)) * time.Millisecond):
		}
	}
}

// ddlPatience bounds how long install and uninstall try to get their locks.
const ddlPatience = 2 * time.Minute
