package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
)

func (a *app) newInstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "install",
		Short: "Create the capture objects (master) or state tables (slave) in the repository",
		Long: `install creates schema schedsync in this node's repository database: on a
master the capture objects of capture.mode (trigger: the audit table and the
capture triggers on every replicated table; logical: a publication of the
replicated tables and a pgoutput replication slot, after checking wal_level
and the slot and sender limits), on a slave the state table that records
the applied position. It is idempotent: running it again changes only what
is missing, such as capture for tables created since.`,
		Args: cobra.NoArgs,
		RunE: a.withNodeConfig(a.runInstall),
	}
}

func (a *app) runInstall(cmd *cobra.Command, cfg *config.Config, _ []string) error {
	ctx := cmd.Context()
	conn, err := a.connectRepository(ctx, cfg, "install")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// Every privilege first, so that a role without them learns all the
	// statements at once instead of failing halfway.
	if err := grants.Check(ctx, conn, grants.ForConfig(cfg, true), "install"); err != nil {
		return err
	}
	report, err := capture.Install(ctx, conn, capture.InstallOptions{
		Schemas:   cfg.Repository.Schemas,
		Tables:    cfg.Repository.Tables,
		AllowNoPK: cfg.Capture.AllowNoPK,
		Role:      cfg.Node.Role,
		Mode:      cfg.Capture.Mode,
		DDL:       cfg.DDL.Replicate,
	})
	if err != nil {
		return err // capture's errors say what to do (e.g. capture.allow_no_pk)
	}
	printInstallReport(a.stdout, cfg, report)
	if cfg.Failover.Synchronous && cfg.Node.Role == config.RoleMaster {
		advice, err := capture.SynchronousCheck(ctx, conn)
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, advice)
	}
	return nil
}

// printInstallReport tells the operator what is captured and what this run
// changed, so that a second install visibly changes nothing.
func printInstallReport(w io.Writer, cfg *config.Config, r capture.InstallReport) {
	fmt.Fprintf(w, "installed schedsync on %s %s (%s)\n",
		cfg.Node.Role, cfg.Node.Name, config.RedactURL(cfg.Repository.URL))
	if r.SchemaCreated {
		fmt.Fprintln(w, "created or upgraded schema schedsync")
	}
	if cfg.Node.Role == config.RoleSlave {
		fmt.Fprintln(w, "the state tables are in place; the sync service will apply changes here")
		return
	}
	what := "triggers"
	if cfg.Capture.Mode == config.CaptureLogical {
		what = "publication membership"
		fmt.Fprintf(w, "capture.mode = logical: publication %s, replication slot %s", r.Publication, r.Slot)
		if r.SlotCreated {
			fmt.Fprint(w, " (created)")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "schema changes: %s\n", r.DDL)
	fmt.Fprintf(w, "captured tables (%d) in schemas %s:\n", len(r.Tables), strings.Join(cfg.Repository.Schemas, ", "))
	for _, t := range r.Tables {
		var notes []string
		if slices.Contains(r.Added, t) {
			notes = append(notes, what+" added")
		}
		if slices.Contains(r.IdentityFull, t) {
			notes = append(notes, "set to REPLICA IDENTITY FULL")
		}
		if slices.Contains(r.NoPK, t) {
			notes = append(notes, "no primary key: rows identified by the full row")
		}
		line := "  " + t
		if len(notes) > 0 {
			line += "  (" + strings.Join(notes, "; ") + ")"
		}
		fmt.Fprintln(w, line)
	}
	for _, t := range r.Removed {
		fmt.Fprintf(w, "  %s  (%s dropped: no longer matches repository.schemas / repository.tables)\n", t, what)
	}
	if len(r.Unlogged) > 0 {
		fmt.Fprintf(w, "warning: unlogged tables are NOT replicated, logical decoding cannot see their changes: %s; make them logged (ALTER TABLE ... SET LOGGED) or use capture.mode = trigger\n",
			strings.Join(r.Unlogged, ", "))
	}
	switch {
	case len(r.Tables) == 0:
		fmt.Fprintln(w, "warning: no table matches repository.schemas and repository.tables; nothing will be replicated")
	case len(r.Added) == 0 && len(r.Removed) == 0 && !r.SchemaCreated && !r.SlotCreated && len(r.IdentityFull) == 0:
		fmt.Fprintln(w, "nothing changed: everything was already installed")
	default:
		var parts []string
		if n := len(r.Added); n > 0 {
			parts = append(parts, fmt.Sprintf("added %s for %d tables", what, n))
		}
		if n := len(r.Removed); n > 0 {
			parts = append(parts, fmt.Sprintf("dropped them from %d", n))
		}
		if n := len(r.Tables) - len(r.Added); n > 0 {
			parts = append(parts, fmt.Sprintf("%d tables were already captured", n))
		}
		if len(parts) > 0 {
			fmt.Fprintln(w, strings.Join(parts, "; "))
		}
	}
}
