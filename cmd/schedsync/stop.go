package main

import (
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newStopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the sync service gracefully and wait until it has exited",
		Args:  cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return notImplemented("issue 4: ship and the sync service")
		}),
	}
}
