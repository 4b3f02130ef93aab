package main

import (
	"context"
	"fmt"
	"time"
)

// modeNative is PostgreSQL's own logical replication: a publication of
// every table on the master and a subscription on the slave (which
// -with-slave starts), applying as schedsync's slave does.
const modeNative = "native"

// nativeReplication is the publication and the subscription of one
// measurement.
type nativeReplication struct{ w *world }

// startNative sets native replication up on identical data (pgbench -i on
// both sides) and waits until the subscription streams.
func startNative(ctx context.Context, w *world) (*nativeReplication, error) {
	if w.slave == nil {
		return nil, fmt.Errorf("mode native needs -with-slave")
	}
	n := &nativeReplication{w: w}
	if err := w.exec(ctx, w.masterURL(), `CREATE PUBLICATION tpsbench_native FOR ALL TABLES`); err != nil {
		return nil, err
	}
	sql := fmt.Sprintf(`CREATE SUBSCRIPTION tpsbench_native CONNECTION '%s' PUBLICATION tpsbench_native WITH (copy_data = false)`, w.masterURL())
	if err := w.exec(ctx, w.slaveURL(), sql); err != nil {
		n.stop()
		return nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var streaming bool
		err := w.queryRow(ctx, w.slaveURL(), `SELECT count(*) > 0 FROM pg_stat_subscription WHERE subname = 'tpsbench_native' AND pid IS NOT NULL AND received_lsn IS NOT NULL`, &streaming)
		switch {
		case err != nil:
			n.stop()
			return nil, err
		case streaming:
			return n, nil
		case time.Now().After(deadline):
			n.stop()
			return nil, fmt.Errorf("the native subscription does not stream after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// drain waits until the subscription has applied everything the master
// wrote, so that the next measurement does not pay for this one.
func (n *nativeReplication) drain(ctx context.Context, limit time.Duration) error {
	var target string
	if err := n.w.queryRow(ctx, n.w.masterURL(), `SELECT pg_current_wal_lsn()::text`, &target); err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		var done bool
		err := n.w.queryRow(ctx, n.w.masterURL(),
			`SELECT coalesce(bool_and(replay_lsn >= $1::pg_lsn), false) FROM pg_stat_replication WHERE application_name = 'tpsbench_native'`, &done, target)
		switch {
		case err != nil:
			return err
		case done:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("the native subscription did not apply up to %s in %s", target, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop drops the subscription (and with it the master's slot) and the
// publication.
func (n *nativeReplication) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = n.w.exec(ctx, n.w.slaveURL(), `DROP SUBSCRIPTION IF EXISTS tpsbench_native`)
	_ = n.w.exec(ctx, n.w.masterURL(), `DROP PUBLICATION IF EXISTS tpsbench_native`)
}
