package main

import (
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newRestoreCmd() *cobra.Command {
	var in string
	cmd := &cobra.Command{
		Use:   "restore --in FILE",
		Short: "Slave: load a backup into the repository and set the applied position",
		Args:  cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return notImplemented("issue 6: backup, restore, resync")
		}),
	}
	cmd.Flags().StringVar(&in, "in", "", "the backup file to load (required)")
	_ = cmd.MarkFlagRequired("in") // cannot fail: the flag exists
	return cmd
}
