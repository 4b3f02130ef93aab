package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

type startOptions struct {
	foreground bool
	wait       time.Duration
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
running it says so and exits 0.`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return notImplemented("issue 4: ship and the sync service")
		}),
	}
	cmd.Flags().BoolVar(&opts.foreground, "foreground", false,
		"run in the foreground, logging to stderr, until SIGTERM or SIGINT")
	cmd.Flags().DurationVar(&opts.wait, "wait", time.Minute,
		"how long to wait for a detached service to report that it is up")
	return cmd
}
