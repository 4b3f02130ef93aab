package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

func (a *app) newVerifyCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Slave: compare every replicated table with the master (exit 1 if they differ)",
		Long: `verify asks the running slave service to compare every replicated table with
the master. The master computes checksums in the snapshot of a capture poll,
which equals exactly one spool position; the slave holds apply at that very
position and checksums its own tables, so a master that keeps writing gives
neither false differences nor missed ones. It goes through the sync port: the
slave needs no credentials for the master database.

Exit 0 when every table is equal, 1 with the differing tables (and the
key-hash buckets of each where rows differ) otherwise. A slave whose data
belongs to another capture history than the master's changes (capture was
installed again on the master), or that the master refused and that needs a
re-sync, is reported as different too.`,
		Args: cobra.NoArgs,
		RunE: a.withNodeConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			if cfg.Node.Role != "slave" {
				return usageError(errors.New("verify runs on a slave (node.role = slave)"))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 11*time.Minute)
			defer cancel()
			raw, err := service.Request(ctx, cfg.Spool.Dir, "verify")
			if errors.Is(err, service.ErrNotRunning) {
				return fmt.Errorf("the slave service is not running; start it first (verify compares through its connection to the master)")
			}
			if err != nil {
				return err
			}
			var res service.VerifyResult
			if err := json.Unmarshal(raw, &res); err != nil {
				return fmt.Errorf("decode the verify result: %w", err)
			}
			if asJSON {
				fmt.Fprintf(a.stdout, "%s\n", raw)
			} else {
				printVerify(a.stdout, res)
			}
			if !res.Equal {
				return &exitError{code: exitFailure, err: fmt.Errorf("%d difference(s) between master and slave", len(res.Differences))}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	return cmd
}

func printVerify(w io.Writer, res service.VerifyResult) {
	if len(res.Tables) == 0 && !res.Equal {
		fmt.Fprintf(w, "DIFFERENT:\n")
		for _, d := range res.Differences {
			fmt.Fprintf(w, "  %s: %s\n", d.Table, d.What)
		}
		return
	}
	fmt.Fprintf(w, "verified at position %d\n", res.Position)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tMASTER ROWS\tSLAVE ROWS\tRESULT")
	for _, t := range res.Tables {
		result := "equal"
		if !t.Equal {
			result = "DIFFERENT"
		}
		if !t.SlaveExists {
			result = "MISSING ON SLAVE"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", t.Table, t.MasterRows, t.SlaveRows, result)
	}
	tw.Flush()
	if res.Equal {
		fmt.Fprintf(w, "all %d tables equal\n", len(res.Tables))
		return
	}
	var lines []string
	for _, d := range res.Differences {
		lines = append(lines, fmt.Sprintf("  %s: %s", d.Table, d.What))
	}
	fmt.Fprintf(w, "differences:\n%s\n", strings.Join(lines, "\n"))
}
