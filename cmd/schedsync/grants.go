package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
)

func (a *app) newGrantsCmd() *cobra.Command {
	var role, side string
	var missing, switchover bool
	cmd := &cobra.Command{
		Use:   "grants [--role NAME] [--side master|slave|both] [--switchover=false] [--missing]",
		Short: "Print the GRANT and ALTER ROLE statements schedsync's database role needs",
		Long: `grants connects to this node's repository and prints, as a SQL script
for a superuser, every privilege that schedsync's database role needs there:
for install, the sync service, backup, restore and resync, and switchover.
Each statement comes with a comment saying why; "(held)" marks those the
role already has, "(optional)" those that only turn on more (schema change
replication, grants for tables created later).

--role names the role (default: the one repository.url connects as; a role
that does not exist yet gets a CREATE ROLE). --side picks the needs of a
master, a slave, or both (the default: a failover swaps the roles, so every
node that may be promoted needs both). --switchover=false leaves out what
switchover and fencing need (the database's owner, pg_read_all_stats,
pg_signal_backend, and the tables' owner to drop the old master's capture
triggers): replication itself does not. --missing prints only
what the role lacks. install, start, backup, restore, resync and switchover check the
same list before they touch anything, and name what is missing.`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return a.runGrants(cmd.Context(), cfg, role, side, missing, switchover)
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "the database role (default: repository.url's)")
	cmd.Flags().StringVar(&side, "side", "both", "master, slave or both")
	cmd.Flags().BoolVar(&missing, "missing", false, "print only the statements the role lacks")
	cmd.Flags().BoolVar(&switchover, "switchover", true, "include what switchover and fencing need on a master")
	return cmd
}

func (a *app) runGrants(ctx context.Context, cfg *config.Config, role, side string, missing, switchover bool) error {
	req := grants.ForConfig(cfg, true)
	req.Role = role
	switch side {
	case "master":
		req.Master, req.Slave = true, false
	case "slave":
		req.Master, req.Slave = false, true
	case "both":
		req.Master, req.Slave = true, true
	default:
		return usageError(fmt.Errorf("--side %q: use master, slave or both", side))
	}
	// Fencing is the master's: the node that is master when a switchover
	// starts makes its repository read only.
	req.Fence = req.Master && switchover
	req.Demote = req.Fence
	conn, err := a.connectRepository(ctx, cfg, "grants")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	plan, err := grants.Work(ctx, conn, req)
	if err != nil {
		return fmt.Errorf("work out the privileges: %w", err)
	}
	fmt.Fprint(a.stdout, plan.Script(missing))
	return nil
}
