package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
)

// Fork is where a promoted master's capture history begins: it continues
// history Parent after position Position, the last one the promoted node
// applied from its old master.
type Fork struct {
	Parent   uint64 // the old master's capture epoch (the slave's data's)
	Position uint64 // the last position applied from it
}

// Promote makes a slave's repository a master's: it installs capture (opts
// must say role master) and starts a new capture history that forks from
// the old master's at fork, so that capture numbers its first transaction
// fork.Position+1 and a slave whose data ends exactly there (the old
// master after a switchover) streams on. It must run after apply stopped:
// capture sees only what is written from now on, never a replicated row.
//
// What a previous term as master left behind is dropped first: its
// replication slot (which would hold changes apply made since) and its
// audit rows. Running it again starts the history again, which is safe
// until the node serves as master.
func Promote(ctx context.Context, conn *pgx.Conn, opts InstallOptions, fork Fork) (epoch uint64, err error) {
	if opts.Role != config.RoleMaster {
		return 0, fmt.Errorf("promote: install options for role %q, want master", opts.Role)
	}
	if opts.Mode == config.CaptureLogical {
		var stale bool
		err := conn.QueryRow(ctx, `SELECT to_regclass('schedsync.meta') IS NOT NULL`).Scan(&stale)
		if err != nil {
			return 0, err
		}
		if stale {
			slot, err := repositorySlot(ctx, conn)
			if err != nil {
				return 0, err
			}
			if err := dropSlot(ctx, conn, slot); err != nil {
				return 0, err
			}
		}
	}
	if _, err := Install(ctx, conn, opts); err != nil {
		return 0, err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE schedsync.capture_state SET epoch = 0 WHERE id = 1`); err != nil {
			return fmt.Errorf("reset the capture history: %w", err)
		}
		if err := drawEpoch(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `UPDATE schedsync.capture_state
			SET position = $1, lsn = 0, parent_epoch = $2, fork_position = $1, updated_at = now()
			WHERE id = 1 RETURNING epoch`, int64(fork.Position), int64(fork.Parent)).Scan(&epoch)
		if err != nil {
			return fmt.Errorf("start the capture history at position %d: %w", fork.Position, err)
		}
		if opts.Mode == config.CaptureTrigger {
			// Audit rows of an earlier term as master: their changes were
			// shipped then, or lost with that term.
			if _, err := tx.Exec(ctx, `TRUNCATE schedsync.audit`); err != nil {
				return fmt.Errorf("clear the audit table: %w", err)
			}
		}
		return nil
	})
	return epoch, err
}

// Demote is Promote's reverse: it drops a master's capture objects (the
// slot, the triggers, the audit table and the capture state) and leaves a
// slave's state tables, empty, for the caller to fill: the applied
// position of a switchover, or a restore's.
func Demote(ctx context.Context, conn *pgx.Conn, schemas []string) error {
	if err := Uninstall(ctx, conn); err != nil {
		return fmt.Errorf("clear the capture state: %w", err)
	}
	if _, err := Install(ctx, conn, InstallOptions{Role: config.RoleSlave, Schemas: schemas}); err != nil {
		return fmt.Errorf("install the slave's state tables: %w", err)
	}
	return nil
}

// ReadFork reads where the repository's capture history forked from its
// old master's; the zero Fork when it did not (a first master), or when
// capture is not installed.
func ReadFork(ctx context.Context, conn *pgx.Conn) (Fork, error) {
	var f Fork
	var parent, pos int64
	err := conn.QueryRow(ctx, `SELECT parent_epoch, fork_position FROM schedsync.capture_state WHERE id = 1`).Scan(&parent, &pos)
	if err != nil {
		var have bool
		if qerr := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
			WHERE attrelid = to_regclass('schedsync.capture_state') AND attname = 'parent_epoch')`).Scan(&have); qerr == nil && !have {
			return f, nil
		}
		return f, fmt.Errorf("read the capture history's fork: %w", err)
	}
	return Fork{Parent: uint64(parent), Position: uint64(pos)}, nil
}

// CatchUpSequences raises every sequence owned by a column of a table in
// schemas to at least the column's largest value: a promoted master must
// never hand out a key its rows already hold. Replicated sequence values
// keep sequences ahead of the rows they cover already; this covers a
// sample lost with the old master. A sequence it cannot read that way (a
// column that is not an integer) is reported in the log and left alone.
func CatchUpSequences(ctx context.Context, conn *pgx.Conn, schemas []string, log *slog.Logger) (raised int, err error) {
	rows, err := conn.Query(ctx, `SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname),
			quote_ident(tn.nspname) || '.' || quote_ident(t.relname), quote_ident(a.attname)
		FROM pg_depend d
		JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
		JOIN pg_namespace sn ON sn.oid = s.relnamespace
		JOIN pg_class t ON t.oid = d.refobjid
		JOIN pg_namespace tn ON tn.oid = t.relnamespace
		JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
		  AND d.deptype IN ('a', 'i') AND tn.nspname = ANY ($1) AND tn.nspname <> 'schedsync'
		ORDER BY 1`, schemas)
	if err != nil {
		return 0, fmt.Errorf("list the sequences of the replicated schemas: %w", err)
	}
	type owned struct{ seq, table, column string }
	var all []owned
	for rows.Next() {
		var o owned
		if err := rows.Scan(&o.seq, &o.table, &o.column); err != nil {
			return 0, err
		}
		all = append(all, o)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list the sequences of the replicated schemas: %w", err)
	}
	for _, o := range all {
		var did bool
		err := conn.QueryRow(ctx, fmt.Sprintf(`WITH m AS (SELECT max(%s)::bigint AS v FROM %s),
				s AS (SELECT last_value, is_called FROM %s)
			SELECT CASE WHEN m.v IS NOT NULL AND (m.v > s.last_value OR (m.v = s.last_value AND NOT s.is_called))
				THEN setval($1::regclass, m.v, true) IS NOT NULL ELSE false END FROM m, s`,
			o.column, o.table, o.seq), o.seq).Scan(&did)
		var pgErr interface{ SQLState() string }
		switch {
		case errors.As(err, &pgErr):
			log.Warn("promote: could not check a sequence against its column", "sequence", o.seq, "column", o.table+"."+o.column, "err", err)
		case err != nil:
			return raised, fmt.Errorf("check sequence %s against %s.%s: %w", o.seq, o.table, o.column, err)
		case did:
			raised++
			log.Info("promote: sequence raised to its column's largest value", "sequence", o.seq, "column", o.table+"."+o.column)
		}
	}
	return raised, nil
}

// InstalledMode is the capture mode installed in the repository, or ""
// when none is (a slave's, or nothing installed).
func InstalledMode(ctx context.Context, conn *pgx.Conn) (config.CaptureMode, error) {
	var mode config.CaptureMode
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var meta bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('schedsync.meta') IS NOT NULL`).Scan(&meta); err != nil || !meta {
			return err
		}
		recorded, err := getMeta(ctx, tx, "capture_mode")
		if err != nil {
			return err
		}
		var p *string
		if recorded != "" {
			p = &recorded
		}
		mode, err = installedMode(ctx, tx, p)
		return err
	})
	return mode, err
}
