package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
)

// PublicationName is the publication logical capture reads. Publications
// belong to one database, so one name serves every repository.
const PublicationName = "schedsync"

// slotsNeeded is how many replication slots (and WAL senders) logical
// capture uses at once: its own slot, and a temporary one while verify or a
// backup takes its exact snapshot.
const slotsNeeded = 2

// ServerSettingsError says which server settings logical capture needs.
type ServerSettingsError struct {
	// Settings are the lines to put in postgresql.conf.
	Settings []string
	// Found describes the current values.
	Found []string
}

func (e *ServerSettingsError) Error() string {
	return fmt.Sprintf("capture.mode = logical needs server settings this PostgreSQL does not have (%s): set %s in postgresql.conf (or with ALTER SYSTEM SET) and restart PostgreSQL (a reload is not enough), then run schedsync install again",
		strings.Join(e.Found, ", "), strings.Join(e.Settings, ", "))
}

// repositorySlot is the name of the replication slot of the database conn
// is connected to. Slots are cluster-wide, so the name carries the
// database's oid.
func repositorySlot(ctx context.Context, conn *pgx.Conn) (string, error) {
	var dbOID uint32
	if err := conn.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = current_database()`).Scan(&dbOID); err != nil {
		return "", fmt.Errorf("read the database oid: %w", err)
	}
	return fmt.Sprintf("schedsync_%d", dbOID), nil
}

// slotRetainedWAL reads the WAL a slot keeps on the server, in bytes: nil
// while its restart LSN is not set, an error wrapping pgx.ErrNoRows when
// there is no such slot.
func slotRetainedWAL(ctx context.Context, conn *pgx.Conn, slot string) (*int64, error) {
	var retained *int64
	err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&retained)
	if err != nil {
		return nil, fmt.Errorf("read replication slot %s: %w", slot, err)
	}
	return retained, nil
}

// checkLogicalServer checks wal_level, the slot and sender limits and the
// replication privilege, and reports everything that is wrong at once.
func checkLogicalServer(ctx context.Context, conn *pgx.Conn, slot string) error {
	var (
		walLevel                 string
		maxSlots, maxSenders     int
		otherSlots, otherSenders int
		replication              bool
		user                     string
	)
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		current_setting('max_replication_slots')::int, current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_replication_slots WHERE slot_name <> $1)::int,
		(SELECT count(*) FROM pg_stat_replication r
		  WHERE r.pid NOT IN (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL))::int,
		(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), current_user::text`, slot).
		Scan(&walLevel, &maxSlots, &maxSenders, &otherSlots, &otherSenders, &replication, &user)
	if err != nil {
		return fmt.Errorf("read the server settings: %w", err)
	}
	e := &ServerSettingsError{}
	if walLevel != "logical" {
		e.Settings = append(e.Settings, "wal_level = logical")
		e.Found = append(e.Found, "wal_level is "+walLevel)
	}
	if need := otherSlots + slotsNeeded; maxSlots < need {
		e.Settings = append(e.Settings, fmt.Sprintf("max_replication_slots = %d", need))
		e.Found = append(e.Found, fmt.Sprintf("max_replication_slots is %d with %d slots used by others", maxSlots, otherSlots))
	}
	if need := otherSenders + slotsNeeded; maxSenders < need {
		e.Settings = append(e.Settings, fmt.Sprintf("max_wal_senders = %d", need))
		e.Found = append(e.Found, fmt.Sprintf("max_wal_senders is %d with %d in use by others", maxSenders, otherSenders))
	}
	if len(e.Settings) > 0 {
		return e
	}
	if !replication {
		return fmt.Errorf("capture.mode = logical needs a role with the REPLICATION attribute, and %s has none: run ALTER ROLE %s REPLICATION as a superuser (pg_hba.conf lines for this database also cover its replication connections)",
			user, user)
	}
	return nil
}

// installLogical installs logical capture: the state tables, a publication
// of the replicated tables and a pgoutput replication slot. The slot is
// created last, outside the transaction, so a failure before it leaves no
// slot behind, and a failure creating it leaves none either.
func installLogical(ctx context.Context, conn *pgx.Conn, opts InstallOptions) (InstallReport, error) {
	rep := InstallReport{Publication: PublicationName}
	var err error
	if rep.Slot, err = repositorySlot(ctx, conn); err != nil {
		return rep, err
	}
	if err := checkLogicalServer(ctx, conn, rep.Slot); err != nil {
		return rep, err
	}
	err = ddlTx(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", installLockKey); err != nil {
			return fmt.Errorf("take install lock: %w", err)
		}
		created, err := installSchema(ctx, tx, config.RoleMaster, config.CaptureLogical)
		if err != nil {
			return err
		}
		rep.SchemaCreated = created
		if err := installPublication(ctx, tx, opts, &rep); err != nil {
			return err
		}
		if err := installDDL(ctx, tx, opts, &rep); err != nil {
			return err
		}
		return setMetaIfChanged(ctx, tx, "slot", rep.Slot)
	})
	if err != nil {
		return rep, err
	}
	rep.SlotCreated, err = ensureSlot(ctx, conn, rep.Slot)
	return rep, err
}

// installPublication reconciles the publication with the tables that
// should be in it.
func installPublication(ctx context.Context, tx pgx.Tx, opts InstallOptions, rep *InstallReport) error {
	tables, err := listTables(ctx, tx, opts.Schemas)
	if err != nil {
		return err
	}
	var want []tableRef
	var noPK, identNothing []string
	for _, t := range tables {
		if !matchTables(opts.Tables, t.schema, t.name) {
			continue
		}
		if t.unlogged {
			rep.Unlogged = append(rep.Unlogged, t.String())
			continue
		}
		want = append(want, t)
		switch {
		case !t.hasPK && t.replIdent != 'f' && t.replIdent != 'i':
			noPK = append(noPK, t.String())
		case t.replIdent == 'n':
			identNothing = append(identNothing, t.String())
		}
	}
	if len(identNothing) > 0 {
		return fmt.Errorf("tables with REPLICA IDENTITY NOTHING cannot be published: UPDATE and DELETE on them would fail on the master: %s; run ALTER TABLE ... REPLICA IDENTITY DEFAULT on them",
			strings.Join(identNothing, ", "))
	}
	if len(noPK) > 0 && !opts.AllowNoPK {
		return &NoPrimaryKeyError{Tables: noPK}
	}
	for _, t := range want {
		if !t.hasPK {
			rep.NoPK = append(rep.NoPK, t.String())
		}
	}
	// A table without a key must log its whole old row, or UPDATE and
	// DELETE on it fail once it is published.
	var locked []string
	for _, name := range noPK {
		if t := want[slices.IndexFunc(want, func(t tableRef) bool { return t.String() == name })]; t.replIdent != 'f' {
			locked = append(locked, t.quoted())
		}
	}
	if err := lockTables(ctx, tx, locked, "ACCESS EXCLUSIVE"); err != nil {
		return err
	}
	for _, name := range noPK {
		t := want[slices.IndexFunc(want, func(t tableRef) bool { return t.String() == name })]
		if t.replIdent == 'f' {
			continue
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s REPLICA IDENTITY FULL`, t.quoted())); err != nil {
			return fmt.Errorf("set REPLICA IDENTITY FULL on %s: %w", t, err)
		}
		rep.IdentityFull = append(rep.IdentityFull, name)
	}
	if len(noPK) > 0 {
		// Remembered, quoted, so that uninstall can put DEFAULT back.
		prev, err := getMeta(ctx, tx, "replica_identity_full")
		if err != nil {
			return err
		}
		all := splitList(prev)
		for _, name := range noPK {
			all = append(all, want[slices.IndexFunc(want, func(t tableRef) bool { return t.String() == name })].quoted())
		}
		slices.Sort(all)
		if err := setMetaIfChanged(ctx, tx, "replica_identity_full", strings.Join(slices.Compact(all), "\n")); err != nil {
			return err
		}
	}
	return reconcilePublication(ctx, tx, want, rep)
}

// reconcilePublication makes the publication hold exactly want, touching
// the catalog only for what differs, so that a second install changes
// nothing.
func reconcilePublication(ctx context.Context, tx pgx.Tx, want []tableRef, rep *InstallReport) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, PublicationName).Scan(&exists); err != nil {
		return fmt.Errorf("look for publication %s: %w", PublicationName, err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, `CREATE PUBLICATION `+PublicationName); err != nil {
			return fmt.Errorf("create publication %s: %w", PublicationName, err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2`, PublicationName)
	if err != nil {
		return fmt.Errorf("list the tables of publication %s: %w", PublicationName, err)
	}
	have, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableRef, error) {
		var t tableRef
		err := r.Scan(&t.schema, &t.name)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("list the tables of publication %s: %w", PublicationName, err)
	}
	published := map[string]bool{}
	for _, t := range have {
		published[t.String()] = true
	}
	wanted := map[string]bool{}
	for _, t := range want {
		wanted[t.String()] = true
		rep.Tables = append(rep.Tables, t.String())
		if published[t.String()] {
			continue
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER PUBLICATION %s ADD TABLE ONLY %s`, PublicationName, t.quoted())); err != nil {
			return fmt.Errorf("add %s to publication %s: %w", t, PublicationName, err)
		}
		rep.Added = append(rep.Added, t.String())
	}
	for _, t := range have {
		if wanted[t.String()] {
			continue
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER PUBLICATION %s DROP TABLE ONLY %s`, PublicationName, t.quoted())); err != nil {
			return fmt.Errorf("drop %s from publication %s: %w", t, PublicationName, err)
		}
		rep.Removed = append(rep.Removed, t.String())
	}
	return nil
}

// ensureSlot creates the replication slot unless it is there, and checks
// that an existing one is a pgoutput slot of this database.
func ensureSlot(ctx context.Context, conn *pgx.Conn, slot string) (bool, error) {
	var plugin, db *string
	err := conn.QueryRow(ctx, `SELECT plugin::text, database::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &db)
	switch {
	case err == nil:
		var cur string
		if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&cur); err != nil {
			return false, err
		}
		if plugin == nil || *plugin != "pgoutput" || db == nil || *db != cur {
			return false, fmt.Errorf("replication slot %s exists but is not a pgoutput slot of database %s; drop it (SELECT pg_drop_replication_slot('%s')) and run install again", slot, cur, slot)
		}
		return false, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("look for replication slot %s: %w", slot, err)
	}
	// Waits for the transactions running now to end: a consistent starting
	// point needs them finished.
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		return false, fmt.Errorf("create replication slot %s: %w", slot, err)
	}
	return true, nil
}

// dropSlot drops the repository's replication slot if it exists. It
// refuses while the master service is reading from it.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	var pid *int
	err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look for replication slot %s: %w", slot, err)
	}
	if pid != nil {
		return fmt.Errorf("replication slot %s is in use by process %d (the master sync service): stop it (schedsync stop) and run uninstall again", slot, *pid)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
		return fmt.Errorf("drop replication slot %s: %w", slot, err)
	}
	return nil
}

// ReadSlot reads the repository's replication slot and the WAL it keeps on
// the server, in bytes; ok is false when there is no slot.
func ReadSlot(ctx context.Context, conn *pgx.Conn) (slot string, retained int64, ok bool, err error) {
	if slot, err = repositorySlot(ctx, conn); err != nil {
		return "", 0, false, err
	}
	r, err := slotRetainedWAL(ctx, conn, slot)
	if errors.Is(err, pgx.ErrNoRows) {
		return slot, 0, false, nil
	}
	if err != nil {
		return slot, 0, false, err
	}
	if r != nil {
		retained = *r
	}
	return slot, retained, true, nil
}
