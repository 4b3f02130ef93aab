// Command compare is `make bench`: schedsync in both capture modes against
// PostgreSQL's native logical replication, side by side on this machine,
// with every figure of issue 14 and its ratio to native.
//
//	go run ./bench/compare [-rounds 2] [-out BENCHMARKS.md] [-readme README.md] [-plot docs/bench-lag.png]
//
// It builds schedsync and the measuring tools once, then runs them, each
// on its own throwaway clusters:
//
//   - lagbench, one replication system at a time, the order rotated every
//     round so that a noisy machine does not bias one side: lag at a
//     steady 1,000 tx/s (probes seen on the slave by NOTIFY), the catch-up
//     of a 20,000-transaction pgbench backlog (-c 4, scale 10), and one
//     UPDATE of the million pgbench_accounts rows (with the services' peak
//     RSS);
//   - tpsbench: pgbench tps on the master with nothing, with each
//     pipeline running (master and slave services, or a native
//     subscription), modes interleaved within each round, and with the
//     capture floors (audit triggers installed and nothing reading them;
//     pg_recvlogical on a pgoutput slot);
//   - backupbench: backup + restore against pg_dump -Fc + pg_restore
//     --data-only at scale 20;
//   - shipbench: shipping a 1 GiB spool backlog.
//
// The figures are medians over the rounds. It writes the table between
// the compare markers of BENCHMARKS.md (with the machine and the
// PostgreSQL version) and of the README, and a PNG of lag over time for
// every system. It asserts nothing: it is a measuring tool.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

type options struct {
	rounds   int
	lagFor   time.Duration
	tpsFor   time.Duration
	out      string
	readme   string
	plot     string
	skip     map[string]bool
	keepLogs string
	saved    string
}

func parseFlags() options {
	var o options
	var skip string
	flag.IntVar(&o.rounds, "rounds", 2, "rounds of lagbench (every system once, order rotated) and of tpsbench")
	flag.DurationVar(&o.lagFor, "lag-duration", 20*time.Second, "pgbench time at 1,000 tx/s for the lag")
	flag.DurationVar(&o.tpsFor, "tps-duration", 20*time.Second, "pgbench -T of each master-cost measurement")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "file whose compare section is rewritten (empty: print only)")
	flag.StringVar(&o.readme, "readme", "README.md", "file whose headline table is rewritten (empty: leave it)")
	flag.StringVar(&o.plot, "plot", "docs/bench-lag.png", "lag-over-time plot to write (empty: none)")
	flag.StringVar(&skip, "skip", "", "comma-separated parts to leave out: lag, tps, backup, ship (their figures then come from -results)")
	flag.StringVar(&o.saved, "results", "docs/bench-results.json", "every figure of the run, as JSON; a later run with -skip takes the parts it skips from here (empty: neither)")
	flag.StringVar(&o.keepLogs, "logs", "", "directory for every tool's full output (default: a temporary one, removed)")
	flag.Parse()
	o.skip = map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !slices.Contains([]string{"lag", "tps", "backup", "ship"}, s) {
				fmt.Fprintf(os.Stderr, "compare: -skip: unknown part %q (want lag, tps, backup, ship)\n", s)
				os.Exit(2)
			}
			o.skip[s] = true
		}
	}
	if o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "compare: -rounds must be at least 1")
		os.Exit(2)
	}
	return o
}

func main() {
	o := parseFlags()
	benchkit.Main("compare", func(ctx context.Context) error { return run(ctx, o) })
}

// systems are lagbench's modes, in the table's order.
var systems = []string{"trigger", "logical", "native"}

func run(ctx context.Context, o options) error {
	dir, done, err := benchkit.WorkDir("compare", false)
	if err != nil {
		return err
	}
	defer done()
	logs := o.keepLogs
	if logs == "" {
		logs = filepath.Join(dir, "logs")
	}
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(dir, "bin")
	fmt.Println("building schedsync and the measuring tools")
	if err := benchkit.BuildBinary(ctx, filepath.Join(bin, "schedsync")); err != nil {
		return err
	}
	for _, tool := range []string{"lagbench", "tpsbench", "backupbench", "shipbench"} {
		if err := goBuild(ctx, filepath.Join(bin, tool), "./bench/"+tool); err != nil {
			return err
		}
	}
	t := &tool{bin: bin, logs: logs}
	res := results{Machine: benchkit.Machine(), Started: time.Now(), Rounds: o.rounds}
	before, err := readTicks()
	if err != nil {
		return err
	}
	if !o.skip["lag"] {
		for round := range o.rounds {
			order := rotate(systems, round)
			for _, mode := range order {
				var rs []lagMode
				name := fmt.Sprintf("lagbench-r%d-%s", round+1, mode)
				if err := t.runJSON(ctx, name, &rs, "lagbench", "-mode", mode, "-scale", "10", "-rate", "1000",
					"-duration", o.lagFor.String(), "-observe", "notify", "-backlog-txns", "20000", "-bigtxn"); err != nil {
					return err
				}
				res.Lag = append(res.Lag, rs...)
			}
		}
	}
	if !o.skip["tps"] {
		if err := t.runJSON(ctx, "tpsbench", &res.TPS, "tpsbench", "-modes", "none,triggers,trigger,decoding,logical,native", "-with-slave",
			"-rounds", strconv.Itoa(o.rounds), "-duration", o.tpsFor.String()); err != nil {
			return err
		}
	}
	if !o.skip["backup"] {
		out, err := t.run(ctx, "backupbench", "backupbench", "-scale", "20", "-runs", "3")
		if err != nil {
			return err
		}
		if res.Backup, err = parseBackup(out); err != nil {
			return err
		}
	}
	if !o.skip["ship"] {
		out, err := t.run(ctx, "shipbench", "shipbench", "-backlog", "1GiB", "-runs", "3", "-idle-wait", "2m")
		if err != nil {
			return err
		}
		if res.ShipMBps, err = parseShip(out); err != nil {
			return err
		}
	}
	if res.PG, err = postgresVersion(ctx); err != nil {
		return err
	}
	after, err := readTicks()
	if err != nil {
		return err
	}
	res.StealPercent = stealPercent(before, after)
	if o.saved != "" {
		if err := res.fillSkipped(o.saved, o.skip); err != nil {
			return err
		}
		if err := res.save(o.saved); err != nil {
			return err
		}
	}
	table := res.table()
	fmt.Println("\n" + table)
	if o.plot != "" && len(res.Lag) > 0 {
		if err := plotLag(o.plot, res.Lag); err != nil {
			return err
		}
		fmt.Println("wrote", o.plot)
	}
	if o.out != "" {
		if err := rewriteSection(o.out, res.section(o.plot)); err != nil {
			return err
		}
		fmt.Println("wrote", o.out)
	}
	if o.readme != "" {
		if err := rewriteSection(o.readme, res.headline()); err != nil {
			return err
		}
		fmt.Println("wrote", o.readme)
	}
	return nil
}

// rotate is the systems in round's order: each round starts one later.
func rotate(s []string, round int) []string {
	k := round % len(s)
	return append(slices.Clone(s[k:]), s[:k]...)
}

func goBuild(ctx context.Context, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// tool runs the measuring tools, their output in logs.
type tool struct{ bin, logs string }

// run runs a tool with -bin, its output both shown and kept in logs.
func (t *tool) run(ctx context.Context, name, prog string, args ...string) (string, error) {
	args = append([]string{"-bin", filepath.Join(t.bin, "schedsync")}, args...)
	fmt.Printf("\n== %s %s\n", prog, strings.Join(args[2:], " "))
	log := filepath.Join(t.logs, name+".txt")
	cmd := exec.CommandContext(ctx, filepath.Join(t.bin, prog), args...)
	out, err := cmd.CombinedOutput()
	if werr := os.WriteFile(log, out, 0o644); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return "", fmt.Errorf("%s failed (%w); its output is in %s:\n%s", prog, err, log, tail(string(out), 30))
	}
	fmt.Print(tail(string(out), 12))
	return string(out), nil
}

// runJSON runs a tool with -json and decodes what it wrote into v.
func (t *tool) runJSON(ctx context.Context, name string, v any, prog string, args ...string) error {
	path := filepath.Join(t.logs, name+".json")
	if _, err := t.run(ctx, name, prog, append(args, "-json", path)...); err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

var (
	reBackup = regexp.MustCompile(`backup \+ restore: schedsync (\S+), pg_dump \+ pg_restore (\S+): ratio`)
	reShip   = regexp.MustCompile(`median of \d+ runs: .*: ([\d.]+) MB/s spool`)
)

func parseBackup(out string) (backupResult, error) {
	m := reBackup.FindStringSubmatch(out)
	if m == nil {
		return backupResult{}, fmt.Errorf("no \"backup + restore: ...\" line in backupbench's output")
	}
	ours, err1 := time.ParseDuration(m[1])
	theirs, err2 := time.ParseDuration(m[2])
	if err1 != nil || err2 != nil {
		return backupResult{}, fmt.Errorf("backupbench's figures %q, %q: %v %v", m[1], m[2], err1, err2)
	}
	return backupResult{Schedsync: ours, PgDump: theirs}, nil
}

func parseShip(out string) (float64, error) {
	m := reShip.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no \"median of N runs: ... MB/s spool\" line in shipbench's output")
	}
	return strconv.ParseFloat(m[1], 64)
}

// postgresVersion is the server's version line.
func postgresVersion(ctx context.Context) (string, error) {
	dir, err := pgtest.BinDir()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "postgres"), "--version").Output()
	return strings.TrimSpace(string(out)), err
}
