package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// cpuUsage is the CPU time some processes used over a wall-clock interval.
type cpuUsage struct {
	Elapsed time.Duration
	Procs   []procUsage
	Busy    time.Duration // all CPUs, everything, over Elapsed
}

type procUsage struct {
	proc
	CPU time.Duration // -1 when the process could not be read at both ends
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

// labelUsage is the CPU time of the processes sharing a label.
type labelUsage struct {
	Label string
	Repl  bool
	CPU   time.Duration
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
}

func startCPU(procs []proc) *cpuMeter {
	m := &cpuMeter{start: time.Now(), procs: procs}
	m.busy, _ = systemBusy()
	for _, p := range procs {
		t, err := procCPU(p.PID)
		if err != nil {
			t = -1
		}
		m.cpu = append(m.cpu, t)
	}
	return m
}

func (m *cpuMeter) stop() cpuUsage {
	u := cpuUsage{Elapsed: time.Since(m.start)}
	busy, _ := systemBusy()
	u.Busy = busy - m.busy
	for i, p := range m.procs {
		t, err := procCPU(p.PID)
		d := t - m.cpu[i]
		if err != nil || m.cpu[i] < 0 {
			d = -1
		}
		u.Procs = append(u.Procs, procUsage{proc: p, CPU: d})
	}
	return u
}

// idleBusy is the share of the machine's CPUs, in percent, that was busy
// over d: what other work is running before a measurement starts.
func idleBusy(ctx context.Context, d time.Duration) (float64, error) {
	b0, err := systemBusy()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	b1, _ := systemBusy()
	return 100 * (b1 - b0).Seconds() / time.Since(t0).Seconds() / float64(runtime.NumCPU()), nil
}

// procCPU is the user and system CPU time a process has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis (field 3, state, comes first).
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// systemBusy is the CPU time all CPUs spent busy (not idle, not waiting
// for I/O, not stolen) since boot, from /proc/stat.
func systemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 7 { // user nice system [idle iowait] irq softirq; guest is in user
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times on Linux.
const clockTicks = 100
