package main

import (
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newResyncCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "resync [--force]",
		Short: "Slave, cron-safe: re-seed from the master if the slave needs it",
		Long: `resync checks whether this slave needs a re-sync (the master refused it for
its backlog). If it does, or with --force, it fetches a backup from the
master over the sync port, restores it and leaves the slave service running
and streaming; otherwise it says that nothing is needed and exits 0. Two
resyncs never run at once, so it is safe to run from cron (see
configs/crontab).`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return notImplemented("issue 6: backup, restore, resync")
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "re-sync even if the slave does not need it")
	return cmd
}
