// Command lagbench measures end-to-end replication lag (commit on the
// master until the row is visible on the slave) at a steady pgbench rate,
// and apply throughput for a backlog, for schedsync in each of its capture
// modes and, on the same machine in the same run, for PostgreSQL's native
// logical replication.
//
//	go run ./bench/lagbench [-rate 1000] [-duration 30s] [-mode trigger,logical,native]
//
// -mode is a comma-separated list of trigger (schedsync with
// capture.mode = trigger), logical (schedsync with capture.mode = logical:
// a pgoutput replication slot) and native; all (the default) is all three,
// schedsync is trigger and both is trigger,native, as before logical
// capture existed. Results are labelled schedsync-trigger,
// schedsync-logical and native.
//
// For each mode it starts two throwaway clusters (internal/testkit/pgtest, with
// wal_level = logical), runs `pgbench -i -s 1` on both (pgbench's initial
// data is deterministic, so master and slave start identical) and adds a
// probe table lag_probe to both. The schedsync modes then install and start
// a master and a slave service with the built binary (or -bin) and
// generated .properties files that set capture.mode (the master's install
// creates the audit triggers, or the publication and the slot); native mode
// creates a publication and a subscription (copy_data = false).
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
// master has captured everything the slave starts again: for trigger
// capture when the audit table is empty, for logical capture when the
// slot's confirmed position has passed the marker's commit (the master
// service keeps reading its slot into its spool while the slave is
// stopped), for native at once (the walsender decodes the WAL only when
// the subscription comes back). The catch-up time is until the marker is
// visible on the slave. Throughput is pgbench's transactions (4 row changes
// each) over that time.
//
// It is a measuring tool, not a test: it asserts nothing about speed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

type options struct {
	rate        int
	duration    time.Duration
	modes       []string // trigger, logical, native: what -mode expands to
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
	bigTxn      bool
	set         keyList
	jsonOut     string
	keep        bool
	logLevel    string
}

func parseFlags() options {
	var o options
	flag.IntVar(&o.rate, "rate", 1000, "pgbench --rate: transactions per second on the master")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "how long pgbench runs at -rate")
	mode := flag.String("mode", "all", "comma-separated trigger, logical, native (schedsync = trigger, both = trigger,native, all = all three)")
	flag.StringVar(&o.bin, "bin", "", "schedsync binary to use instead of building ./cmd/schedsync")
	flag.IntVar(&o.clients, "clients", 4, "pgbench -c")
	flag.IntVar(&o.threads, "threads", 2, "pgbench -j")
	flag.IntVar(&o.scale, "scale", 1, "pgbench -i -s")
	flag.DurationVar(&o.probeEvery, "probe-every", 20*time.Millisecond, "interval between two lag probes")
	flag.StringVar(&o.observe, "observe", "poll", "how a probe is seen on the slave: poll (SELECT every -poll) or notify (LISTEN; an ALWAYS trigger on the slave's lag_probe notifies)")
	flag.DurationVar(&o.poll, "poll", 200*time.Microsecond, "interval between two looks at the slave for a probe")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "pgbench time before the first probe")
	flag.DurationVar(&o.backlogDur, "backlog-duration", 20*time.Second, "unthrottled pgbench time while the slave is stopped")
	flag.IntVar(&o.backlogTxns, "backlog-txns", 0, "pgbench transactions while the slave is stopped, instead of -backlog-duration (the same backlog for every mode)")
	flag.BoolVar(&o.skipBacklog, "skip-backlog", false, "measure lag only")
	flag.Var(&o.set, "set", "key=value to add to both services' .properties (repeatable), e.g. -set apply.batch_max_delay=50ms")
	flag.BoolVar(&o.bigTxn, "bigtxn", false, "then time one UPDATE of every pgbench_accounts row (1M rows at -scale 10) from its commit until visible on the slave, and read the services' peak RSS")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results, samples included, to this file as JSON")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, spools, logs) and the clusters' files")
	flag.StringVar(&o.logLevel, "log-level", "info", "log.level of the schedsync services")
	flag.Parse()
	var err error
	if o.modes, err = parseModes(*mode); err != nil {
		usage(err.Error())
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

// keyList is a repeatable key=value flag.
type keyList []string

func (k *keyList) String() string { return strings.Join(*k, ",") }

func (k *keyList) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q is not key=value", v)
	}
	*k = append(*k, v)
	return nil
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "lagbench:", msg)
	os.Exit(2)
}

// modeAliases are the -mode words that stand for other modes: schedsync
// and both keep the meaning they had before logical capture existed.
var modeAliases = map[string][]string{
	"schedsync": {"trigger"},
	"both":      {"trigger", "native"},
	"all":       {"trigger", "logical", "native"},
}

// knownModes are the modes a run measures, one system each.
var knownModes = []string{"trigger", "logical", "native"}

// parseModes expands -mode into distinct modes in the order given, so
// that a repeated mode is not measured twice.
func parseModes(s string) ([]string, error) {
	var out []string
	for _, word := range strings.Split(s, ",") {
		word = strings.TrimSpace(word)
		expanded, ok := modeAliases[word]
		if !ok {
			expanded = []string{word}
		}
		for _, m := range expanded {
			if !slices.Contains(knownModes, m) {
				return nil, fmt.Errorf("-mode: %q is not trigger, logical, native, schedsync, both or all", word)
			}
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// modeLabel names a mode in the results: the schedsync modes by system
// and capture mode, so that they read apart from native.
func modeLabel(mode string) string {
	if mode == "native" {
		return mode
	}
	return "schedsync-" + mode
}

// needsBinary reports whether a schedsync mode is measured.
func (o options) needsBinary() bool {
	return slices.ContainsFunc(o.modes, func(m string) bool { return m != "native" })
}

func main() {
	o := parseFlags()
	benchkit.Main("lagbench", func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	fmt.Println(benchkit.Machine())
	dir, done, err := benchkit.WorkDir("lagbench", o.keep)
	if err != nil {
		return err
	}
	defer done()
	if o.bin == "" && o.needsBinary() {
		o.bin = filepath.Join(dir, "bin", "schedsync")
		if err = benchkit.BuildBinary(ctx, o.bin); err != nil {
			return err
		}
	}
	var results []modeResult
	for _, mode := range o.modes {
		r, err := runMode(ctx, o, dir, mode)
		if err != nil {
			return fmt.Errorf("%s: %w", modeLabel(mode), err)
		}
		printModeResult(r)
		results = append(results, r)
	}
	printSummary(o, results)
	if o.jsonOut != "" {
		return writeJSON(o.jsonOut, results)
	}
	return nil
}

// runMode measures one replication system on fresh clusters and cleans up
// after itself.
func runMode(ctx context.Context, o options, dir, mode string) (modeResult, error) {
	label := modeLabel(mode)
	r := modeResult{Mode: label}
	fmt.Printf("\n== %s: starting two clusters, pgbench -i -s %d on both\n", label, o.scale)
	w, err := newWorld(ctx, o, dir, label)
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
	fmt.Printf("%s streams; measuring lag at %d tx/s for %s\n", label, o.rate, o.duration)
	if r.Lag, err = measureLag(ctx, o, w, sys); err != nil {
		return r, err
	}
	if !o.skipBacklog {
		fmt.Printf("%s: building a backlog with unthrottled pgbench for %s\n", label, o.backlogDur)
		if r.Backlog, err = measureBacklog(ctx, o, w, sys); err != nil {
			return r, err
		}
	}
	if o.bigTxn {
		fmt.Printf("%s: one UPDATE of every pgbench_accounts row\n", label)
		b, err := measureBigTxn(ctx, w, sys)
		if err != nil {
			return r, err
		}
		r.BigTxn = &b
		fmt.Printf("  %d rows: commit in %s, visible on the slave %s after it; peak RSS %v\n", b.Rows, b.Commit.Round(time.Millisecond), b.Visible.Round(time.Millisecond), b.PeakRSS)
	}
	return r, nil
}
