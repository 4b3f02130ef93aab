package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
	"github.com/schedsync/schedsync/internal/service"
)

// repositoryConnectTimeout bounds a connection attempt whose URL sets no
// connect_timeout, so that an unreachable host fails in seconds rather than
// after the kernel's TCP timeout.
const repositoryConnectTimeout = 30 * time.Second

// connectRepository opens a connection to this node's repository database.
// A URL that pgx cannot parse is a config error (exit 2); a database that
// cannot be reached is a failure (exit 1). Neither message shows a password:
// pgx redacts it from its errors.
func (a *app) connectRepository(ctx context.Context, cfg *config.Config, purpose string) (*pgx.Conn, error) {
	connConfig := service.RepositoryConnConfig
	if cfg.Node.Role == config.RoleMaster {
		connConfig = service.MasterConnConfig
	}
	pcfg, err := connConfig(cfg.Repository.URL, purpose)
	if err != nil {
		return nil, usageError(fmt.Errorf("config %s: %w", a.configPath, err))
	}
	if pcfg.ConnectTimeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, repositoryConnectTimeout)
		defer cancel()
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		// pgconn spreads one failure over several lines; keep it to one.
		cause := strings.NewReplacer("\n\t", " ", "\n", "; ").Replace(err.Error())
		return nil, fmt.Errorf("cannot connect to repository database (repository.url): %s; "+
			"check that PostgreSQL is running and the URL is right", cause)
	}
	return conn, nil
}

// asSlave is cfg for the work of a slave, whatever the node's role now:
// restore and resync make it one.
func asSlave(cfg *config.Config) *config.Config {
	c := *cfg
	c.Node.Role = config.RoleSlave
	return &c
}

// checkGrants connects to the repository and checks that its role holds
// what req needs for work, naming the statements it lacks.
func (a *app) checkGrants(ctx context.Context, cfg *config.Config, req grants.Request, work string) error {
	conn, err := a.connectRepository(ctx, cfg, "check privileges")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return grants.Check(ctx, conn, req, work)
}

// startGrantsTimeout bounds start's privilege check: a repository that
// does not answer by then is the service's to wait for and report.
const startGrantsTimeout = 5 * time.Second

// checkStartGrants checks, before the service starts, that the role of
// the node as it is now (service.Effective) holds what its service needs.
// A repository that cannot be reached is left to the service, which
// warns and retries: that is not a privilege problem.
func (a *app) checkStartGrants(ctx context.Context, cfg *config.Config) error {
	eff, _, err := service.Effective(*cfg)
	if err != nil {
		return nil // reported by the start itself
	}
	pcfg, err := service.RepositoryConnConfig(eff.Repository.URL, "check privileges")
	if err != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, startGrantsTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, pcfg)
	if err != nil {
		return nil
	}
	defer conn.Close(context.Background())
	req := grants.ForConfig(&eff, false)
	// With a witness, a master fences itself when it is cut off: it must
	// be able to.
	req.Fence = req.Master && eff.Failover.Witness != ""
	return grants.Check(cctx, conn, req, "the "+string(eff.Node.Role)+" service")
}
