package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/capture"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

// stateUnknown is reported for a service that holds its pid lock but does
// not answer on its control socket.
const stateUnknown = "unknown"

func (a *app) newStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show role, state, positions, lag and backlog (per slave on a master)",
		Long: `status asks the running sync service for its state. When the service is
not running it shows the last known positions (kept in spool.dir/status.json)
with running false, and state stopped, or the state it ended in
(needs_resync, failed). Exit 0, or 1 if the service runs but does not
answer.`,
		Args: cobra.NoArgs,
		RunE: a.withNodeConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			st, err := a.currentStatus(cmd.Context(), cfg)
			if asJSON {
				out, merr := json.MarshalIndent(st, "", "  ")
				if merr != nil {
					return merr
				}
				fmt.Fprintf(a.stdout, "%s\n", out)
			} else {
				printStatus(a.stdout, st)
			}
			return err
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object instead of text")
	return cmd
}

// currentStatus asks the service, and falls back on the status file when
// it is not running. The error (exit 1) is for a service that holds its
// pid lock but cannot be asked; the status is printed anyway.
func (a *app) currentStatus(ctx context.Context, cfg *config.Config) (service.Status, error) {
	dir := cfg.Spool.Dir
	st, qerr := service.QueryStatus(ctx, dir)
	if qerr == nil {
		return st, nil
	}
	pid, running, err := service.Running(dir)
	if err != nil {
		return service.Status{Role: string(cfg.Node.Role), Name: cfg.Node.Name, State: stateUnknown}, err
	}
	last, ferr := service.LastKnownStatus(dir, cfg.Node.Role, cfg.Node.Name)
	if ferr != nil {
		fmt.Fprintf(a.stderr, "schedsync status: ignoring the status file: %v\n", ferr)
	}
	if !running {
		a.addSlotFigures(ctx, cfg, &last)
		return last, nil
	}
	last.Running, last.PID = true, pid
	if errors.Is(qerr, service.ErrNotRunning) {
		// The lock is taken but the socket is not there yet: the service
		// is between the two, starting.
		last.State, last.Error = service.StateStarting, ""
		return last, nil
	}
	last.State, last.Error = stateUnknown, qerr.Error()
	return last, fmt.Errorf("the service (pid %d) is running but does not answer: %w", pid, qerr)
}

// addSlotFigures reads a stopped logical master's slot from the repository:
// a slot nobody reads keeps WAL on the master, the classic way logical
// replication fills a disk, so status shows it even with the service down.
func (a *app) addSlotFigures(ctx context.Context, cfg *config.Config, st *service.Status) {
	if cfg.Node.Role != config.RoleMaster || cfg.Capture.Mode != config.CaptureLogical {
		return
	}
	st.CaptureMode = string(cfg.Capture.Mode)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := a.connectRepository(ctx, cfg, "status")
	if err != nil {
		fmt.Fprintf(a.stderr, "schedsync status: cannot read the replication slot: %v\n", err)
		return
	}
	defer conn.Close(context.Background())
	slot, retained, ok, err := capture.ReadSlot(ctx, conn)
	if err != nil {
		fmt.Fprintf(a.stderr, "schedsync status: cannot read the replication slot: %v\n", err)
		return
	}
	st.Slot = slot
	if ok {
		st.SlotRetainedWALBytes = &retained
	}
}
