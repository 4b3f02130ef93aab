package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/backup"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
	"github.com/schedsync/schedsync/internal/service"
)

// minFreeSpace is the free space resync leaves in spool.dir while it
// downloads a backup: below it, it stops rather than fill the disk.
const minFreeSpace = 256 << 20

func (a *app) newResyncCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "resync [--force]",
		Short: "Slave, cron-safe: re-seed from the master if the slave needs it",
		Long: `resync checks whether this slave needs a re-sync: the master refused it for
its backlog or because its data belongs to an older capture history (state
needs_resync), an earlier restore was interrupted, or the slave was never
seeded. If it does, or with --force, it stops the slave
service, fetches a backup from the master over the sync port (no master
database credentials needed; it goes through a temporary file in spool.dir,
and stops if free space there runs low), restores it and starts the slave
service again, streaming from the backup's position. Otherwise it says that
nothing is needed and exits 0. Two resyncs never run at once, so it is safe
to run from cron (see configs/crontab).`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			eff, _, err := service.Effective(*cfg)
			if err != nil {
				return err
			}
			switch {
			case cfg.Node.Role == config.RoleSlave:
				// node.role says slave: also a fail-back, where the
				// persisted role is still master; master.host/port name
				// the new master.
			case eff.Node.Role == config.RoleSlave:
				cfg = &eff // a slave since a switchover: its master is persisted
			default:
				return usageError(errors.New("resync runs on a slave (node.role = slave); to fail back an old master, set node.role = slave and master.host/master.port to the new master first"))
			}
			return a.resync(cmd.Context(), cfg, force)
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "re-sync even if the slave does not need it")
	return cmd
}

func (a *app) resync(ctx context.Context, cfg *config.Config, force bool) error {
	if err := os.MkdirAll(cfg.Spool.Dir, 0o700); err != nil {
		return err
	}
	lock, err := lockFile(filepath.Join(cfg.Spool.Dir, "resync.lock"))
	if errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintln(a.stdout, "another schedsync resync is running; nothing to do")
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	reason, err := a.resyncReason(ctx, cfg, force)
	if err != nil {
		return err
	}
	if reason == "" {
		fmt.Fprintln(a.stdout, "the slave is in step with its master; no re-sync needed")
		return nil
	}
	if err := a.checkResyncGrants(ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "re-syncing: %s\n", reason)
	if err := a.stop(ctx, cfg, time.Minute); err != nil {
		return fmt.Errorf("stop the slave service: %w", err)
	}
	start := time.Now()
	m, size, err := a.fetchAndRestore(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "restored %d tables (%d bytes of backup) at position %d in %s\n",
		len(m.Tables), size, m.Position, time.Since(start).Round(time.Millisecond))
	return a.startDetached(ctx, cfg, startOptions{wait: 30 * time.Second, waitGiven: true})
}

// resyncReason says why the slave needs a re-sync, or "" if it does not.
func (a *app) resyncReason(ctx context.Context, cfg *config.Config, force bool) (string, error) {
	if force {
		return "--force", nil
	}
	if st, _ := a.currentStatus(ctx, cfg); st.State == service.StateNeedsResync {
		if strings.Contains(st.Error, "capture history") {
			return "the slave's data belongs to another capture history than the master's changes (capture was installed again on the master)", nil
		}
		return "the master refused this slave for its backlog", nil
	}
	conn, err := a.connectRepository(ctx, cfg, "resync")
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var applied int64
	var marked, seeded bool
	err = conn.QueryRow(ctx, `SELECT applied_position, needs_resync,
		EXISTS (SELECT 1 FROM schedsync.meta WHERE key = 'seeded') FROM schedsync.state WHERE id = 1`).Scan(&applied, &marked, &seeded)
	if err != nil {
		return "", fmt.Errorf("read schedsync.state (run schedsync install on the slave): %w", err)
	}
	switch {
	case marked:
		return "an earlier restore did not finish", nil
	case applied == 0 && !seeded:
		return "the slave has never been seeded", nil
	}
	return "", nil
}

// fetchAndRestore downloads a backup from the master into spool.dir and
// restores it.
func (a *app) fetchAndRestore(ctx context.Context, cfg *config.Config) (backup.Manifest, int64, error) {
	path := filepath.Join(cfg.Spool.Dir, "resync.backup")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return backup.Manifest{}, 0, err
	}
	defer os.Remove(path)
	fmt.Fprintf(a.stdout, "fetching a backup from the master at %s\n", cfg.Master.Addr())
	size, welcome, err := service.FetchBackup(ctx, *cfg, &spaceChecker{w: f, dir: cfg.Spool.Dir})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return backup.Manifest{}, size, fmt.Errorf("fetch the backup: %w", err)
	}
	// Fail-back: an old master keeps what it captured and its successor
	// never got in a file, and drops its capture state, before its data
	// is replaced.
	lost, err := service.SaveUnshipped(ctx, *cfg, capture.Fork{Parent: welcome.ForkEpoch, Position: welcome.ForkPosition}, cliLogger(a.stderr))
	if err != nil {
		return backup.Manifest{}, size, fmt.Errorf("save what this node captured as master and never shipped (nothing was overwritten): %w", err)
	}
	if lost.Transactions > 0 {
		fmt.Fprintf(a.stdout, "this node captured %d transaction(s) as master that master %s never got; they are in %s\n",
			lost.Transactions, welcome.Name, lost.Path)
	}
	m, err := a.restoreFrom(ctx, cfg, path)
	if err != nil {
		return m, size, err
	}
	st, _, err := service.LoadNodeState(cfg.Spool.Dir)
	if err != nil {
		return m, size, err
	}
	if st.Role != config.RoleSlave || st.Generation < welcome.Generation {
		why := "resync"
		if st.Role == config.RoleMaster {
			why = "failback"
		}
		err = service.SaveNodeState(cfg.Spool.Dir, service.NodeState{Role: config.RoleSlave,
			Generation: max(st.Generation, welcome.Generation), Why: why, Since: time.Now().UTC()})
	}
	return m, size, err
}

// spaceChecker stops a download when free space in dir runs low.
type spaceChecker struct {
	w       io.Writer
	dir     string
	written int64
	checked int64
}

func (s *spaceChecker) Write(p []byte) (int, error) {
	if s.written-s.checked >= 64<<20 || s.checked == 0 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(s.dir, &st); err == nil {
			if free := int64(st.Bavail) * int64(st.Bsize); free < minFreeSpace {
				return 0, fmt.Errorf("only %d bytes left free in %s after %d bytes of backup; free some space and run resync again", free, s.dir, s.written)
			}
		}
		s.checked = s.written + 1
	}
	n, err := s.w.Write(p)
	s.written += int64(n)
	return n, err
}

// lockFile takes an exclusive, non-blocking flock; EWOULDBLOCK if held.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkResyncGrants checks what resync needs before it stops the service:
// a slave's privileges and, on a former master (fail-back), what dropping
// its capture objects needs.
func (a *app) checkResyncGrants(ctx context.Context, cfg *config.Config) error {
	conn, err := a.connectRepository(ctx, cfg, "check privileges")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	req := grants.ForConfig(asSlave(cfg), false)
	if err := grants.Check(ctx, conn, req, "resync"); err != nil {
		return err
	}
	mode, err := capture.InstalledMode(ctx, conn)
	if err != nil {
		return fmt.Errorf("read the installed capture mode: %w", err)
	}
	if mode == "" {
		return nil
	}
	req.Demote, req.Mode = true, mode
	return grants.Check(ctx, conn, req, "resync (this former master drops its capture objects)")
}
