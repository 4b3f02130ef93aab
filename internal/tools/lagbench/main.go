// Command lagbench measures end-to-end replication lag (commit on the
// master until the row is visible on the slave) at a steady pgbench rate,
// and apply throughput for a backlog, for schedsync and, on the same
// machine in the same run, for PostgreSQL's native logical replication.
//
//	go run ./internal/tools/lagbench [-rate 1000] [-duration 30s] [-mode schedsync|native|both]
//
// For each mode it starts two throwaway clusters (internal/pgtest), runs
// `pgbench -i -s 1` on both (pgbench's initial data is deterministic, so
// master and slave start identical) and adds a probe table lag_probe to
// both. schedsync mode then installs and starts a master and a slave
// service with the built binary (or -bin) and generated .properties files;
// native mode creates a publication and a subscription (copy_data = false).
//
// Lag: pgbench runs its TPC-B-like script (3 updates and 1 insert per
// transaction) on the master at -rate transactions per second. Meanwhile a
// probe inserts a row into lag_probe every -probe-every (autocommit; t0 is
// when the INSERT returned) and polls the slave on its own connection
// every -poll until the row is visible (t1); lag is t1 - t0. With
// -observe notify it LISTENs instead, and an ENABLE ALWAYS trigger on the
// slave's lag_probe (it fires under session_replication_role = replica,
// which both systems apply with) notifies at commit: no polling load on a
// small machine, no polling granularity. The figures are p50, p90, p99
// and max of the samples, with pgbench's achieved rate and latency, and the
// CPU time and run-queue time (runnable, waiting for a CPU) of every
// process of the measurement, labelled by what it does.
//
// Backlog: the slave stops (`schedsync stop`, or ALTER SUBSCRIPTION ...
// DISABLE), pgbench runs unthrottled for -backlog-duration (or
// -backlog-txns transactions), a marker row is inserted last, and once the
// master has captured everything the slave starts again; the catch-up time
// is until the marker is visible on the slave. Throughput is pgbench's
// transactions (4 row changes each) over that time.
//
// It is a measuring tool, not a test: it asserts nothing about speed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/internal/tools/benchkit"
)

type options struct {
	rate        int
	duration    time.Duration
	mode        string
	bin         string
	clients     int
	threads     int
	scale       int
	probeEvery  time.Duration
	observe     string
	poll        time.Duration
	warmup      time.Duration
	backlogDur  time.Duration
	backlogTxns int
	skipBacklog bool
	keep        bool
	logLevel    string
}

func parseFlags() options {
	var o options
	flag.IntVar(&o.rate, "rate", 1000, "pgbench --rate: transactions per second on the master")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "how long pgbench runs at -rate")
	flag.StringVar(&o.mode, "mode", "both", "schedsync, native or both")
	flag.StringVar(&o.bin, "bin", "", "schedsync binary to use instead of building ./cmd/schedsync")
	flag.IntVar(&o.clients, "clients", 4, "pgbench -c")
	flag.IntVar(&o.threads, "threads", 2, "pgbench -j")
	flag.IntVar(&o.scale, "scale", 1, "pgbench -i -s")
	flag.DurationVar(&o.probeEvery, "probe-every", 20*time.Millisecond, "interval between two lag probes")
	flag.StringVar(&o.observe, "observe", "poll", "how a probe is seen on the slave: poll (SELECT every -poll) or notify (LISTEN; an ALWAYS trigger on the slave's lag_probe notifies)")
	flag.DurationVar(&o.poll, "poll", 200*time.Microsecond, "interval between two looks at the slave for a probe")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "pgbench time before the first probe")
	flag.DurationVar(&o.backlogDur, "backlog-duration", 20*time.Second, "unthrottled pgbench time while the slave is stopped")
	flag.IntVar(&o.backlogTxns, "backlog-txns", 0, "pgbench transactions while the slave is stopped, instead of -backlog-duration (the same backlog for both modes)")
	flag.BoolVar(&o.skipBacklog, "skip-backlog", false, "measure lag only")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, spools, logs) and the clusters' files")
	flag.StringVar(&o.logLevel, "log-level", "info", "log.level of the schedsync services")
	flag.Parse()
	if o.mode != "schedsync" && o.mode != "native" && o.mode != "both" {
		usage("-mode must be schedsync, native or both")
	}
	if o.observe != "poll" && o.observe != "notify" {
		usage("-observe must be poll or notify")
	}
	if o.rate < 1 || o.clients < 1 || o.threads < 1 || o.scale < 1 || o.duration <= o.warmup ||
		o.probeEvery <= 0 || o.poll <= 0 || o.backlogDur <= 0 || o.backlogTxns < 0 {
		usage("-rate, -clients, -threads and -scale must be at least 1, -duration longer than -warmup, intervals positive")
	}
	return o
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "lagbench:", msg)
	os.Exit(2)
}

func (o options) modes() []string {
	if o.mode == "both" {
		return []string{"schedsync", "native"}
	}
	return []string{o.mode}
}

func main() {
	o := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "lagbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	printMachine()
	dir, err := os.MkdirTemp("", "lagbench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.bin == "" && o.mode != "native" {
		o.bin = filepath.Join(dir, "bin", "schedsync")
		if err = benchkit.BuildBinary(ctx, o.bin); err != nil {
			return err
		}
	}
	var results []modeResult
	for _, mode := range o.modes() {
		r, err := runMode(ctx, o, dir, mode)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		printModeResult(r)
		results = append(results, r)
	}
	printSummary(o, results)
	return nil
}

// runMode measures one replication system on fresh clusters and cleans up
// after itself.
func runMode(ctx context.Context, o options, dir, mode string) (modeResult, error) {
	r := modeResult{Mode: mode}
	fmt.Printf("\n== %s: starting two clusters, pgbench -i -s %d on both\n", mode, o.scale)
	w, err := newWorld(ctx, o, dir, mode)
	if err != nil {
		return r, err
	}
	defer w.close()
	sys := newSystem(mode, w, o)
	defer sys.close()
	if err := sys.setup(ctx); err != nil {
		return r, err
	}
	if err := w.waitProbe(ctx, 0, time.Minute); err != nil {
		return r, fmt.Errorf("replication does not carry the first probe: %w", err)
	}
	fmt.Printf("%s streams; measuring lag at %d tx/s for %s\n", mode, o.rate, o.duration)
	if r.Lag, err = measureLag(ctx, o, w, sys); err != nil {
		return r, err
	}
	if o.skipBacklog {
		return r, nil
	}
	fmt.Printf("%s: building a backlog with unthrottled pgbench for %s\n", mode, o.backlogDur)
	r.Backlog, err = measureBacklog(ctx, o, w, sys)
	return r, err
}
