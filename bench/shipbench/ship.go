package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/internal/service"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// result is what one shipping run measured.
type result struct {
	Run           int
	Bin           string
	MasterStartup time.Duration // `start` to state streaming: spool opened, capture connected
	SlaveStartup  time.Duration // slave `start` until it returned: connected and streaming
	Elapsed       time.Duration // slave `start` until its received_position is the master's last
	Received      int64         // spool bytes in the slave's spool at the end
	MasterHWM     int64         // VmHWM of the master service at the end
	SlaveHWM      int64         // VmHWM of the slave service at the end
	MasterRSS     int64         // largest VmRSS sampled while shipping
	SlaveRSS      int64
	MasterCPU     time.Duration // CPU time the master used while shipping
	SlaveCPU      time.Duration // CPU time the slave used, all of its life
	PostgresCPU   time.Duration // CPU time of the PostgreSQL cluster while shipping
	OtherCPU      time.Duration // CPU time used by anything else while shipping
	Samples       int
}

// statusPoll is how often the slave's position is asked for; the control
// socket is asked directly, which costs far less than running `schedsync
// status --json` each time on a two-core machine.
const statusPoll = 20 * time.Millisecond

// shipOnce starts the master on the prefilled spool, then a new slave, and
// measures until the slave has received the whole backlog. Both services
// are stopped before it returns.
func shipOnce(ctx context.Context, e *env, bin string, run int, b backlog, o options) (result, error) {
	r := result{Run: run, Bin: bin}
	e.master.bin = bin
	t := time.Now()
	if _, err := e.master.run(ctx, "start"); err != nil {
		return r, err
	}
	defer e.stopMaster()
	mst, err := waitStatus(ctx, e.master.spool, 30*time.Minute, func(st service.Status) bool {
		return st.State == service.StateStreaming
	})
	if err != nil {
		return r, fmt.Errorf("master: %w", err)
	}
	r.MasterStartup = time.Since(t)
	if mst.Position != b.Txns {
		return r, fmt.Errorf("master: position %d, the backlog ends at %d", mst.Position, b.Txns)
	}
	slave, err := e.newSlave(ctx, run)
	if err != nil {
		return r, err
	}
	defer slave.remove()
	slave.bin = bin
	if o.cold {
		if err := dropPageCache(); err != nil {
			return r, err
		}
	}
	return r, ship(ctx, e, slave, mst.PID, b, o, &r)
}

// ship starts the slave and measures until it has received the backlog.
func ship(ctx context.Context, e *env, slave *node, masterPID int, b backlog, o options, r *result) error {
	smp := startSampler(o.sample, masterPID)
	before := takeCPU(masterPID, e.postmasterPID())
	t0 := time.Now()
	if _, err := slave.run(ctx, "start"); err != nil {
		smp.finish()
		return err
	}
	r.SlaveStartup = time.Since(t0)
	sst, err := service.QueryStatus(ctx, slave.spool)
	if err != nil {
		smp.finish()
		return fmt.Errorf("slave: %w", err)
	}
	smp.watch(sst.PID)
	_, err = waitStatus(ctx, slave.spool, 30*time.Minute, func(st service.Status) bool {
		return st.ReceivedPosition >= b.Txns
	})
	r.Elapsed = time.Since(t0)
	peaks, n := smp.finish()
	if err != nil {
		return fmt.Errorf("slave: %w", err)
	}
	after := takeCPU(masterPID, e.postmasterPID())
	r.MasterRSS, r.SlaveRSS, r.Samples = peaks[masterPID], peaks[sst.PID], n
	_, r.MasterHWM, _ = benchkit.ProcMem(masterPID)
	_, r.SlaveHWM, _ = benchkit.ProcMem(sst.PID)
	r.SlaveCPU, _ = benchkit.ProcCPU(sst.PID)
	r.MasterCPU = after.master - before.master
	r.PostgresCPU = after.postgres - before.postgres
	r.OtherCPU = max(0, after.system-before.system-r.MasterCPU-r.SlaveCPU-r.PostgresCPU)
	r.Received = dirSize(filepath.Join(slave.spool, "spool"), "*.seg")
	return nil
}

// cpuUse is the CPU time used so far by the master, by PostgreSQL and by
// all processes together.
type cpuUse struct{ master, postgres, system time.Duration }

// takeCPU reads the CPU times; one that cannot be read is 0.
func takeCPU(masterPID, postmasterPID int) cpuUse {
	var u cpuUse
	u.master, _ = benchkit.ProcCPU(masterPID)
	u.postgres, _ = treeCPU(postmasterPID)
	u.system, _ = benchkit.SystemBusy()
	return u
}

// waitStatus polls a service's status until done accepts it. A service
// that stopped or fails is an error at once.
func waitStatus(ctx context.Context, dir string, limit time.Duration, done func(service.Status) bool) (service.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		st, err := service.QueryStatus(ctx, dir)
		switch {
		case err == nil && done(st):
			return st, nil
		case err == nil && (st.State == service.StateFailed || st.State == service.StateNeedsResync):
			return st, fmt.Errorf("state %s: %s", st.State, st.Error)
		case errors.Is(err, service.ErrNotRunning):
			return st, fmt.Errorf("the service stopped; see %s", filepath.Join(dir, "schedsync.log"))
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("waited %s: state %s, received %d, error %q: %w", limit, st.State, st.ReceivedPosition, st.Error, ctx.Err())
		case <-time.After(statusPoll):
		}
	}
}

// waitIdle waits, up to limit, until the CPUs were less than 10 % busy
// over a second: other people's tests on a shared machine distort the
// figures.
func waitIdle(ctx context.Context, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		b0, _ := benchkit.SystemBusy()
		time.Sleep(time.Second)
		b1, _ := benchkit.SystemBusy()
		if float64(b1-b0) < 0.1*float64(time.Second)*float64(runtime.NumCPU()) {
			return
		}
	}
	if ctx.Err() == nil {
		fmt.Printf("the CPUs are still busy after %s; running anyway\n", limit)
	}
}

// dropPageCache makes the master read its spool from disk (root only).
func dropPageCache() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop the page cache (-cold needs root): %w", err)
	}
	return nil
}

func dirSize(dir, pattern string) int64 {
	files, _ := filepath.Glob(filepath.Join(dir, pattern))
	var n int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			n += st.Size()
		}
	}
	return n
}
