package main

import (
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newPromoteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "promote",
		Short: "Slave: apply what was received, stop applying and become the master",
		Long: `promote applies every change this slave has received, stops applying,
brings sequences up to date, makes this node a master (persistently) that
serves slaves on sync.listen, and runs failover.promote_command.`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return notImplemented("a later issue: failover")
		}),
	}
}
