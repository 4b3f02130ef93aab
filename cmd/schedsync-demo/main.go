// Command schedsync-demo runs schedsync end to end on one machine, for `make demo`:
// two throwaway PostgreSQL clusters (internal/testkit/pgtest) hold a master and a
// slave scheduler repository with the Quartz schema; the demo installs
// schedsync on both, starts both sync services, drives a clustered-Quartz
// workload on the master for a few seconds, waits for the slave to catch
// up, shows both nodes' status, verifies that the two repositories are
// equal, stops the services and removes the clusters.
//
// Every step prints a headline and the exact schedsync command it runs, so
// that reading the output teaches the CLI. The demo needs no input, ends by
// itself, exits non-zero if any step fails (verify finding a difference
// included), and cleans up on Ctrl-C (a second Ctrl-C exits at once; the
// clusters are then removed by pgtest's watchdogs, and a service left
// running is stopped by the next demo).
//
// It only touches what it creates: its clusters, and the configs, token
// and spool directories it writes under -dir.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// options are the demo's flags.
type options struct {
	bin      string        // the schedsync binary; built if missing
	dir      string        // where configs, token and spool directories go
	duration time.Duration // how long the Quartz workload runs
	rate     int           // the workload's target firings per second
	keep     bool          // keep clusters and dir instead of removing them
	mode     string        // capture.mode
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "./bin/schedsync", "the schedsync binary (built with go build if missing)")
	flag.StringVar(&o.dir, "dir", ".demo", "directory for the demo's configs, token and spool directories")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "how long the Quartz workload runs")
	flag.IntVar(&o.rate, "rate", 300, "target Quartz firings per second (0: as fast as possible)")
	flag.BoolVar(&o.keep, "keep", false, "keep the clusters' directories and -dir at the end")
	flag.StringVar(&o.mode, "mode", "trigger", "capture.mode of the master: trigger or logical")
	flag.Parse()
	if flag.NArg() > 0 || o.duration <= 0 || o.rate < 0 || (o.mode != "trigger" && o.mode != "logical") {
		fmt.Fprintln(os.Stderr, "demo: usage: demo [-bin FILE] [-dir DIR] [-duration 5s] [-rate N] [-mode trigger|logical] [-keep]")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
		fmt.Fprintln(os.Stderr, "\ndemo: interrupted: cleaning up (press Ctrl-C again to exit at once)")
	}()
	err := run(ctx, o)
	switch {
	case err == nil:
		return
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "demo: interrupted")
		os.Exit(130)
	default:
		fmt.Fprintf(os.Stderr, "demo: FAILED: %v\n", err)
		os.Exit(1)
	}
}
