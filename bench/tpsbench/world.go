package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/bench/benchkit"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// dbName is the repository database on both clusters.
const dbName = "sched"

// world is the throwaway clusters every measurement uses: the master's
// repository, and with -with-slave the slave's.
type world struct {
	opts   options
	master *pgtest.Cluster
	slave  *pgtest.Cluster // nil without -with-slave
}

func newWorld(ctx context.Context, o options) (*world, error) {
	w := &world{opts: o}
	if err := w.setup(ctx); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// setup starts the clusters and creates the repository databases; the
// tables come with each measurement's pgbench -i.
func (w *world) setup(ctx context.Context) error {
	var err error
	// pgtest's defaults already set wal_level = logical, which logical
	// install checks, and enough slots and senders.
	if w.master, err = startCluster(ctx, "master", w.opts.keep); err != nil {
		return err
	}
	if !w.opts.withSlave {
		return nil
	}
	w.slave, err = startCluster(ctx, "slave", w.opts.keep)
	return err
}

func startCluster(ctx context.Context, role string, keep bool) (*pgtest.Cluster, error) {
	c, err := pgtest.Start(ctx, pgtest.Options{Keep: keep})
	if err != nil {
		return nil, fmt.Errorf("start the %s cluster: %w", role, err)
	}
	if _, err := c.CreateDB(ctx, dbName); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("%s cluster: %w", role, err)
	}
	return c, nil
}

func (w *world) masterURL() string { return w.master.URL(dbName) }
func (w *world) slaveURL() string  { return w.slave.URL(dbName) }

// clusters are the running clusters, the master first.
func (w *world) clusters() []*pgtest.Cluster {
	if w.slave == nil {
		return []*pgtest.Cluster{w.master}
	}
	return []*pgtest.Cluster{w.master, w.slave}
}

// initTables recreates pgbench's tables on every cluster. pgbench's
// initial data is the same every time (ids, zero balances, blank
// fillers), so master and slave start identical, and so does every
// measurement.
func (w *world) initTables(ctx context.Context) error {
	for _, c := range w.clusters() {
		if _, err := benchkit.Pgbench(ctx, c.Bin("pgbench"), "-i", "-q", "-s", fmt.Sprint(w.opts.scale), c.URL(dbName)); err != nil {
			return err
		}
	}
	return nil
}

// checkpoint flushes the dirty buffers pgbench -i left, so that the
// measurement does not pay for them in one mode and not in another.
func (w *world) checkpoint(ctx context.Context) error {
	return w.exec(ctx, w.masterURL(), "CHECKPOINT")
}

// exec runs one statement on a connection of its own.
func (w *world) exec(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect for %s: %w", sql, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// queryRow runs a one-row query on a connection of its own.
func (w *world) queryRow(ctx context.Context, url, sql string, dest any, args ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect for %s: %w", sql, err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// serverVersion is the master's PostgreSQL version string.
func (w *world) serverVersion(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, w.masterURL())
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, "SELECT version()").Scan(&v)
	return v, err
}

// close stops the clusters, the slave first; errors are only reported.
func (w *world) close() {
	var errs []error
	for _, c := range []*pgtest.Cluster{w.slave, w.master} {
		if c != nil {
			errs = append(errs, c.Stop())
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "tpsbench: stop the clusters:", err)
	}
}
