package main

import (
	"fmt"
	"strconv"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// cpuTicks are the machine's CPU times from /proc/stat's first line:
// all of them, and steal (time the hypervisor gave this VM's CPUs to
// others). A VM whose neighbours are busy runs everything slower, and
// its figures say less.
type cpuTicks struct{ total, steal uint64 }

func readTicks() (cpuTicks, error) {
	f, err := benchkit.SystemCPU()
	if err != nil {
		return cpuTicks{}, err
	}
	if len(f) < 8 {
		return cpuTicks{}, fmt.Errorf("/proc/stat: no steal column in %q", f)
	}
	var t cpuTicks
	for i, s := range f {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTicks{}, fmt.Errorf("/proc/stat: %w", err)
		}
		if i >= 8 { // guest and guest_nice are counted in user and nice already
			break
		}
		t.total += v
		if i == 7 {
			t.steal = v
		}
	}
	return t, nil
}

// stealPercent is the share of CPU time stolen between two readings.
func stealPercent(a, b cpuTicks) float64 {
	if b.total <= a.total {
		return 0
	}
	return 100 * float64(b.steal-a.steal) / float64(b.total-a.total)
}
