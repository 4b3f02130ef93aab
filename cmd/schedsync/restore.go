package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/backup"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
	"github.com/schedsync/schedsync/internal/service"
)

func (a *app) newRestoreCmd() *cobra.Command {
	var in string
	cmd := &cobra.Command{
		Use:   "restore --in FILE",
		Short: "Slave: load a backup into the repository and set the applied position",
		Long: `restore loads a file written by schedsync backup into this slave's
repository. The sync service must be stopped (schedsync stop).

It first reads the whole file and checks every checksum, then checks that
every table of the backup exists here with the same columns and types, and
every sequence; until then nothing is changed. Then, in one transaction, it
replaces the rows of the replicated tables, sets the sequences and sets the
applied position to the backup's, so that the service, once started, streams
from there. If restore is interrupted, the transaction rolls back and the
slave stays marked needs_resync (apply refuses to run) until a restore
completes. Afterwards the slave's spool (spool.dir/spool) and last status
(spool.dir/status.json) are removed: they belong to the data replaced.`,
		Args: cobra.NoArgs,
		RunE: a.withNodeConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return a.runRestore(cmd.Context(), cfg, in)
		}),
	}
	cmd.Flags().StringVar(&in, "in", "", "the backup file to load (required)")
	_ = cmd.MarkFlagRequired("in") // cannot fail: the flag exists
	return cmd
}

func (a *app) runRestore(ctx context.Context, cfg *config.Config, in string) error {
	if cfg.Node.Role != config.RoleSlave {
		return usageError(errors.New("restore runs on a slave (node.role = slave); on the master, write a backup with schedsync backup"))
	}
	if _, err := os.Stat(in); err != nil {
		return fmt.Errorf("backup file: %w", err)
	}
	// resync checks the same before it stops the service.
	if err := a.checkGrants(ctx, cfg, grants.ForConfig(cfg, false), "restore"); err != nil {
		return err
	}
	start := time.Now()
	m, err := a.restoreFrom(ctx, cfg, in)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "restored %s: %s, in %s; start the slave service (schedsync start) to stream from position %d\n",
		in, m.Summary(), time.Since(start).Round(10*time.Millisecond), m.Position)
	return nil
}

// restoreFrom loads the backup file in into the slave repository while
// holding the service's pid lock (so the service cannot start meanwhile),
// then drops the old spool and status and records that the slave has been
// seeded. restore and resync both use it.
func (a *app) restoreFrom(ctx context.Context, cfg *config.Config, in string) (backup.Manifest, error) {
	dir := cfg.Spool.Dir
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return backup.Manifest{}, fmt.Errorf("create spool.dir: %w", err)
	}
	lock, err := lockStoppedSlave(dir, "stop the slave service first (schedsync stop); resync does this for you")
	if err != nil {
		return backup.Manifest{}, err
	}
	defer lock.Release()

	conn, err := a.connectRepository(ctx, cfg, "restore")
	if err != nil {
		return backup.Manifest{}, err
	}
	defer conn.Close(context.Background())
	open := func() (io.ReadCloser, error) {
		f, err := os.Open(in)
		if err != nil {
			return nil, fmt.Errorf("open the backup file: %w", err)
		}
		return f, nil
	}
	m, err := backup.Restore(ctx, conn, open, backup.RestoreOptions{
		Progress: backup.NewProgress(a.stderr),
		Logger:   cliLogger(a.stderr),
		// Tells resync the slave was seeded, even when the backup's
		// position is 0 (a master that had captured nothing yet); in the
		// load's transaction, so it holds exactly when the load does.
		BeforeCommit: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO schedsync.meta (key, value) VALUES ('seeded', now()::text)
				ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`)
			return err
		},
	})
	if err != nil {
		return m, fmt.Errorf("restore failed: %w", err)
	}
	if err := clearSlaveSpool(dir); err != nil {
		return m, fmt.Errorf("the backup is restored, but %w; remove it by hand before starting the service", err)
	}
	return m, nil
}

// lockStoppedSlave takes the service's pid lock, so that the slave service
// cannot start while a command changes what it would use; if the service
// runs, the error says so and what to do (fix).
func lockStoppedSlave(dir, fix string) (*service.PidFile, error) {
	lock, err := service.AcquirePidFile(dir)
	var running *service.AlreadyRunningError
	if errors.As(err, &running) {
		return nil, fmt.Errorf("the slave service is running (pid %d): %s", running.PID, fix)
	}
	return lock, err
}

// clearSlaveSpool removes the slave's spool and status file: the spool's
// transactions and positions belong to the data the restore replaced, and
// a status file saying needs_resync would make cron's resync run again.
func clearSlaveSpool(dir string) error {
	if err := os.RemoveAll(filepath.Join(dir, "spool")); err != nil {
		return fmt.Errorf("could not remove the old spool: %w", err)
	}
	err := os.Remove(filepath.Join(dir, service.StatusFileName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("could not remove the old status file: %w", err)
	}
	return nil
}
