package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

// stopPoll is how often stop checks whether the service has let go of its
// pid lock.
const stopPoll = 50 * time.Millisecond

func (a *app) newStopCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop [--timeout DURATION]",
		Short: "Stop the sync service gracefully and wait until it has exited",
		Long: `stop sends SIGTERM to the sync service and waits until it has exited,
that is until it has released the lock on spool.dir/schedsync.pid. If it is
not running, stop says so and exits 0. If it has not exited within
--timeout, stop fails (exit 1) and leaves it to the operator to kill it.`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return a.stop(cmd.Context(), cfg, timeout)
		}),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second,
		"how long to wait for the service to exit")
	return cmd
}

func (a *app) stop(ctx context.Context, cfg *config.Config, timeout time.Duration) error {
	dir := cfg.Spool.Dir
	pid, running, err := service.Running(dir)
	if err != nil {
		return err
	}
	if !running {
		fmt.Fprintln(a.stdout, "schedsync is not running")
		return nil
	}
	pidPath := filepath.Join(dir, service.PidFileName)
	if pid <= 0 {
		return fmt.Errorf("the service holds the lock on %s but the file has no pid; "+
			"stop it with systemctl, or find it with `fuser %s`", pidPath, pidPath)
	}
	// While the lock is held, the pid is the holder's: a process that died
	// has released it, so the pid cannot have been reused.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("not allowed to signal the service (pid %d): run stop as its user or as root", pid)
		}
		if !errors.Is(err, syscall.ESRCH) { // ESRCH: it exited meanwhile
			return fmt.Errorf("send SIGTERM to the service (pid %d): %w", pid, err)
		}
	}
	if err := waitStopped(ctx, dir, timeout); err != nil {
		return fmt.Errorf("the service (pid %d) %w; see %s, or force it with kill -9 %d",
			pid, err, cfg.LogFilePath(), pid)
	}
	fmt.Fprintln(a.stdout, "schedsync stopped")
	return nil
}

// waitStopped waits until nothing holds the pid lock.
func waitStopped(ctx context.Context, dir string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(stopPoll)
	defer tick.Stop()
	for {
		_, running, err := service.Running(dir)
		if err != nil {
			return fmt.Errorf("could not be watched: %w", err)
		}
		if !running {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("has not exited within %s", timeout)
			}
			return errors.New("was still stopping when stop was interrupted")
		case <-tick.C:
		}
	}
}
