package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"
)

// modeResult is everything measured for one replication system.
type modeResult struct {
	Mode    string
	Lag     lagResult
	Backlog backlogResult
	BigTxn  *bigTxnResult `json:",omitempty"`
}

// writeJSON writes the results for bench/compare (make bench).
func writeJSON(path string, rs []modeResult) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// quantiles of the lag samples, nearest rank.
type quantiles struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func lagQuantiles(samples []time.Duration) quantiles {
	s := slices.Clone(samples)
	slices.Sort(s)
	q := quantiles{N: len(s)}
	if len(s) == 0 {
		return q
	}
	at := func(p float64) time.Duration {
		i := int(p*float64(len(s)) + 0.999999)
		return s[min(max(i-1, 0), len(s)-1)]
	}
	q.P50, q.P90, q.P99, q.Max = at(0.50), at(0.90), at(0.99), s[len(s)-1]
	return q
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func printModeResult(r modeResult) {
	q := lagQuantiles(r.Lag.Samples)
	b := r.Lag.Bench
	fmt.Printf("\n%s: lag over %d probes: p50 %s, p90 %s, p99 %s, max %s\n", r.Mode, q.N, ms(q.P50), ms(q.P90), ms(q.P99), ms(q.Max))
	fmt.Printf("  pgbench: %d transactions, %.1f tps, latency average %.3f ms (stddev %.3f ms), schedule lag %.3f ms\n",
		b.Txns, b.TPS, b.LatencyMS, b.StddevMS, b.ScheduleMS)
	printCPU(r.Lag.CPU, r.Lag.IdleCPU)
	if r.Backlog.Bench.Txns > 0 {
		printBacklog(r.Backlog)
	}
}

func printCPU(u cpuUsage, idle float64) {
	fmt.Printf("  CPU over %s, %% of one CPU (%d CPUs = %d%%), and time runnable but waiting for a CPU, %% of the interval:\n",
		u.Elapsed.Round(time.Millisecond), runtime.NumCPU(), 100*runtime.NumCPU())
	for _, l := range u.byLabel() {
		label := l.Label
		if l.Repl {
			label += " *"
		}
		fmt.Printf("    %-36s %6.1f%%  run queue %5.1f%%  (%d processes)\n", label, u.percent(l.CPU), u.percent(l.Wait), l.N)
	}
	fmt.Printf("    %-36s %6.1f%%\n", "replication (marked *)", u.percent(u.replication()))
	fmt.Printf("    %-36s %6.1f%%\n", "observer (lagbench and its backends)", u.percent(u.observer()))
	fmt.Printf("    %-36s %6.1f%%  (machine busy %.1f%%, listed %.1f%%)\n",
		"unaccounted", u.percent(u.Busy-u.accounted()), u.percent(u.Busy), u.percent(u.accounted()))
	if idle >= 0 {
		fmt.Printf("    %.1f%% of the machine was busy in the second before pgbench started\n", idle)
	}
}

func printBacklog(b backlogResult) {
	fmt.Printf("  backlog: %d transactions (%d row changes) by unthrottled pgbench at %.0f tps (latency %.3f ms)\n",
		b.txns(), rowsPerTxn*b.txns(), b.Bench.TPS, b.Bench.LatencyMS)
	fmt.Printf("  captured %s after pgbench ended; slave start took %s\n", b.CaptureWait.Round(time.Millisecond), b.Start.Round(time.Millisecond))
	if b.Positions > 0 {
		fmt.Printf("  from start: all %d positions received in %s, applied in %s\n",
			b.Positions, b.Received.Round(time.Millisecond), b.Applied.Round(time.Millisecond))
	}
	fmt.Printf("  caught up (marker visible) %s after start: %.0f tx/s, %.0f rows/s\n",
		b.CatchUp.Round(time.Millisecond), perSecond(b.txns(), b.CatchUp), perSecond(rowsPerTxn*b.txns(), b.CatchUp))
	printCPU(b.CPU, -1)
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// printSummary prints the figures side by side, as a Markdown table.
func printSummary(o options, rs []modeResult) {
	observer := fmt.Sprintf("SELECT every %s", o.poll)
	if o.observe == "notify" {
		observer = "LISTEN/NOTIFY"
	}
	backlog := "for " + o.backlogDur.String()
	if o.backlogTxns > 0 {
		backlog = fmt.Sprintf("-t %d per client", max(1, o.backlogTxns/o.clients))
	}
	fmt.Printf("\nsummary: pgbench -c %d -j %d --rate %d for %s (lag; a probe every %s, seen on the slave by %s), unthrottled %s (backlog)\n\n",
		o.clients, o.threads, o.rate, o.duration, o.probeEvery, observer, backlog)
	fmt.Println("| mode | probes | lag p50 | p90 | p99 | max | pgbench tps | latency avg | replication CPU | backlog tx | catch-up | tx/s | rows/s |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		q := lagQuantiles(r.Lag.Samples)
		b := r.Backlog
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %.0f | %.3f ms | %.0f%% | %d | %s | %.0f | %.0f |\n",
			r.Mode, q.N, ms(q.P50), ms(q.P90), ms(q.P99), ms(q.Max), r.Lag.Bench.TPS, r.Lag.Bench.LatencyMS,
			r.Lag.CPU.percent(r.Lag.CPU.replication()), b.txns(), b.CatchUp.Round(time.Millisecond),
			perSecond(b.txns(), b.CatchUp), perSecond(rowsPerTxn*b.txns(), b.CatchUp))
	}
}
