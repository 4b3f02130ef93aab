package main

import (
	"context"
	"fmt"
	"time"
)

// native is PostgreSQL's own logical replication: a publication of the
// pgbench tables and lag_probe on the master, a subscription on the slave
// that starts from now (copy_data = false: the tables are already equal).
type native struct {
	w *world
}

const (
	pubName   = "lagbench"
	subName   = "lagbench"
	pubTables = "pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, lag_probe"
)

func (n *native) setup(ctx context.Context) error {
	if err := execOn(ctx, n.w.masterURL(), `CREATE PUBLICATION `+pubName+` FOR TABLE `+pubTables); err != nil {
		return fmt.Errorf("create publication: %w", err)
	}
	conninfo := fmt.Sprintf("host=%s port=%d dbname=%s user=postgres", n.w.master.Host, n.w.master.Port, dbName)
	err := execOn(ctx, n.w.slaveURL(), fmt.Sprintf(
		`CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (copy_data = false)`, subName, conninfo, pubName))
	if err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	return nil
}

// procs is empty: the walsender and the apply worker are server
// processes, which clusterProcs lists.
func (n *native) procs(context.Context) ([]proc, error) { return nil, nil }

func (n *native) stopSlave(ctx context.Context) error {
	if err := execOn(ctx, n.w.slaveURL(), `ALTER SUBSCRIPTION `+subName+` DISABLE`); err != nil {
		return err
	}
	return poll(ctx, 20*time.Millisecond, time.Minute, "stop the apply worker", func() (bool, error) {
		k, err := queryInt(ctx, n.w.slaveURL(), `SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL`)
		return k == 0, err
	})
}

// startSlave enables the subscription and returns once its apply worker
// runs, as `schedsync start` returns once the service is up.
func (n *native) startSlave(ctx context.Context) error {
	if err := execOn(ctx, n.w.slaveURL(), `ALTER SUBSCRIPTION `+subName+` ENABLE`); err != nil {
		return err
	}
	return poll(ctx, time.Millisecond, time.Minute, "start the apply worker", func() (bool, error) {
		k, err := queryInt(ctx, n.w.slaveURL(), `SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL`)
		return k > 0, err
	})
}

// waitCaptured has nothing to wait for: the changes are in the master's
// WAL, which the walsender decodes when the subscription comes back.
func (n *native) waitCaptured(context.Context) error { return nil }

func (n *native) catchUpWatch(context.Context) (func(context.Context) (catchUpState, error), error) {
	return nil, nil
}

func (n *native) close() {}

// execOn runs one statement on a connection of its own.
func execOn(ctx context.Context, url, sql string) error {
	conn, err := connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
