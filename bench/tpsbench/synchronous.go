package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The synchronous modes: a commit on the master returns only once the
// slave holds it. logical-sync is schedsync's failover.synchronous with
// synchronous_standby_names = 'schedsync_capture'; native-sync is
// PostgreSQL's logical replication with synchronous_standby_names naming
// the subscription. Both need -with-slave.
const (
	modeLogicalSync = "logical-sync"
	modeNativeSync  = "native-sync"
)

// captureMode is the capture.mode of a schedsync mode.
func captureMode(mode string) string {
	if mode == modeLogicalSync {
		return modeLogical
	}
	return mode
}

// makeSynchronous names the walsender of application_name name in
// synchronous_standby_names and waits until the master treats it as a
// synchronous standby. reset undoes the setting; call it after an error
// too.
func (w *world) makeSynchronous(ctx context.Context, name string) (reset func(), err error) {
	reset = func() { _ = w.setStandbyNames(context.WithoutCancel(ctx), "") }
	if err := w.setStandbyNames(ctx, name); err != nil {
		return reset, err
	}
	return reset, w.waitSyncStandby(ctx, name)
}

// setStandbyNames sets synchronous_standby_names on the master ("" resets
// it) and waits until the server uses it.
func (w *world) setStandbyNames(ctx context.Context, names string) error {
	sql := `ALTER SYSTEM RESET synchronous_standby_names`
	if names != "" {
		sql = fmt.Sprintf(`ALTER SYSTEM SET synchronous_standby_names = '%s'`, names)
	}
	if err := w.exec(ctx, w.masterURL(), sql); err != nil {
		return err
	}
	if err := w.exec(ctx, w.masterURL(), `SELECT pg_reload_conf()`); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var have string
		if err := w.queryRow(ctx, w.masterURL(), `SHOW synchronous_standby_names`, &have); err != nil {
			return err
		}
		if have == names {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("synchronous_standby_names is %q 10s after setting it to %q", have, names)
		}
	}
}

// waitSyncStandby waits until the master lists application_name as a
// synchronous standby (sync_state sync or quorum).
func (w *world) waitSyncStandby(ctx context.Context, name string) error {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var ok bool
		if err := w.queryRow(ctx, w.masterURL(),
			`SELECT count(*) > 0 FROM pg_stat_replication WHERE application_name = $1 AND sync_state IN ('sync', 'quorum')`, &ok, name); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not a synchronous standby of the master after 30s", name)
		}
	}
}

var reLatAvg = regexp.MustCompile(`latency average = ([\d.]+) ms`)

// latencies reads pgbench's average latency from its output and the
// median and 99th percentile from its per-transaction logs (-l) under
// prefix: the third field of each line, in microseconds.
func latencies(out, prefix string) (avg, p50, p99 float64, err error) {
	if m := reLatAvg.FindStringSubmatch(out); m != nil {
		avg, _ = strconv.ParseFloat(m[1], 64)
	}
	files, err := filepath.Glob(prefix + ".*")
	if err != nil || len(files) == 0 {
		return avg, 0, 0, fmt.Errorf("no pgbench transaction log under %s", prefix)
	}
	var us []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return avg, 0, 0, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			if v, err := strconv.ParseFloat(fields[2], 64); err == nil {
				us = append(us, v)
			}
		}
		fh.Close()
		os.Remove(f)
	}
	if len(us) == 0 {
		return avg, 0, 0, fmt.Errorf("empty pgbench transaction logs under %s", prefix)
	}
	slices.Sort(us)
	at := func(q float64) float64 { return us[min(len(us)-1, int(q*float64(len(us))))] / 1000 }
	return avg, at(0.50), at(0.99), nil
}
