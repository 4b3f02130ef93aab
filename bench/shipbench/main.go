// Command shipbench measures shipping: how fast a master's sync service
// streams a spool backlog to a slave over loopback, and how much memory
// (RSS) both services use while it does.
//
//	go run ./bench/shipbench [-backlog 1GiB] [-runs 3] [-keep]
//	go run ./bench/shipbench -bin old/schedsync,new/schedsync
//
// It builds the schedsync binary (or uses -bin), starts a throwaway
// PostgreSQL cluster (internal/testkit/pgtest) with a master and a slave
// repository, installs both nodes with generated .properties files, and
// fills the master's spool with about -backlog bytes of Quartz-like
// transactions before the master service starts, writing it with package
// spool directly. Each run then starts the master service and a new slave
// (new name, empty spool) and times the slave's `start` until its
// received_position (durable in its spool) is the master's last position,
// sampling both services' VmRSS meanwhile and reading their VmHWM at the
// end. Figures are printed per run and as the median of the runs. With
// several binaries (-bin a,b) the runs alternate between them over the same
// backlog, and each binary gets its own median: an A/B comparison.
//
// The machine may be shared: before each run it waits (up to -idle-wait)
// until the other processes leave the CPUs nearly idle, it reports the CPU
// time they used during the run, and it repeats a run they disturbed
// (-max-other).
//
// The slave repository has no Quartz tables unless -apply: the slave's
// apply then stops on the first transaction (state apply_error, retried
// with a backoff of 10 s and more), so shipping is measured alone. With
// -apply it competes with apply, which replays the backlog into PostgreSQL
// meanwhile (and does not finish within the run).
//
// It is a measuring tool, not a test: it asserts nothing about speed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/schedsync/schedsync/internal/config"

	"github.com/schedsync/schedsync/bench/benchkit"
)

type options struct {
	backlog    int64
	runs       int
	noise      int
	bins       []string
	idleWait   time.Duration
	maxOther   float64
	keep       bool
	cold       bool
	zeroCapPos bool
	sample     time.Duration
	apply      bool
}

func parseFlags() options {
	var o options
	size := flag.String("backlog", "1GiB", "spool bytes (compressed, as on disk) to ship")
	flag.IntVar(&o.runs, "runs", 3, "shipping runs per binary over the same backlog, each with a new slave")
	flag.IntVar(&o.noise, "noise", 0, "random bytes added to every JobDataMap, to lower compressibility")
	bins := flag.String("bin", "", "schedsync binary to use instead of building ./cmd/schedsync; a comma-separated list alternates between binaries")
	flag.Float64Var(&o.maxOther, "max-other", 0.2,
		"repeat a run (up to 5 times) when other processes used more than this fraction of the CPUs during it; 0 never repeats")
	flag.DurationVar(&o.idleWait, "idle-wait", 5*time.Minute, "how long to wait before each run for the other processes to leave the CPUs idle")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory and the PostgreSQL cluster's files")
	flag.BoolVar(&o.cold, "cold", false, "drop the page cache before each run, so the master reads its spool from disk (root)")
	flag.BoolVar(&o.zeroCapPos, "zero-capture-position", false,
		"leave the master's capture position at 0, so its startup recovery lists every spooled XID")
	flag.BoolVar(&o.apply, "apply", false,
		"give the slave repository the Quartz tables, so the slave applies while it receives (default: apply stops at once on the missing tables)")
	flag.DurationVar(&o.sample, "sample", 100*time.Millisecond, "RSS sampling interval")
	flag.Parse()
	n, err := config.ParseSize(*size)
	if err != nil || n <= 0 || o.runs < 1 || o.noise < 0 {
		fmt.Fprintln(os.Stderr, "shipbench: -backlog must be a size such as 1GiB, -runs at least 1, -noise at least 0")
		os.Exit(2)
	}
	o.backlog = int64(n)
	if *bins != "" {
		o.bins = strings.Split(*bins, ",")
	}
	return o
}

func main() {
	o := parseFlags()
	benchkit.Main("shipbench", func(ctx context.Context) error { return run(ctx, o) })
}

// maxAttempts bounds the repetitions of a disturbed run.
const maxAttempts = 5

// disturbed says whether other processes used more than maxOther of the
// CPUs during the run.
func disturbed(r result, maxOther float64) bool {
	avail := float64(runtime.NumCPU()) * float64(r.Elapsed)
	return maxOther > 0 && float64(r.OtherCPU) > maxOther*avail
}

func run(ctx context.Context, o options) error {
	fmt.Println(benchkit.Machine())
	e, err := newEnv(ctx, o)
	if err != nil {
		return err
	}
	defer e.close()
	printBinaries(e.bins)
	fmt.Printf("prefilling the master spool with %s of spool bytes...\n", mib(o.backlog))
	epoch, err := e.captureEpoch(ctx)
	if err != nil {
		return fmt.Errorf("read the master's capture history: %w", err)
	}
	b, err := prefill(ctx, filepath.Join(e.master.spool, "spool"), o.backlog, o.noise, epoch)
	if err != nil {
		return err
	}
	printBacklog(b)
	if !o.zeroCapPos {
		if err := e.setCapturePosition(ctx, b.Txns); err != nil {
			return fmt.Errorf("set the master's capture position: %w", err)
		}
	}
	results := map[string][]result{}
	run := 0
	for i := range o.runs * len(e.bins) {
		bin := e.bins[i%len(e.bins)]
		for attempt := 1; ; attempt++ {
			run++
			waitIdle(ctx, o.idleWait)
			r, err := shipOnce(ctx, e, bin, run, b, o)
			if err != nil {
				return fmt.Errorf("run %d (%s): %w", run, bin, err)
			}
			printResult(r, b)
			if disturbed(r, o.maxOther) && attempt < maxAttempts {
				fmt.Println("  disturbed by other processes: repeating it")
				continue
			}
			results[bin] = append(results[bin], r)
			break
		}
	}
	for _, bin := range e.bins {
		printSummary(bin, results[bin], b)
	}
	return nil
}
