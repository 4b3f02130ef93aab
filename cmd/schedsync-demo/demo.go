package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// cleanupTimeout bounds each cleanup action, which runs with a fresh
// context after an interrupt.
const cleanupTimeout = time.Minute

// demo is the state of one run.
type demo struct {
	opts     options
	bin      string // absolute path of the binary
	dir      string // absolute path of opts.dir
	step     int
	masterDB *pgtest.Cluster
	slaveDB  *pgtest.Cluster
	master   *node
	slave    *node
	started  []*node // services that may be running
}

// step is one headline of the demo.
type step struct {
	title string
	run   func(ctx context.Context) error
}

func run(ctx context.Context, o options) (err error) {
	d := &demo{opts: o}
	if d.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	fmt.Println("schedsync demo: replicate a Quartz scheduler repository from a master to a slave.")
	fmt.Printf("Configs, token and spool directories go in %s.\n", d.dir)
	defer func() {
		// An interrupted demo cleans up like a successful one; a failed
		// one keeps its logs for reading.
		failed := err != nil && ctx.Err() == nil
		err = errors.Join(err, d.cleanup(failed))
	}()
	steps := []step{
		{"Find the schedsync binary", d.findBinary},
		{"Start two throwaway PostgreSQL clusters: the master's repository and the slave's", d.startClusters},
		{"Create the Quartz schema (qrtz_* tables) in both repositories", d.createSchemas},
		{"Write each node's configuration", d.writeConfigs},
		{"Install schedsync: capture objects on the master (triggers, or publication and slot), the state table on the slave", d.install},
		{"Start the sync services: start detaches and returns once the service is up", d.start},
		{fmt.Sprintf("Run the Quartz workload on the master for %s", o.duration), d.workload},
		{"Wait for the slave to apply everything the master captured", d.waitCaughtUp},
		{"Show the status of both nodes", d.status},
		{"Verify: compare every replicated table of the slave with the master", d.verify},
		{"Stop the sync services", d.stop},
	}
	for _, s := range steps {
		d.headline(s.title)
		if err := s.run(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	fmt.Println("\nThe demo succeeded: the slave is an exact copy of the master.")
	return nil
}

func (d *demo) headline(title string) {
	d.step++
	fmt.Printf("\n==> %d. %s\n", d.step, title)
}

// say prints a line of explanation under a headline.
func say(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}

// indent prints text as a block under a command.
func indent(text string) {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return
	}
	for line := range strings.SplitSeq(text, "\n") {
		fmt.Println("      " + line)
	}
}

// cleanup stops what still runs and removes what the demo created, unless
// -keep. After a failure the demo directory stays, with the services'
// logs, and their last lines are shown.
func (d *demo) cleanup(failed bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	if failed {
		for _, n := range d.started {
			fmt.Printf("\nLast lines of %s's log (%s):\n", n.name, n.logPath())
			indent(pgtest.FileTail(n.logPath(), 15))
		}
	}
	for i := len(d.started) - 1; i >= 0; i-- { // the slave first
		errs = append(errs, d.started[i].stopQuietly(ctx))
	}
	for _, c := range []*pgtest.Cluster{d.masterDB, d.slaveDB} {
		if c != nil {
			errs = append(errs, c.Stop())
		}
	}
	switch {
	case d.opts.keep:
		fmt.Printf("\nKept (-keep): %s", d.dir)
		for _, c := range []*pgtest.Cluster{d.masterDB, d.slaveDB} {
			if c != nil {
				fmt.Printf(", cluster %s (stopped)", c.Dir)
			}
		}
		fmt.Println()
	case failed:
		fmt.Printf("\nThe clusters were removed; the configs and logs stay in %s.\n", d.dir)
	default:
		errs = append(errs, d.removeFiles())
	}
	return errors.Join(errs...)
}
