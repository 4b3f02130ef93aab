package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newUninstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "uninstall",
		Short: "Drop the capture triggers and schema schedsync from the repository",
		Long: `uninstall drops everything install created in this node's repository
database: the capture triggers, and schema schedsync with the audit and state
tables. The scheduler's own tables and rows are left alone. It is
idempotent. A slave that is uninstalled forgets its applied position and
must be re-seeded (backup and restore) before it replicates again.`,
		Args: cobra.NoArgs,
		RunE: a.withNodeConfig(a.runUninstall),
	}
}

func (a *app) runUninstall(cmd *cobra.Command, cfg *config.Config, _ []string) error {
	ctx := cmd.Context()
	conn, err := a.connectRepository(ctx, cfg, "uninstall")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := capture.Uninstall(ctx, conn); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "uninstalled schedsync from %s %s (%s)\n",
		cfg.Node.Role, cfg.Node.Name, config.RedactURL(cfg.Repository.URL))
	return nil
}
