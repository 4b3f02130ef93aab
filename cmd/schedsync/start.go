package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

type startOptions struct {
	foreground bool
	wait       time.Duration
	waitGiven  bool // --wait on the command line: passed on to the detached service
}

func (a *app) newStartCmd() *cobra.Command {
	var opts startOptions
	cmd := &cobra.Command{
		Use:   "start [--foreground] [--wait DURATION]",
		Short: "Start the sync service for this node's role",
		Long: `start runs the sync service for this node's role (node.role). Without
--foreground it detaches, writes a pid file and a log file in spool.dir, and
returns once the service is up (exit 0) or has failed (non-zero; 3 if the
master refuses this slave for its backlog). If the service is already
running it says so and exits 0. If it has not come up within --wait plus a
minute, or start is interrupted, start stops it again: a non-zero exit
leaves nothing running.

--foreground runs the service in this process, for systemd: logs go to
log.file, else stderr; SIGTERM or SIGINT stops it gracefully (within 30s),
a second signal at once. With NOTIFY_SOCKET set it tells systemd when it is
ready (Type=notify). A service already running is an error (exit 1) here,
since this process did not start it.

--wait bounds how long the service keeps retrying what keeps it from
coming up (a slave: reaching its master) before it gives up with the
error; 0 means it gives up at the first failure.`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			if _, err := service.SocketPath(cfg.Spool.Dir); err != nil {
				return usageError(fmt.Errorf("config %s: %w", a.configPath, err))
			}
			opts.waitGiven = cmd.Flags().Changed("wait")
			if err := a.checkStartGrants(cmd.Context(), cfg); err != nil {
				return err
			}
			if opts.foreground {
				return a.runForeground(cmd.Context(), cfg, opts)
			}
			return a.startDetached(cmd.Context(), cfg, opts)
		}),
	}
	cmd.Flags().BoolVar(&opts.foreground, "foreground", false,
		"run in the foreground, logging to log.file or stderr, until SIGTERM or SIGINT")
	cmd.Flags().DurationVar(&opts.wait, "wait", 0,
		"how long the service keeps retrying to come up, e.g. a slave reaching its master (0: no retry)")
	return cmd
}

// startedMessage is what a detached start prints once the service is up.
// It names the node's role now (persisted after a failover, see
// service.Effective).
func startedMessage(file *config.Config, pid int) string {
	cfg := file
	if eff, _, err := service.Effective(*file); err == nil {
		cfg = &eff
	}
	if cfg.Node.Role == config.RoleSlave {
		return fmt.Sprintf("schedsync slave started (pid %d), streaming from %s", pid, cfg.Master.Addr())
	}
	return fmt.Sprintf("schedsync %s started (pid %d), listening on %s", cfg.Node.Role, pid, cfg.Sync.Listen)
}
