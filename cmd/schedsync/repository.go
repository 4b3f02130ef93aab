package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
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
