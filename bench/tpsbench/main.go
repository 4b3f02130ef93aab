// Command tpsbench measures what schedsync's capture costs the master: the
// throughput (tps) pgbench reaches on the master repository without
// schedsync, with the master service capturing by triggers, and with it
// capturing by logical decoding, in one run on the same clusters. Mode
// decoding is the floor under any logical capture: a pgoutput slot read by
// pg_recvlogical into /dev/null, so what it costs is the server's own
// decoding (the walsender), with no schedsync at all. Mode triggers is the
// floor under trigger capture: the capture triggers installed
// (`schedsync install` in trigger mode) and no service running, so what it
// costs is the triggers writing the audit table inside pgbench's
// transactions, with nothing reading or deleting the audit rows.
//
//	go run ./bench/tpsbench [-duration 20s] [-rounds 3] [-scale 10]
//	    [-clients 4] [-threads 2] [-modes none,decoding,trigger,logical] [-with-slave] [-bin path] [-keep]
//
// It starts one throwaway master cluster (internal/testkit/pgtest, wal_level =
// logical), and with -with-slave a second one for a slave, and builds
// ./cmd/schedsync (or uses -bin). Each round measures every mode once, in
// the order given, so that machine noise (other work, thermal throttling)
// spreads over the modes instead of falling on one. One measurement:
//
//   - `pgbench -i -s scale -q` on the master (and the slave), so that every
//     measurement starts from the same data: pgbench's initial data is
//     deterministic, and the run before left no schedsync objects behind;
//   - trigger and logical: write .properties files with that capture.mode
//     and fresh spool directories, `schedsync install` and `start` on the
//     master (and the slave), and wait until `status --json` says running
//     and streaming;
//   - CHECKPOINT on the master, then unthrottled pgbench (TPC-B-like: 3
//     updates and 1 insert per transaction) `-c clients -j threads -T
//     duration -n -M prepared`; the figure is its "tps (without initial
//     connection time)". Around it the CPU time of the master service and
//     of the whole machine are read from /proc;
//   - trigger and logical: wait until capture has drained (the master's
//     position stops moving, and with a slave, the slave has applied it),
//     then `schedsync stop` (slave, then master) and `uninstall` (which
//     drops the logical slot, and the slave's applied position).
//
// The summary gives, per mode, the tps of every round, the median, and the
// median's ratio to the median of none. The aim tracked is logical ≥ 0.95 ×
// none. It is a measuring tool, not a test: it asserts nothing about speed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// The modes, in the order the summary lists them.
const (
	modeNone    = "none"
	modeTrigger = "trigger"
	modeLogical = "logical"
	// modeTriggers is trigger capture installed and no service: the cost
	// of the triggers alone.
	modeTriggers = "triggers"
)

type options struct {
	duration  time.Duration
	rounds    int
	scale     int
	clients   int
	threads   int
	modes     []string
	withSlave bool
	bin       string
	jsonOut   string
	keep      bool
	logLevel  string
	// rate is pgbench -R: transactions per second; 0 is unthrottled.
	// With it, latencies are reported too.
	rate int
}

func parseFlags() options {
	var o options
	var modes string
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "pgbench -T of each measurement (whole seconds)")
	flag.IntVar(&o.rounds, "rounds", 3, "measurements of every mode; a round measures each mode once")
	flag.IntVar(&o.scale, "scale", 10, "pgbench -i -s")
	flag.IntVar(&o.clients, "clients", 4, "pgbench -c")
	flag.IntVar(&o.threads, "threads", 2, "pgbench -j")
	flag.StringVar(&modes, "modes", "none,decoding,trigger,logical", "comma-separated modes, measured in this order within a round: none, decoding, triggers, trigger, logical, native, logical-sync, native-sync (the last three need -with-slave)")
	flag.BoolVar(&o.withSlave, "with-slave", false, "also run a slave service on a second cluster, applying what the master captures")
	flag.StringVar(&o.bin, "bin", "", "schedsync binary to use instead of building ./cmd/schedsync")
	flag.StringVar(&o.jsonOut, "json", "", "also write every measurement to this file as JSON")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, spools, logs) and the clusters' files")
	flag.StringVar(&o.logLevel, "log-level", "info", "log.level of the schedsync services")
	flag.IntVar(&o.rate, "rate", 0, "pgbench -R: throttle to this many transactions a second and report commit latencies (0: unthrottled)")
	flag.Parse()
	if flag.NArg() > 0 {
		usage("unexpected arguments: " + strings.Join(flag.Args(), " "))
	}
	var err error
	if o.modes, err = parseModes(modes); err != nil {
		usage(err.Error())
	}
	if o.rounds < 1 || o.scale < 1 || o.clients < 1 || o.threads < 1 {
		usage("-rounds, -scale, -clients and -threads must be at least 1")
	}
	if slices.ContainsFunc(o.modes, func(m string) bool { return m == modeNative || m == modeLogicalSync || m == modeNativeSync }) && !o.withSlave {
		usage("modes native, logical-sync and native-sync replicate to a slave: add -with-slave")
	}
	if o.threads > o.clients {
		usage("-threads must not exceed -clients (pgbench refuses it)")
	}
	if o.duration < time.Second {
		usage("-duration must be at least 1s (pgbench -T counts whole seconds)")
	}
	return o
}

// parseModes splits -modes, refusing unknown and repeated modes: a repeat
// would be measured twice per round under one name.
func parseModes(s string) ([]string, error) {
	var modes []string
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		switch {
		case !slices.Contains([]string{modeNone, modeTrigger, modeLogical, modeDecoding, modeNative, modeTriggers, modeLogicalSync, modeNativeSync}, m):
			return nil, fmt.Errorf("-modes: unknown mode %q (want none, decoding, triggers, trigger, logical, native, logical-sync or native-sync)", m)
		case slices.Contains(modes, m):
			return nil, fmt.Errorf("-modes: %s given twice", m)
		}
		modes = append(modes, m)
	}
	return modes, nil
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "tpsbench:", msg)
	os.Exit(2)
}

func (o options) needsBinary() bool {
	return slices.ContainsFunc(o.modes, func(m string) bool {
		return m == modeTrigger || m == modeLogical || m == modeTriggers || m == modeLogicalSync
	})
}

func main() {
	o := parseFlags()
	benchkit.Main("tpsbench", func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	printCommand(o)
	dir, done, err := benchkit.WorkDir("tpsbench", o.keep)
	if err != nil {
		return err
	}
	defer done()
	if o.bin == "" && o.needsBinary() {
		o.bin = filepath.Join(dir, "bin", "schedsync")
		fmt.Println("building ./cmd/schedsync")
		if err := benchkit.BuildBinary(ctx, o.bin); err != nil {
			return err
		}
	}
	fmt.Printf("starting the cluster(s), database %s\n", dbName)
	w, err := newWorld(ctx, o)
	if err != nil {
		return err
	}
	defer w.close()
	printMachine(ctx, w, o)
	results, err := measureAll(ctx, o, w, dir)
	// What was measured before an error or Ctrl-C is still worth seeing.
	printSummary(o, results)
	if o.jsonOut != "" && err == nil {
		var b []byte
		if b, err = json.MarshalIndent(results, "", "  "); err == nil {
			err = os.WriteFile(o.jsonOut, b, 0o644)
		}
	}
	return err
}

// measureAll runs the rounds, each mode once per round in -modes order.
func measureAll(ctx context.Context, o options, w *world, dir string) ([]measurement, error) {
	var results []measurement
	for round := 1; round <= o.rounds; round++ {
		for _, mode := range o.modes {
			fmt.Printf("\n== round %d/%d, %s\n", round, o.rounds, mode)
			m, err := measure(ctx, o, w, filepath.Join(dir, fmt.Sprintf("r%d-%s", round, mode)), mode, round)
			if err != nil && ctx.Err() != nil {
				// Ctrl-C kills pgbench; "signal: killed" would hide why.
				return results, fmt.Errorf("round %d, %s: interrupted", round, mode)
			}
			if err != nil {
				return results, fmt.Errorf("round %d, %s: %w", round, mode, err)
			}
			printMeasurement(m)
			results = append(results, m)
		}
	}
	return results, nil
}
