package main

import (
	"debug/buildinfo"
	"fmt"
	"runtime"
	"slices"
	"time"
)

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// mbps is n bytes over d in MB/s (10^6 bytes).
func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// printBinaries says which source each binary was built from.
func printBinaries(bins []string) {
	for _, bin := range bins {
		info, err := buildinfo.ReadFile(bin)
		if err != nil {
			fmt.Printf("binary %s: %v\n", bin, err)
			continue
		}
		rev, modified := "unknown", ""
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision":
				rev = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				modified = " with uncommitted changes"
			}
		}
		fmt.Printf("binary %s: commit %s%s, %s\n", bin, rev, modified, info.GoVersion)
	}
}

func printBacklog(b backlog) {
	fmt.Printf("backlog: %d transactions, %s raw changes, %s spool bytes (spool/raw %.3f), written in %s (%.0f MB/s raw)\n",
		b.Txns, mib(b.RawBytes), mib(b.SpoolBytes), b.ratio(), b.Elapsed.Round(time.Millisecond), mbps(b.RawBytes, b.Elapsed))
}

func printResult(r result, b backlog) {
	fmt.Printf("run %d (%s): shipped %s spool bytes (%s raw) in %s: %.0f MB/s spool, %.0f MB/s raw\n",
		r.Run, r.Bin, mib(b.SpoolBytes), mib(b.RawBytes), r.Elapsed.Round(time.Millisecond),
		mbps(b.SpoolBytes, r.Elapsed), mbps(b.RawBytes, r.Elapsed))
	fmt.Printf("  master: startup %s, VmHWM %s, peak sampled VmRSS %s, CPU %s while shipping\n",
		r.MasterStartup.Round(time.Millisecond), mib(r.MasterHWM), mib(r.MasterRSS), r.MasterCPU)
	fmt.Printf("  slave:  start returned after %s, VmHWM %s, peak sampled VmRSS %s, CPU %s; its spool holds %s\n",
		r.SlaveStartup.Round(time.Millisecond), mib(r.SlaveHWM), mib(r.SlaveRSS), r.SlaveCPU, mib(r.Received))
	fmt.Printf("  %d RSS samples; CPU used meanwhile by PostgreSQL %s, by other processes %s (of %s available)\n",
		r.Samples, r.PostgresCPU, r.OtherCPU.Round(10*time.Millisecond), (time.Duration(runtime.NumCPU()) * r.Elapsed).Round(10*time.Millisecond))
}

// printSummary prints the median of each figure over the runs.
func printSummary(bin string, rs []result, b backlog) {
	elapsed := median(rs, func(r result) int64 { return int64(r.Elapsed) })
	d := time.Duration(elapsed)
	fmt.Printf("\n%s\nmedian of %d runs: %s spool bytes (%s raw, spool/raw %.3f) in %s: %.0f MB/s spool, %.0f MB/s raw\n",
		bin, len(rs), mib(b.SpoolBytes), mib(b.RawBytes), b.ratio(), d.Round(time.Millisecond), mbps(b.SpoolBytes, d), mbps(b.RawBytes, d))
	fmt.Printf("median VmHWM: master %s, slave %s; median CPU: master %s, slave %s; master startup %s\n",
		mib(median(rs, func(r result) int64 { return r.MasterHWM })),
		mib(median(rs, func(r result) int64 { return r.SlaveHWM })),
		time.Duration(median(rs, func(r result) int64 { return int64(r.MasterCPU) })),
		time.Duration(median(rs, func(r result) int64 { return int64(r.SlaveCPU) })),
		time.Duration(median(rs, func(r result) int64 { return int64(r.MasterStartup) })).Round(time.Millisecond))
}

// median is the middle value (the lower middle for an even count).
func median(rs []result, f func(result) int64) int64 {
	vs := make([]int64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	slices.Sort(vs)
	return vs[(len(vs)-1)/2]
}
