package main

import (
	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Slave: compare every replicated table with the master (exit 1 if they differ)",
		Args:  cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return notImplemented("issue 5: verify")
		}),
	}
}
