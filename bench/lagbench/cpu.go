package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// cpuUsage is the CPU time some processes used over a wall-clock interval.
type cpuUsage struct {
	Elapsed time.Duration
	Procs   []procUsage
	Busy    time.Duration // all CPUs, everything, over Elapsed
}

type procUsage struct {
	proc
	CPU  time.Duration // -1 when the process could not be read at both ends
	Wait time.Duration // runnable but waiting for a CPU (run queue), its threads summed
}

// percent is CPU time as a share of one CPU over the interval.
func (u cpuUsage) percent(d time.Duration) float64 {
	if u.Elapsed <= 0 {
		return 0
	}
	return 100 * d.Seconds() / u.Elapsed.Seconds()
}

// sum is the CPU time of the counted processes that keep says to count.
func (u cpuUsage) sum(keep func(proc) bool) time.Duration {
	var t time.Duration
	for _, p := range u.Procs {
		if keep(p.proc) {
			t += max(p.CPU, 0)
		}
	}
	return t
}

func (u cpuUsage) replication() time.Duration { return u.sum(func(p proc) bool { return p.Repl }) }
func (u cpuUsage) observer() time.Duration    { return u.sum(func(p proc) bool { return p.Observer }) }
func (u cpuUsage) accounted() time.Duration   { return u.sum(func(proc) bool { return true }) }

// labelUsage is the CPU and run-queue time of the processes sharing a
// label.
type labelUsage struct {
	Label string
	Repl  bool
	CPU   time.Duration
	Wait  time.Duration
	N     int // processes
}

// byLabel adds up the processes of each label, in the order labels first
// appear.
func (u cpuUsage) byLabel() []labelUsage {
	var out []labelUsage
	at := map[string]int{}
	for _, p := range u.Procs {
		i, ok := at[p.Label]
		if !ok {
			i = len(out)
			at[p.Label] = i
			out = append(out, labelUsage{Label: p.Label, Repl: p.Repl})
		}
		out[i].CPU += max(p.CPU, 0)
		out[i].Wait += p.Wait
		out[i].N++
	}
	return out
}

// cpuMeter measures from startCPU to stop.
type cpuMeter struct {
	start time.Time
	busy  time.Duration
	procs []proc
	cpu   []time.Duration
	wait  []time.Duration
}

func startCPU(procs []proc) *cpuMeter {
	m := &cpuMeter{start: time.Now(), procs: procs}
	m.busy, _ = benchkit.SystemBusy()
	for _, p := range procs {
		t, err := benchkit.ProcCPU(p.PID)
		if err != nil {
			t = -1
		}
		m.cpu = append(m.cpu, t)
		m.wait = append(m.wait, runQueueWait(p.PID))
	}
	return m
}

func (m *cpuMeter) stop() cpuUsage {
	u := cpuUsage{Elapsed: time.Since(m.start)}
	busy, _ := benchkit.SystemBusy()
	u.Busy = busy - m.busy
	for i, p := range m.procs {
		t, err := benchkit.ProcCPU(p.PID)
		d := t - m.cpu[i]
		if err != nil || m.cpu[i] < 0 {
			d = -1
		}
		u.Procs = append(u.Procs, procUsage{proc: p, CPU: d, Wait: max(0, runQueueWait(p.PID)-m.wait[i])})
	}
	return u
}

// idleBusy is the share of the machine's CPUs, in percent, that was busy
// over d: what other work is running before a measurement starts.
func idleBusy(ctx context.Context, d time.Duration) (float64, error) {
	b0, err := benchkit.SystemBusy()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	b1, _ := benchkit.SystemBusy()
	return 100 * (b1 - b0).Seconds() / time.Since(t0).Seconds() / float64(runtime.NumCPU()), nil
}

// runQueueWait is how long the threads of a process have been runnable
// but waiting for a CPU, from /proc/PID/task/*/schedstat (its second
// field, in ns). On a saturated machine this is where latency goes; threads
// that have exited are missed, and 0 is returned where schedstat is absent.
func runQueueWait(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var wait time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			wait += time.Duration(ns)
		}
	}
	return wait
}
