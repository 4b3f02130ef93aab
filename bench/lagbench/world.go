package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/bench/benchkit"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// dbName is the repository database on both clusters.
const dbName = "sched"

// appName marks lagbench's own sessions, so that they are not counted as
// replication processes.
const appName = "lagbench"

// world is one mode's pair of throwaway clusters holding identical
// pgbench databases with the probe table.
type world struct {
	dir    string // this mode's directory: configs, spools, logs
	opts   options
	master *pgtest.Cluster
	slave  *pgtest.Cluster
	// probe connections: mConn inserts on the master, sConn looks on the slave
	mConn *pgx.Conn
	sConn *pgx.Conn
}

func newWorld(ctx context.Context, o options, parent, mode string) (*world, error) {
	w := &world{dir: filepath.Join(parent, mode), opts: o}
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		return nil, err
	}
	if err := w.setup(ctx); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *world) setup(ctx context.Context) error {
	var err error
	if w.master, err = pgtest.Start(ctx, pgtest.Options{Keep: w.opts.keep}); err != nil {
		return fmt.Errorf("start the master cluster: %w", err)
	}
	if w.slave, err = pgtest.Start(ctx, pgtest.Options{Keep: w.opts.keep}); err != nil {
		return fmt.Errorf("start the slave cluster: %w", err)
	}
	for _, c := range []*pgtest.Cluster{w.master, w.slave} {
		if err := initRepository(ctx, c, w.opts.scale); err != nil {
			return err
		}
	}
	if w.mConn, err = connect(ctx, w.masterURL()); err != nil {
		return err
	}
	if w.sConn, err = connect(ctx, w.slaveURL()); err != nil {
		return err
	}
	if w.opts.observe == "notify" {
		return w.listenProbes(ctx)
	}
	return nil
}

// probeChannel is what the slave's lag_probe trigger notifies, with the
// probe id as payload.
const probeChannel = "lag_probe"

// listenProbes makes the slave notify each probe row at commit, and
// listens on the slave connection.
func (w *world) listenProbes(ctx context.Context) error {
	_, err := w.sConn.Exec(ctx, `
		CREATE FUNCTION lag_probe_notify() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN PERFORM pg_notify('`+probeChannel+`', NEW.id::text); RETURN NULL; END $$;
		CREATE TRIGGER lag_probe_notify AFTER INSERT ON lag_probe FOR EACH ROW EXECUTE FUNCTION lag_probe_notify();
		ALTER TABLE lag_probe ENABLE ALWAYS TRIGGER lag_probe_notify;
		LISTEN `+probeChannel)
	if err != nil {
		return fmt.Errorf("make the slave notify probes: %w", err)
	}
	return nil
}

func (w *world) masterURL() string { return w.master.URL(dbName) }
func (w *world) slaveURL() string  { return w.slave.URL(dbName) }

// initRepository creates the database, loads pgbench's tables and adds
// lag_probe. pgbench's initial data is the same on every run (ids, zero
// balances, blank fillers), so two repositories initialised this way are
// identical.
func initRepository(ctx context.Context, c *pgtest.Cluster, scale int) error {
	url, err := c.CreateDB(ctx, dbName)
	if err != nil {
		return err
	}
	if _, err := benchkit.Pgbench(ctx, c.Bin("pgbench"), "-i", "-q", "-s", fmt.Sprint(scale), url); err != nil {
		return err
	}
	conn, err := connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `CREATE TABLE lag_probe (id bigint PRIMARY KEY, sent timestamptz NOT NULL DEFAULT clock_timestamp())`)
	if err != nil {
		return fmt.Errorf("create lag_probe: %w", err)
	}
	return nil
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = appName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	return conn, nil
}

// insertProbe inserts probe id on the master and returns when the commit
// has returned.
func (w *world) insertProbe(ctx context.Context, id int64) (time.Time, error) {
	if _, err := w.mConn.Exec(ctx, `INSERT INTO lag_probe (id) VALUES ($1)`, id); err != nil {
		return time.Time{}, fmt.Errorf("insert probe %d: %w", id, err)
	}
	return time.Now(), nil
}

// visible reports whether probe id is on the slave. The statement is
// prepared once (pgx's statement cache), so each look is one round trip.
func (w *world) visible(ctx context.Context, id int64) (bool, error) {
	var ok bool
	err := w.sConn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lag_probe WHERE id = $1)`, id).Scan(&ok)
	return ok, err
}

// waitVisible waits until probe id is on the slave: it polls every
// opts.poll, or waits for the probe's notification.
func (w *world) waitVisible(ctx context.Context, id int64, limit time.Duration) (time.Time, error) {
	if w.opts.observe == "notify" {
		return w.waitNotified(ctx, id, limit)
	}
	deadline := time.Now().Add(limit)
	for {
		ok, err := w.visible(ctx, id)
		now := time.Now()
		switch {
		case err != nil:
			return now, fmt.Errorf("look for probe %d on the slave: %w", id, err)
		case ok:
			return now, nil
		case now.After(deadline):
			return now, fmt.Errorf("probe %d not on the slave after %s", id, limit)
		}
		time.Sleep(w.opts.poll)
	}
}

// waitNotified waits for the slave's notification of probe id; those of
// earlier probes, already measured, are skipped.
func (w *world) waitNotified(ctx context.Context, id int64, limit time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	want := strconv.FormatInt(id, 10)
	for {
		n, err := w.sConn.WaitForNotification(ctx)
		now := time.Now()
		if err != nil {
			return now, fmt.Errorf("wait for probe %d on the slave: %w", id, err)
		}
		if n.Payload == want {
			return now, nil
		}
	}
}

// waitProbe sends one probe and waits for it.
func (w *world) waitProbe(ctx context.Context, id int64, limit time.Duration) error {
	if _, err := w.insertProbe(ctx, id); err != nil {
		return err
	}
	_, err := w.waitVisible(ctx, id, limit)
	return err
}

// queryInt runs a one-value query on a connection of its own.
func queryInt(ctx context.Context, url, sql string, args ...any) (int64, error) {
	conn, err := connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// close stops the clusters; the slave first, so that a native
// subscription does not keep the master's walsender waiting.
func (w *world) close() {
	for _, c := range []*pgx.Conn{w.mConn, w.sConn} {
		if c != nil {
			_ = c.Close(context.Background())
		}
	}
	var errs []error
	for _, c := range []*pgtest.Cluster{w.slave, w.master} {
		if c != nil {
			errs = append(errs, c.Stop())
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "lagbench:", err)
	}
}
