package quartz

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// OpenPool opens a connection pool on url sized for a workload of opts
// (two connections per instance) plus extra for the caller's own use.
func OpenPool(ctx context.Context, url string, opts Options, extra int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(2*opts.Instances + extra)
	return pgxpool.NewWithConfig(ctx, cfg)
}
