package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// benchResult is what pgbench reports at the end of a run.
type benchResult struct {
	Txns       int64   // transactions actually processed
	TPS        float64 // without initial connection time
	LatencyMS  float64 // average
	StddevMS   float64 // latency stddev; pgbench prints it only with --rate or -P
	ScheduleMS float64 // average lag behind the --rate schedule
}

// benchRun is a pgbench started in the background.
type benchRun struct {
	pid  int // 0 if it did not start
	done chan struct{}
	res  benchResult
	err  error
}

// benchLoad is how much pgbench runs: for a duration, or a number of
// transactions (split over the clients); at a rate, or unthrottled (0).
type benchLoad struct {
	duration time.Duration
	txns     int
	rate     int
}

// startBench runs pgbench's default (TPC-B-like) script on the master
// without vacuuming first: -c clients -j threads, -T or -t, [--rate].
func startBench(ctx context.Context, c *pgtest.Cluster, url string, o options, load benchLoad) *benchRun {
	args := []string{"-n", "-c", strconv.Itoa(o.clients), "-j", strconv.Itoa(o.threads)}
	if load.txns > 0 {
		args = append(args, "-t", strconv.Itoa(max(1, load.txns/o.clients)))
	} else {
		args = append(args, "-T", strconv.Itoa(int(load.duration.Round(time.Second).Seconds())))
	}
	if load.rate > 0 {
		args = append(args, "--rate", strconv.Itoa(load.rate))
	}
	b := &benchRun{done: make(chan struct{})}
	cmd := exec.CommandContext(ctx, c.Bin("pgbench"), append(args, url)...)
	cmd.Env = benchkit.CleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.err = fmt.Errorf("start pgbench: %w", err)
		close(b.done)
		return b
	}
	b.pid = cmd.Process.Pid
	go func() {
		defer close(b.done)
		if err := cmd.Wait(); err != nil {
			b.err = fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, out.String())
			return
		}
		b.res, b.err = parseBench(out.String())
	}()
	return b
}

func (b *benchRun) wait() (benchResult, error) {
	<-b.done
	return b.res, b.err
}

var (
	reTxns     = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	reTPS      = regexp.MustCompile(`tps = ([\d.]+)`)
	reLatency  = regexp.MustCompile(`latency average = ([\d.]+) ms`)
	reStddev   = regexp.MustCompile(`latency stddev = ([\d.]+) ms`)
	reSchedule = regexp.MustCompile(`rate limit schedule lag: avg ([\d.]+)`)
)

func parseBench(out string) (benchResult, error) {
	var r benchResult
	m := reTxns.FindStringSubmatch(out)
	t := reTPS.FindStringSubmatch(out)
	if m == nil || t == nil {
		return r, fmt.Errorf("cannot read pgbench's output:\n%s", out)
	}
	r.Txns, _ = strconv.ParseInt(m[1], 10, 64)
	r.TPS, _ = strconv.ParseFloat(t[1], 64)
	r.LatencyMS = floatMatch(reLatency, out)
	r.StddevMS = floatMatch(reStddev, out)
	r.ScheduleMS = floatMatch(reSchedule, out)
	return r, nil
}

func floatMatch(re *regexp.Regexp, s string) float64 {
	m := re.FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return f
}
