package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procMem reads VmRSS and VmHWM (the peak RSS of the process's life) in
// bytes from /proc/pid/status.
func procMem(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			rss = parseKB(v)
		case "VmHWM":
			hwm = parseKB(v)
		}
	}
	return rss, hwm, sc.Err()
}

func parseKB(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
	return n << 10
}

// procCPU is the user and system CPU time the process has used.
func procCPU(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return ticks(f[11]) + ticks(f[12]), nil
}

// treeCPU is the CPU time of a process and its children, the live ones and
// those it has reaped: PostgreSQL's postmaster and its backends.
func treeCPU(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	total := ticks(f[11]) + ticks(f[12]) + ticks(f[13]) + ticks(f[14])
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cf, err := procStat(child); err == nil && cf[1] == strconv.Itoa(pid) {
			total += ticks(cf[11]) + ticks(cf[12])
		}
	}
	return total, nil
}

// procStat returns the fields of /proc/pid/stat after the command name,
// in parentheses and possibly holding spaces: field 3 (state) comes first,
// so field n of proc(5) is at index n-3.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return f, nil
}

func ticks(s string) time.Duration {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.Duration(n) * time.Second / clockTicks
}

// systemBusy is the CPU time all CPUs spent busy (not idle, not waiting
// for I/O) since boot, from /proc/stat.
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
		if i != 3 && i != 4 && i < 7 { // not idle, iowait, steal; guest time is already in user
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times on Linux.
const clockTicks = 100

// sampler records the largest VmRSS seen for each process it watches.
type sampler struct {
	mu   sync.Mutex
	peak map[int]int64
	n    int
	stop chan struct{}
	done chan struct{}
}

func startSampler(every time.Duration, pids ...int) *sampler {
	s := &sampler{peak: map[int]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, pid := range pids {
		s.watch(pid)
	}
	go s.loop(every)
	return s
}

// watch adds a process.
func (s *sampler) watch(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.peak[pid]; !ok {
		s.peak[pid] = 0
	}
}

func (s *sampler) loop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *sampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid, peak := range s.peak {
		if rss, _, err := procMem(pid); err == nil {
			s.peak[pid] = max(peak, rss)
		}
	}
	s.n++
}

// finish stops sampling and returns the peak VmRSS sampled per process and
// the number of samples taken.
func (s *sampler) finish() (map[int]int64, int) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.n
}
