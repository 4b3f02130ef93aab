package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

func (a *app) newSwitchoverCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "switchover",
		Short: "Slave: planned, zero-loss role swap with a live master",
		Long: `switchover swaps the roles of this slave and its master while both run. The
master runs failover.demote_command, makes its repository read only for
every session but schedsync's, and reports its final position; this slave
applies up to it and promotes itself (next generation, failover.promote_command);
the old master then clears its capture state and streams from this node as
its slave, without a re-seed: nothing was lost. If any step fails before
the new master takes over, the master is made writable again and runs
failover.promote_command, and both nodes keep their roles.`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			eff, _, err := service.Effective(*cfg)
			if err != nil {
				return err
			}
			if eff.Node.Role != config.RoleSlave {
				return usageError(errors.New("switchover runs on the slave that is to become master"))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), promoteTimeout)
			defer cancel()
			raw, err := service.Request(ctx, cfg.Spool.Dir, "switchover")
			if errors.Is(err, service.ErrNotRunning) {
				return errors.New("the slave service is not running: a switchover needs both services up and streaming (schedsync start)")
			}
			if err != nil {
				return err
			}
			var res service.SwitchoverResult
			if err := json.Unmarshal(raw, &res); err != nil {
				return fmt.Errorf("decode the switchover result: %w", err)
			}
			if err := a.waitMaster(ctx, cfg, res.Promote.Generation); err != nil {
				return err
			}
			if asJSON {
				out, _ := json.MarshalIndent(res, "", "  ")
				fmt.Fprintf(a.stdout, "%s\n", out)
			} else {
				fmt.Fprintf(a.stdout, "switched over: %s is the master (generation %d) at the old master's final position %d; the old master at %s follows it\n",
					res.Promote.Name, res.Promote.Generation, res.FinalPosition, res.OldMaster)
				fmt.Fprintf(a.stdout, "took %.3fs\n", res.TookSeconds)
			}
			if res.Promote.HookError != "" {
				return fmt.Errorf("switched over, but %s", res.Promote.HookError)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	return cmd
}

// waitMaster waits until the service, which turned into the master in its
// process, serves.
func (a *app) waitMaster(ctx context.Context, cfg *config.Config, generation uint64) error {
	for {
		st, qerr := service.QueryStatus(ctx, cfg.Spool.Dir)
		if qerr == nil && st.Role == string(config.RoleMaster) && st.State != service.StateStarting {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promoted (generation %d), but the master service did not come up: see %s", generation, cfg.LogFilePath())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
