package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
)

func (a *app) newRefetchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "refetch",
		Short: "Slave: set a damaged spool aside, so that the next start fetches its changes from the master again",
		Long: `refetch is the way back from a corrupt slave spool. When the slave finds
a bad byte in a spool segment it stops, naming the segment and the offset,
and applies nothing past it. The changes the spool held are still on the
master, which keeps every change a slave has not applied (within
spool.max_backlog).

With the service stopped, refetch moves spool.dir/spool aside to
spool.dir/spool.damaged-<time> (kept for inspection; delete it once the
slave streams again). The next schedsync start fetches every change after
the applied position, which is in the slave repository, from the master.
If the master no longer has them, it refuses the slave with "run backup and
restore", and schedsync resync brings it back.`,
		Args: cobra.NoArgs,
		RunE: a.withNodeConfig(func(cmd *cobra.Command, cfg *config.Config, _ []string) error {
			return a.runRefetch(cmd.Context(), cfg)
		}),
	}
}

func (a *app) runRefetch(ctx context.Context, cfg *config.Config) error {
	if cfg.Node.Role != config.RoleSlave {
		return usageError(errors.New("refetch runs on a slave (this node is a master): a master's spool holds changes no other node has"))
	}
	lock, err := lockStoppedSlave(cfg.Spool.Dir, "stop it first (schedsync stop)")
	if err != nil {
		return err
	}
	defer lock.Release()
	from := filepath.Join(cfg.Spool.Dir, "spool")
	if _, err := os.Stat(from); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(a.stdout, "no spool in %s: the next start fetches from the master anyway\n", cfg.Spool.Dir)
		return nil
	}
	to := filepath.Join(cfg.Spool.Dir, "spool.damaged-"+time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("move the spool aside: %w", err)
	}
	after := "the applied position"
	if conn, err := a.connectRepository(ctx, cfg, "refetch"); err == nil {
		var applied int64
		if conn.QueryRow(ctx, `SELECT applied_position FROM schedsync.state WHERE id = 1`).Scan(&applied) == nil {
			after = fmt.Sprintf("applied position %d", applied)
		}
		conn.Close(context.Background())
	}
	fmt.Fprintf(a.stdout, "moved the spool aside to %s (delete it once the slave streams again); start the slave service (schedsync start) to fetch the changes after %s from the master\n", to, after)
	return nil
}
