package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// measurement is one pgbench run under one mode.
type measurement struct {
	Mode  string
	Round int
	TPS   float64 // pgbench's, without initial connection time
	// CPU time used during the pgbench run by the master service, the
	// slave service (with -with-slave) and the whole machine; -1 if it
	// could not be read.
	MasterCPU, SlaveCPU, BusyCPU time.Duration
	// Drain is how long after pgbench's end the master's position still
	// moved (capture trailing the load); -1 if drain did not finish.
	Drain time.Duration
	// With -rate: pgbench's commit latency, average, median and 99th
	// percentile, in milliseconds.
	LatAvg, LatP50, LatP99 float64
}

// measure takes one measurement of mode, with configs and spools under
// dir. A deployment is always taken down again, on error too.
func measure(ctx context.Context, o options, w *world, dir, mode string, round int) (measurement, error) {
	m := measurement{Mode: mode, Round: round, MasterCPU: -1, SlaveCPU: -1, BusyCPU: -1, Drain: -1}
	if err := w.initTables(ctx); err != nil {
		return m, err
	}
	var d *deployment
	var nat *nativeReplication
	if mode == modeNative || mode == modeNativeSync {
		var err error
		if nat, err = startNative(ctx, w); err != nil {
			return m, err
		}
		defer nat.stop()
		if mode == modeNativeSync {
			reset, err := w.makeSynchronous(ctx, "tpsbench_native")
			defer reset()
			if err != nil {
				return m, err
			}
		}
	} else if mode == modeDecoding {
		r, err := startDecoding(ctx, w)
		if err != nil {
			return m, err
		}
		defer r.stop()
	} else if mode == modeTriggers {
		t, err := newDeployment(o, w, dir, modeTrigger)
		if err != nil {
			return m, err
		}
		defer t.down()
		if _, err := t.master.run(ctx, "install"); err != nil {
			return m, err
		}
	} else if mode != modeNone {
		var err error
		if d, err = newDeployment(o, w, dir, mode); err != nil {
			return m, err
		}
		defer d.down()
		if err := d.up(ctx); err != nil {
			return m, err
		}
		if mode == modeLogicalSync {
			// After install and start: schedsync's own commits must not
			// wait on capture, whatever the order.
			reset, err := w.makeSynchronous(ctx, "schedsync_capture")
			defer reset()
			if err != nil {
				return m, err
			}
		}
	}
	if err := w.checkpoint(ctx); err != nil {
		return m, err
	}
	cpu := startCPU(ctx, d)
	args := []string{"-c", strconv.Itoa(o.clients), "-j", strconv.Itoa(o.threads),
		"-T", strconv.Itoa(int(o.duration.Round(time.Second).Seconds())), "-n", "-M", "prepared"}
	logPrefix := filepath.Join(dir, "pgbench_log")
	if o.rate > 0 {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return m, err
		}
		args = append(args, "-R", strconv.Itoa(o.rate), "-l", "--log-prefix", logPrefix)
	}
	out, err := benchkit.Pgbench(ctx, w.master.Bin("pgbench"), append(args, w.masterURL())...)
	if err != nil {
		return m, err
	}
	end := time.Now()
	m.MasterCPU, m.SlaveCPU, m.BusyCPU = cpu.stop()
	if m.TPS, err = parseTPS(out); err != nil {
		return m, err
	}
	if o.rate > 0 {
		if m.LatAvg, m.LatP50, m.LatP99, err = latencies(out, logPrefix); err != nil {
			return m, err
		}
	}
	if nat != nil {
		if err := nat.drain(ctx, 5*time.Minute); err != nil {
			fmt.Fprintf(os.Stderr, "tpsbench: round %d, %s: %v\n", round, mode, err)
		} else {
			m.Drain = max(0, time.Since(end))
		}
	}
	if d != nil {
		moved, err := d.drain(ctx, 5*time.Minute)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tpsbench: round %d, %s: capture did not drain: %v\n", round, mode, err)
		} else {
			m.Drain = max(0, moved.Sub(end))
		}
	}
	return m, nil
}

var reTPS = regexp.MustCompile(`tps = ([\d.]+) \(without initial connection time\)`)

// parseTPS reads pgbench's throughput, excluding the time its clients took
// to connect.
func parseTPS(out string) (float64, error) {
	t := reTPS.FindStringSubmatch(out)
	if t == nil {
		return 0, fmt.Errorf("no \"tps = N (without initial connection time)\" in pgbench's output:\n%s", out)
	}
	return strconv.ParseFloat(t[1], 64)
}

// cpuMark is CPU times at the start of a pgbench run.
type cpuMark struct {
	masterPID, slavePID int
	master, slave, busy time.Duration
}

// startCPU reads the CPU time used so far by the services (pids from
// `status --json`) and the machine. Whatever cannot be read is left out
// of the figures (-1), not an error: CPU time is extra information.
func startCPU(ctx context.Context, d *deployment) cpuMark {
	c := cpuMark{master: -1, slave: -1, busy: -1}
	if d != nil {
		c.masterPID, c.master = serviceCPU(ctx, d.master)
		if d.slave != nil {
			c.slavePID, c.slave = serviceCPU(ctx, d.slave)
		}
	}
	if b, err := benchkit.SystemBusy(); err == nil {
		c.busy = b
	}
	return c
}

// stop returns the CPU time used since startCPU: master service, slave
// service, machine.
func (c cpuMark) stop() (master, slave, busy time.Duration) {
	since := func(pid int, before time.Duration) time.Duration {
		if pid == 0 || before < 0 {
			return -1
		}
		now, err := benchkit.ProcCPU(pid)
		if err != nil {
			return -1
		}
		return now - before
	}
	master, slave, busy = since(c.masterPID, c.master), since(c.slavePID, c.slave), -1
	if b, err := benchkit.SystemBusy(); err == nil && c.busy >= 0 {
		busy = b - c.busy
	}
	return master, slave, busy
}

// serviceCPU is a service's pid and CPU time so far; 0 and -1 if unknown.
func serviceCPU(ctx context.Context, n *node) (int, time.Duration) {
	st, err := n.status(ctx)
	if err != nil || st.PID == 0 {
		return 0, -1
	}
	t, err := benchkit.ProcCPU(st.PID)
	if err != nil {
		return 0, -1
	}
	return st.PID, t
}
