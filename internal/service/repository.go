package service

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
)

// RepositoryConnConfig is the connection config of every schedsync session
// on a repository: named "schedsync PURPOSE" in pg_stat_activity (unless
// repository.url names it), and writable even when the database is read
// only by default, as a switchover leaves a demoted master and a slave:
// the scheduler's sessions there are read only, schedsync's are not.
func RepositoryConnConfig(url, purpose string) (*pgx.ConnConfig, error) {
	c, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("repository.url: %w", err)
	}
	if _, set := c.RuntimeParams["application_name"]; !set {
		c.RuntimeParams["application_name"] = "schedsync " + purpose
	}
	c.RuntimeParams["default_transaction_read_only"] = "off"
	return c, nil
}

// MasterConnConfig is RepositoryConnConfig for a session on a master's
// repository. It commits with synchronous_commit = local: with
// synchronous_standby_names naming capture (failover.synchronous), every
// commit waits until capture reports it flushed, and capture would wait
// on its own writes (capture_state, its sequence samples), on install's
// and on backup's.
func MasterConnConfig(url, purpose string) (*pgx.ConnConfig, error) {
	c, err := RepositoryConnConfig(url, purpose)
	if err != nil {
		return nil, err
	}
	c.RuntimeParams["synchronous_commit"] = "local"
	return c, nil
}

// grantsFor is the privilege request of this node's repository as a
// master that installs capture (master) or as a slave that a fenced
// master becomes (fencedSlave), dropping its capture objects.
func grantsFor(cfg config.Config, master, fencedSlave bool) grants.Request {
	req := grants.ForConfig(&cfg, master)
	req.Master, req.Slave, req.Fence, req.Demote = master, fencedSlave, fencedSlave, fencedSlave
	return req
}

// checkGrants connects to the repository and checks that the role holds
// what req needs for work (grants.Check).
func checkGrants(ctx context.Context, connCfg *pgx.ConnConfig, req grants.Request, work string) error {
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return fmt.Errorf("connect to the repository: %w", err)
	}
	defer conn.Close(context.Background())
	return grants.Check(ctx, conn, req, work)
}
