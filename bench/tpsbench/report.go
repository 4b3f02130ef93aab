package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// aim is the ratio logical capture should keep of the tps without
// schedsync.
const aim = 0.95

// printCommand prints the command line and every setting, defaults
// included, so that a result can be reproduced.
func printCommand(o options) {
	fmt.Printf("command: tpsbench %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("settings: -duration %s -rounds %d -scale %d -clients %d -threads %d -modes %s -with-slave=%t\n",
		o.duration, o.rounds, o.scale, o.clients, o.threads, strings.Join(o.modes, ","), o.withSlave)
}

// printMachine says what the figures were taken on: they mean little
// without the CPU count, the load others put on it, and the versions.
func printMachine(ctx context.Context, w *world, o options) {
	fmt.Println(benchkit.Machine())
	v, err := w.serverVersion(ctx)
	if err != nil {
		v = "unknown: " + err.Error()
	}
	fmt.Println("postgresql:", v)
	if o.needsBinary() {
		fmt.Printf("schedsync: %s (%s)\n", schedsyncVersion(ctx, o.bin), o.bin)
	}
}

// schedsyncVersion is `schedsync version` (version, commit, Go) on one line.
func schedsyncVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "version unknown: " + err.Error()
	}
	return strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), "; ")
}

func printMeasurement(m measurement) {
	fmt.Printf("round %d %s: %.1f tps", m.Round, m.Mode, m.TPS)
	if m.Mode != modeNone {
		fmt.Printf(", master service CPU %s", secs(m.MasterCPU))
		if m.SlaveCPU >= 0 {
			fmt.Printf(", slave service CPU %s", secs(m.SlaveCPU))
		}
		fmt.Printf(", capture drained %s after pgbench", secs(m.Drain))
	}
	fmt.Printf(", machine busy %s", secs(m.BusyCPU))
	if m.LatP50 > 0 {
		fmt.Printf(", commit latency avg %.2f ms, p50 %.2f ms, p99 %.2f ms", m.LatAvg, m.LatP50, m.LatP99)
	}
	fmt.Println()
}

// secs formats a duration in seconds; negative means unknown.
func secs(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// modeSummary is one mode's measurements, in round order.
type modeSummary struct {
	mode string
	tps  []float64
	// per round; negative values are unknown and left out of medians
	masterCPU, slaveCPU, busyCPU, drain []time.Duration
	latAvg, latP50, latP99              []float64 // with -rate
}

func summarize(o options, results []measurement) []modeSummary {
	var out []modeSummary
	for _, mode := range o.modes {
		s := modeSummary{mode: mode}
		for _, m := range results {
			if m.Mode != mode {
				continue
			}
			s.tps = append(s.tps, m.TPS)
			s.masterCPU = append(s.masterCPU, m.MasterCPU)
			s.slaveCPU = append(s.slaveCPU, m.SlaveCPU)
			s.busyCPU = append(s.busyCPU, m.BusyCPU)
			s.drain = append(s.drain, m.Drain)
			if m.LatP50 > 0 {
				s.latAvg = append(s.latAvg, m.LatAvg)
				s.latP50 = append(s.latP50, m.LatP50)
				s.latP99 = append(s.latP99, m.LatP99)
			}
		}
		out = append(out, s)
	}
	return out
}

// printSummary prints the table the run is for: tps per round, the
// median, and its ratio to none's median. CPU columns are medians over the
// rounds, per pgbench run.
func printSummary(o options, results []measurement) {
	if len(results) == 0 {
		return
	}
	sums := summarize(o, results)
	var base float64
	for _, s := range sums {
		if s.mode == modeNone && len(s.tps) > 0 {
			base = benchkit.Median(s.tps)
		}
	}
	fmt.Printf("\n== summary: pgbench -c %d -j %d -T %d -n -M prepared, scale %d, %d CPUs\n",
		o.clients, o.threads, int(o.duration.Round(time.Second).Seconds()), o.scale, runtime.NumCPU())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	header := "mode\trounds\ttps per round\tmedian tps\tratio to none\tmaster CPU\t"
	if o.withSlave {
		header += "slave CPU\t"
	}
	fmt.Fprintln(tw, header+"machine busy\tdrain\t")
	for _, s := range sums {
		fmt.Fprintln(tw, summaryRow(o, s, base))
	}
	_ = tw.Flush()
	if o.rate > 0 {
		fmt.Printf("\n== commit latency at pgbench -R %d (medians over the rounds, ms)\n", o.rate)
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "mode\tavg\tp50\tp99\t")
		for _, s := range sums {
			if len(s.latAvg) > 0 {
				fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t\n", s.mode, benchkit.Median(s.latAvg), benchkit.Median(s.latP50), benchkit.Median(s.latP99))
			}
		}
		_ = tw.Flush()
	}
	printAim(sums, base)
}

func summaryRow(o options, s modeSummary, base float64) string {
	cells := []string{s.mode, strconv.Itoa(len(s.tps)), "-", "-", "-"}
	if len(s.tps) > 0 {
		per := make([]string, len(s.tps))
		for i, t := range s.tps {
			per[i] = strconv.FormatFloat(t, 'f', 1, 64)
		}
		med := benchkit.Median(s.tps)
		cells[2], cells[3] = strings.Join(per, " "), fmt.Sprintf("%.1f", med)
		if base > 0 {
			cells[4] = fmt.Sprintf("%.3f", med/base)
		}
	}
	cells = append(cells, secs(medianKnown(s.masterCPU)))
	if o.withSlave {
		cells = append(cells, secs(medianKnown(s.slaveCPU)))
	}
	cells = append(cells, secs(medianKnown(s.busyCPU)), secs(medianKnown(s.drain)))
	return strings.Join(cells, "\t") + "\t"
}

// printAim states the tracked figure; it is information, not a verdict
// that changes the exit status.
func printAim(sums []modeSummary, base float64) {
	for _, s := range sums {
		if s.mode == modeLogical && len(s.tps) > 0 && base > 0 {
			r := benchkit.Median(s.tps) / base
			verdict := "met"
			if r < aim {
				verdict = "not met"
			}
			fmt.Printf("aim logical >= %.2f x none: %.3f, %s\n", aim, r, verdict)
		}
	}
}

// medianKnown is the median of the non-negative (known) durations; -1 if
// none is known.
func medianKnown(v []time.Duration) time.Duration {
	var f []float64
	for _, d := range v {
		if d >= 0 {
			f = append(f, float64(d))
		}
	}
	if len(f) == 0 {
		return -1
	}
	return time.Duration(benchkit.Median(f))
}
