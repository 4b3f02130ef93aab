package main

import (
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// treeCPU is the CPU time of a process and its children, the live ones and
// those it has reaped: PostgreSQL's postmaster and its backends.
func treeCPU(pid int) (time.Duration, error) {
	f, err := benchkit.ProcStat(pid)
	if err != nil {
		return 0, err
	}
	total := benchkit.Ticks(f[11]) + benchkit.Ticks(f[12]) + benchkit.Ticks(f[13]) + benchkit.Ticks(f[14])
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cf, err := benchkit.ProcStat(child); err == nil && cf[1] == strconv.Itoa(pid) {
			total += benchkit.Ticks(cf[11]) + benchkit.Ticks(cf[12])
		}
	}
	return total, nil
}

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
		if rss, _, err := benchkit.ProcMem(pid); err == nil {
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
