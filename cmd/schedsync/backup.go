package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/backup"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/fsutil"
	"github.com/schedsync/schedsync/internal/grants"
	"github.com/schedsync/schedsync/internal/service"
)

func (a *app) newBackupCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Master: write a consistent snapshot of the replicated tables and its position",
		Long: `backup writes every replicated table and the sequences of
repository.schemas, from one consistent snapshot taken while the scheduler
keeps running, into one compressed, checksummed file. The snapshot comes
from the running master service's capture, which exports one that holds
exactly the changes up to a spool position; the file records that position
and the capture history it belongs to. Restore it on a slave with schedsync
restore --in FILE; the slave then streams from that position. The master
keeps its spool from there for spool.backup_pin, so that the slave is served
whatever backlog builds up until it starts.

The file is written to FILE.tmp, synced and renamed, so FILE is never a
partial backup. --out - writes to standard output. A progress bar is shown
on a terminal, a line every 2s otherwise (on standard error).`,
		Args: cobra.NoArgs,
		RunE: a.withNodeConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return a.runBackup(cmd.Context(), cfg, out)
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write, or - for standard output (required)")
	_ = cmd.MarkFlagRequired("out") // cannot fail: the flag exists
	return cmd
}

func (a *app) runBackup(ctx context.Context, cfg *config.Config, out string) error {
	if cfg.Node.Role != config.RoleMaster {
		return usageError(errors.New("backup runs on the master (node.role = master); on a slave, load a backup with schedsync restore"))
	}
	conn, err := a.connectRepository(ctx, cfg, "backup")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := grants.Check(ctx, conn, grants.ForConfig(cfg, false), "backup"); err != nil {
		return err
	}
	var tx pgx.Tx
	at, err := service.ImportSnapshot(ctx, cfg.Spool.Dir, func(ctx context.Context, name string) (err error) {
		tx, err = capture.BeginInSnapshot(ctx, conn, name)
		return err
	})
	if errors.Is(err, service.ErrNotRunning) {
		return fmt.Errorf("the master service is not running: start it first (schedsync start); a backup takes its exact position from capture")
	}
	if err != nil {
		return fmt.Errorf("backup failed: %w", err)
	}
	defer tx.Rollback(context.Background())

	dst, err := createOutput(out, a.stdout)
	if err != nil {
		return err
	}
	start := time.Now()
	cw := &countingWriter{w: dst.w}
	m, err := backup.Write(ctx, tx, cw, at, backup.Options{
		Schemas:  cfg.Repository.Schemas,
		Progress: backup.NewProgress(a.stderr),
		Logger:   cliLogger(a.stderr),
	})
	if err != nil {
		dst.abort()
		return fmt.Errorf("backup failed: %w", err)
	}
	if err := dst.commit(); err != nil {
		return err
	}
	summary := a.stdout
	if out == "-" {
		summary = a.stderr // stdout carries the backup
	}
	fmt.Fprintf(summary, "backup written to %s: %s, %s file, in %s\n",
		out, m.Summary(), backup.FormatBytes(cw.n), time.Since(start).Round(10*time.Millisecond))
	return nil
}

// cliLogger shows a one-shot command's warnings on stderr, not its info.
func cliLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// output is where a backup goes: FILE.tmp renamed to FILE once synced, or
// standard output.
type output struct {
	w      io.Writer
	commit func() error
	abort  func()
}

func createOutput(path string, stdout io.Writer) (*output, error) {
	if path == "-" {
		return &output{w: stdout, commit: func() error { return nil }, abort: func() {}}, nil
	}
	f, err := fsutil.CreateAtomic(path, 0o600) // the scheduler's data
	if err != nil {
		return nil, fmt.Errorf("create the backup file: %w", err)
	}
	return &output{w: f, commit: f.Commit, abort: f.Abort}, nil
}
