package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

// promoteTimeout bounds the whole promote: applying what was received
// (service.promoteApplyTimeout) and installing capture, plus the start.
const promoteTimeout = 8 * time.Minute

func (a *app) newPromoteCmd() *cobra.Command {
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "promote [--force]",
		Short: "Slave: apply what was received, stop applying and become the master",
		Long: `promote is the unplanned failover: the master is gone. It applies every change
this slave has received, stops applying, brings sequences up to date,
installs capture (a new capture history that continues the old master's
from the position applied), records the next generation (in spool.dir and
in schedsync.state) and the role master, serves slaves on sync.listen and
runs failover.promote_command. It prints the generation and the last
position applied from the old master, and how old it is.

It refuses while this slave's master still streams to it (use switchover
for a planned change), unless --force. With --force it also promotes when
apply cannot apply everything received; what was not applied is kept in a
directory of spool.dir, and named. Run on a master, it says so, runs
failover.promote_command again (a promote cut short may not have run it)
and exits 0.`,
		Args: cobra.NoArgs,
		RunE: a.withConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), promoteTimeout)
			defer cancel()
			res, err := a.promote(ctx, cfg, force)
			if err != nil {
				return err
			}
			if asJSON {
				out, _ := json.MarshalIndent(res, "", "  ")
				fmt.Fprintf(a.stdout, "%s\n", out)
			} else {
				printPromote(a.stdout, res)
			}
			if res.HookError != "" {
				return fmt.Errorf("promoted, but %s", res.HookError)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "promote even while the master still streams, or when apply cannot apply everything received")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	return cmd
}

func (a *app) promote(ctx context.Context, cfg *config.Config, force bool) (service.PromoteResult, error) {
	eff, ns, err := service.Effective(*cfg)
	if err != nil {
		return service.PromoteResult{}, err
	}
	if eff.Node.Role == config.RoleMaster {
		// A promote cut short after it recorded the role may not have
		// run the hook: run it again (hooks must be idempotent).
		res := service.PromoteResult{Name: cfg.Node.Name, Generation: max(ns.Generation, 1), AlreadyMaster: true, Listen: cfg.Sync.Listen}
		if err := service.RunHook(ctx, eff, cliLogger(a.stderr), service.HookPromote, config.RoleMaster, res.Generation); err != nil {
			res.HookError = err.Error()
		}
		return res, nil
	}
	if cfg.Sync.Listen == "" {
		return service.PromoteResult{}, usageError(errors.New("sync.listen is not set: a promoted node serves its slaves there; set it and run promote again"))
	}
	args := []string{}
	if force {
		args = append(args, "--force")
	}
	raw, err := service.Request(ctx, cfg.Spool.Dir, "promote", args...)
	var res service.PromoteResult
	switch {
	case errors.Is(err, service.ErrNotRunning):
		// No service: promote here, under its lock, then start the master.
		pid, perr := service.AcquirePidFile(cfg.Spool.Dir)
		if perr != nil {
			return res, fmt.Errorf("the slave service is starting or stopping; run promote again: %w", perr)
		}
		res, err = service.PromoteStopped(ctx, eff, cliLogger(a.stderr), force)
		if rerr := pid.Release(); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return res, err
		}
		return res, a.startDetached(ctx, cfg, startOptions{wait: 30 * time.Second, waitGiven: true})
	case err != nil:
		return res, err
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("decode the promote result: %w", err)
	}
	// The service starts the master in the same process: wait for it.
	return res, a.waitMaster(ctx, cfg, res.Generation)
}

func printPromote(w io.Writer, res service.PromoteResult) {
	if res.AlreadyMaster {
		fmt.Fprintf(w, "%s is already the master (generation %d); nothing to do but failover.promote_command, run again\n", res.Name, res.Generation)
		return
	}
	fmt.Fprintf(w, "promoted %s to master: generation %d, serving slaves on %s\n", res.Name, res.Generation, res.Listen)
	age := "unknown age"
	if !res.AppliedAt.IsZero() {
		age = fmt.Sprintf("%s old (%s)", time.Since(res.AppliedAt).Round(time.Millisecond), res.AppliedAt.UTC().Format(time.RFC3339Nano))
	}
	fmt.Fprintf(w, "last position applied from the old master: %d, %s\n", res.AppliedPosition, age)
	fmt.Fprintf(w, "capture history %s continues from position %d; %d sequence(s) raised to their columns\n",
		res.CaptureEpoch, res.AppliedPosition, res.SequencesRaised)
	if res.Dropped > 0 {
		fmt.Fprintf(w, "NOT APPLIED: %d received transaction(s), kept in %s\n", res.Dropped, res.DroppedDir)
	}
	if line := syncLine(res); line != "" {
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "took %.3fs\n", res.TookSeconds)
}

// syncLine says what the old master's failover.synchronous means for what
// this promotion may have lost.
func syncLine(res service.PromoteResult) string {
	ms := res.MasterSynchronous
	switch {
	case ms == nil || res.Dropped > 0:
		return ""
	case ms.State == service.SyncDegraded:
		return fmt.Sprintf("the old master was ASYNCHRONOUS since %s (failover.synchronous degraded: no slave held its commits): what it committed since then and did not ship may be lost",
			ms.DegradedSince.Format(time.RFC3339))
	case ms.SynchronousSlaves >= ms.Slaves:
		return fmt.Sprintf("nothing acknowledged was lost: the old master was synchronous (failover.synchronous), every commit it acknowledged was held by its %d slave(s) first, as last heard %s",
			ms.Slaves, ms.Heard.Format(time.RFC3339))
	default:
		return fmt.Sprintf("the old master was synchronous with %d of its %d slaves: every commit it acknowledged is on %d of them, not necessarily this one; promote the slave with the highest received_position",
			ms.SynchronousSlaves, ms.Slaves, ms.SynchronousSlaves)
	}
}
