// failoverbench measures the data-loss window of an unplanned failover:
// under a steady load (pgbench -R, one row per transaction), the master
// service is killed (kill -9) and its database stopped (immediate) at
// once; the slave is promoted; the master's database is started again and
// the committed rows it holds are counted against the promoted slave's.
// It reports, per run, the transactions lost and the slave's lag just
// before the master died (lag_seconds on the slave, backlog bytes on the
// master), and how long promote took.
//
//	go run ./bench/failoverbench -modes trigger,logical -rate 1000 -runs 3
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/bench/benchkit"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

type options struct {
	modes  []string
	rate   int
	runs   int
	steady time.Duration
	keep   bool
}

func main() {
	var o options
	modes := flag.String("modes", "trigger,logical", "capture modes to measure")
	flag.IntVar(&o.rate, "rate", 1000, "transactions per second (pgbench -R)")
	flag.IntVar(&o.runs, "runs", 3, "failovers per mode")
	flag.DurationVar(&o.steady, "steady", 10*time.Second, "load before the master dies")
	flag.BoolVar(&o.keep, "keep", false, "keep the clusters and logs")
	flag.Parse()
	o.modes = strings.Split(*modes, ",")
	benchkit.Main("failoverbench", func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	dir, done, err := benchkit.WorkDir("failoverbench", o.keep)
	if err != nil {
		return err
	}
	defer done()
	bin := filepath.Join(dir, "schedsync")
	if err := benchkit.BuildBinary(ctx, bin); err != nil {
		return err
	}
	fmt.Printf("failoverbench: %s; %d tx/s, %s of load, then kill -9 of the master service and an immediate stop of its database\n",
		benchkit.Machine(), o.rate, o.steady)
	fmt.Println("mode     run  lost txns  slave lag, master backlog before the kill  kill to database stopped  promote")
	for _, mode := range o.modes {
		for i := 1; i <= o.runs; i++ {
			r, err := once(ctx, o, bin, filepath.Join(dir, fmt.Sprintf("%s-%d", mode, i)), mode)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", mode, i, err)
			}
			fmt.Printf("%-8s %3d  %9d  %16.3fs, %6d B  %23.3fs  %6.3fs\n", mode, i, r.lost, r.lag, r.backlog, r.stop.Seconds(), r.promote.Seconds())
		}
	}
	return nil
}

type result struct {
	lost    int64
	lag     float64 // the slave's lag_seconds just before the kill
	backlog int64
	stop    time.Duration // from the kill of the service to the database stopped: commits go on meanwhile
	promote time.Duration
}

type status struct {
	PID          int     `json:"pid"`
	Role         string  `json:"role"`
	State        string  `json:"state"`
	LagSeconds   float64 `json:"lag_seconds"`
	BacklogBytes int64   `json:"backlog_bytes"`
}

func statusOf(ctx context.Context, bin, config string) (status, error) {
	out, err := benchkit.Run(ctx, bin, config, "node", "status", "--json")
	var st status
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

func once(ctx context.Context, o options, bin, dir, mode string) (result, error) {
	var r result
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, err
	}
	master, err := pgtest.Start(ctx, pgtest.Options{Keep: o.keep, Settings: map[string]string{"wal_level": "logical"}})
	if err != nil {
		return r, err
	}
	defer master.Stop()
	slave, err := pgtest.Start(ctx, pgtest.Options{Keep: o.keep})
	if err != nil {
		return r, err
	}
	defer slave.Stop()
	const schema = `CREATE SEQUENCE ev; CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`
	var urls [2]string
	for i, c := range []*pgtest.Cluster{master, slave} {
		if urls[i], err = c.CreateDB(ctx, "sched"); err != nil {
			return r, err
		}
		if err := exec(ctx, urls[i], schema); err != nil {
			return r, err
		}
	}
	port, err := benchkit.FreePort()
	if err != nil {
		return r, err
	}
	sport, err := benchkit.FreePort()
	if err != nil {
		return r, err
	}
	common := func(listen int) []string {
		return []string{"capture.mode=" + mode, "sync.token=failoverbench", "sync.heartbeat=1s",
			"sync.listen=127.0.0.1:" + strconv.Itoa(listen), "master.host=127.0.0.1", "master.port=" + strconv.Itoa(port),
			"capture.poll_interval=200ms"}
	}
	mcfg, _, err := benchkit.WriteNodeConfig(dir, "master", "master", urls[0], common(port))
	if err != nil {
		return r, err
	}
	scfg, _, err := benchkit.WriteNodeConfig(dir, "slave", "slave", urls[1], common(sport))
	if err != nil {
		return r, err
	}
	for _, c := range []string{mcfg, scfg} {
		if _, err := benchkit.Run(ctx, bin, c, "node", "install"); err != nil {
			return r, err
		}
		if _, err := benchkit.Run(ctx, bin, c, "node", "start", "--wait", "30s"); err != nil {
			return r, err
		}
	}
	defer benchkit.Run(context.Background(), bin, scfg, "slave", "stop")
	script := filepath.Join(dir, "insert.sql")
	if err := os.WriteFile(script, []byte("INSERT INTO events (id) VALUES (nextval('ev'));\n"), 0o600); err != nil {
		return r, err
	}
	bctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		_, _ = benchkit.Pgbench(bctx, master.Bin("pgbench"), "-n", "-c", "4", "-j", "2", "-R", strconv.Itoa(o.rate),
			"-T", strconv.Itoa(int(o.steady.Seconds())+60), "-f", script, urls[0])
	}()
	select {
	case <-time.After(o.steady):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	ms, err := statusOf(ctx, bin, mcfg)
	if err != nil {
		return r, err
	}
	ss, err := statusOf(ctx, bin, scfg)
	if err != nil {
		return r, err
	}
	r.lag, r.backlog = ss.LagSeconds, ms.BacklogBytes
	killed := time.Now()
	if err := syscall.Kill(ms.PID, syscall.SIGKILL); err != nil {
		return r, err
	}
	if err := master.StopImmediate(); err != nil {
		return r, err
	}
	r.stop = time.Since(killed)
	stopLoad()
	<-loadDone
	began := time.Now()
	for {
		if _, err := benchkit.Run(ctx, bin, scfg, "slave", "promote"); err == nil {
			break
		} else if time.Since(began) > time.Minute {
			return r, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.promote = time.Since(began)
	if err := master.Restart(ctx); err != nil {
		return r, err
	}
	mCount, err := count(ctx, urls[0])
	if err != nil {
		return r, err
	}
	sCount, err := count(ctx, urls[1])
	if err != nil {
		return r, err
	}
	r.lost = mCount - sCount
	return r, nil
}

func exec(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func count(ctx context.Context, url string) (int64, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n)
	return n, err
}
