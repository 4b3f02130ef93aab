package main

import (
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newBackupCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Master: write a consistent snapshot of the replicated tables and its position",
		Args:  cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return notImplemented("issue 6: backup, restore, resync")
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write (required)")
	_ = cmd.MarkFlagRequired("out") // cannot fail: the flag exists
	return cmd
}
