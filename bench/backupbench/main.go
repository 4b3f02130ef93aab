// Command backupbench measures `schedsync backup` + `schedsync restore`
// against `pg_dump -Fc` + `pg_restore --data-only` on the same data, in
// the same run, on this machine.
//
//	go run ./bench/backupbench [-scale 20] [-runs 3] [-bin bin/schedsync]
//
// It starts a throwaway cluster (internal/testkit/pgtest), runs `pgbench -i -s
// SCALE` in a master database and `pgbench -i -I dtp` (the same tables,
// empty, with their primary keys) in a slave database, installs schedsync
// on both (capture.allow_no_pk, for pgbench_history), starts the master's
// sync service (a backup takes its snapshot from its capture), then, -runs
// times:
//
//  1. schedsync backup --out FILE on the master;
//  2. schedsync restore --in FILE on the slave (verify pass, then one
//     transaction: TRUNCATE, COPY, sequences, position);
//  3. pg_dump -Fc -n public -f DUMP on the master;
//  4. TRUNCATE the slave's tables (not timed), then pg_restore --data-only
//     --disable-triggers -d SLAVE DUMP (and, with -pg-jobs N > 1, again
//     with -j N).
//
// Each step is a process started by the tool; its wall time is measured.
// After each restore the slave's tables are compared with the master's
// (row count and a sum). It is a measuring tool, not a test.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/bench/benchkit"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

type options struct {
	scale  int
	runs   int
	bin    string
	pgJobs int
	keep   bool
	// walMinimal runs the cluster with wal_level = minimal, where a COPY
	// into a table truncated in the same transaction writes no WAL.
	walMinimal bool
}

func main() {
	var o options
	flag.IntVar(&o.scale, "scale", 20, "pgbench -i -s")
	flag.IntVar(&o.runs, "runs", 3, "measurements of each step; the median is reported")
	flag.StringVar(&o.bin, "bin", "", "schedsync binary (default: build ./cmd/schedsync)")
	flag.IntVar(&o.pgJobs, "pg-jobs", 2, "also measure pg_restore -j N (0 or 1: do not)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.BoolVar(&o.walMinimal, "wal-minimal", false, "run the cluster with wal_level = minimal (default: logical, as pgtest)")
	flag.Parse()
	benchkit.Main("backupbench", func(ctx context.Context) error { return run(ctx, o) })
}

// bench is the world the steps run in.
type bench struct {
	o                   options
	c                   *pgtest.Cluster
	dir                 string
	bin                 string
	masterURL, slaveURL string
	times               map[string][]time.Duration
	sizes               map[string]int64
	rss                 map[string]int64 // the largest max RSS of a step's process, KiB
	syncPort            int              // the master's sync.listen, on loopback
}

func run(ctx context.Context, o options) error {
	dir, done, err := benchkit.WorkDir("backupbench", o.keep)
	if err != nil {
		return err
	}
	defer done()
	var settings map[string]string
	if o.walMinimal {
		settings = map[string]string{"wal_level": "minimal", "max_wal_senders": "0"}
	}
	c, err := pgtest.Start(ctx, pgtest.Options{Settings: settings})
	if err != nil {
		return err
	}
	defer c.Stop()
	b := &bench{o: o, c: c, dir: dir, times: map[string][]time.Duration{}, sizes: map[string]int64{}, rss: map[string]int64{}}
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.cmd(ctx, b.bin, "--config", b.config("master"), "start"); err != nil {
		return err
	}
	defer func() { _ = b.cmd(context.Background(), b.bin, "--config", b.config("master"), "stop") }()
	fmt.Println("warm-up run (not counted)")
	if err := b.once(ctx); err != nil {
		return err
	}
	b.times = map[string][]time.Duration{}
	for i := range o.runs {
		fmt.Printf("run %d of %d\n", i+1, o.runs)
		if err := b.once(ctx); err != nil {
			return err
		}
	}
	b.report()
	return nil
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.masterURL, err = b.c.CreateDB(ctx, "bench_master"); err != nil {
		return err
	}
	if b.slaveURL, err = b.c.CreateDB(ctx, "bench_slave"); err != nil {
		return err
	}
	start := time.Now()
	if err := b.cmd(ctx, b.c.Bin("pgbench"), "-i", "-q", "-s", fmt.Sprint(b.o.scale), b.masterURL); err != nil {
		return err
	}
	fmt.Printf("pgbench -i -s %d in %s\n", b.o.scale, time.Since(start).Round(time.Millisecond))
	// Hint bits and the visibility map are set once, before any step, so
	// that the first step to read the tables does not pay for it.
	if err := b.sql(ctx, b.masterURL, "VACUUM (FREEZE, ANALYZE)"); err != nil {
		return err
	}
	if err := b.cmd(ctx, b.c.Bin("pgbench"), "-i", "-q", "-I", "dtp", b.slaveURL); err != nil {
		return err
	}
	if b.bin = b.o.bin; b.bin == "" {
		b.bin = filepath.Join(b.dir, "schedsync")
		if err := b.cmd(ctx, "go", "build", "-o", b.bin, "./cmd/schedsync"); err != nil {
			return err
		}
	}
	for _, role := range []string{"master", "slave"} {
		if err := b.cmd(ctx, b.bin, "--config", b.config(role), "install"); err != nil {
			return err
		}
	}
	return nil
}

// config writes the node's sync.properties and returns its path.
func (b *bench) config(role string) string {
	path := filepath.Join(b.dir, role+".properties")
	url := map[string]string{"master": b.masterURL, "slave": b.slaveURL}[role]
	if b.syncPort == 0 {
		port, err := benchkit.FreePort()
		if err != nil {
			panic(err)
		}
		b.syncPort = port
	}
	props := fmt.Sprintf("node.role=%s\nnode.name=bench-%s\nrepository.url=%s\ncapture.allow_no_pk=true\n"+
		"sync.token=bench\nsync.listen=127.0.0.1:%d\nmaster.host=127.0.0.1\nmaster.port=%d\nspool.dir=%s\n",
		role, role, url, b.syncPort, b.syncPort, filepath.Join(b.dir, role))
	if err := os.WriteFile(path, []byte(props), 0o600); err != nil {
		panic(err)
	}
	return path
}

// step is one measured command; prep runs before it, untimed.
type step struct {
	name string
	prep func() error
	argv []string
}

func (b *bench) once(ctx context.Context) error {
	file, dump := filepath.Join(b.dir, "bench.ssbak"), filepath.Join(b.dir, "bench.dump")
	steps := []step{
		{"schedsync backup", nil, []string{b.bin, "--config", b.config("master"), "backup", "--out", file}},
		{"schedsync restore", nil, []string{b.bin, "--config", b.config("slave"), "restore", "--in", file}},
		{"pg_dump -Fc", nil, []string{b.c.Bin("pg_dump"), "-Fc", "-n", "public", "-f", dump, b.masterURL}},
		{"pg_restore --data-only", b.truncateSlave,
			[]string{b.c.Bin("pg_restore"), "--data-only", "--disable-triggers", "-d", b.slaveURL, dump}},
	}
	if b.o.pgJobs > 1 {
		steps = append(steps, step{fmt.Sprintf("pg_restore --data-only -j %d", b.o.pgJobs), b.truncateSlave,
			[]string{b.c.Bin("pg_restore"), "--data-only", "--disable-triggers", "-j", fmt.Sprint(b.o.pgJobs), "-d", b.slaveURL, dump}})
	}
	for _, s := range steps {
		if s.prep != nil {
			if err := s.prep(); err != nil {
				return err
			}
		}
		if err := b.checkpoint(ctx); err != nil {
			return err
		}
		start := time.Now()
		rss, err := b.measure(ctx, s.argv[0], s.argv[1:]...)
		if err != nil {
			return err
		}
		d := time.Since(start)
		b.rss[s.name] = max(b.rss[s.name], rss)
		b.times[s.name] = append(b.times[s.name], d)
		fmt.Printf("  %-32s %8s\n", s.name, d.Round(time.Millisecond))
		if strings.Contains(s.name, "restore") {
			if err := b.compare(ctx); err != nil {
				return fmt.Errorf("after %s: %w", s.name, err)
			}
			// The VACUUM a loaded table needs before index-only scans and
			// without hint-bit writes: work the restore leaves behind.
			start := time.Now()
			if err := b.sql(ctx, b.slaveURL, "VACUUM"); err != nil {
				return err
			}
			b.times[s.name+", then VACUUM"] = append(b.times[s.name+", then VACUUM"], time.Since(start))
		}
	}
	for name, path := range map[string]string{"schedsync backup": file, "pg_dump -Fc": dump} {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		b.sizes[name] = fi.Size()
	}
	return nil
}

// checkpoint starts each step with no dirty buffers to write, and waits
// for autovacuum to be done with the slave's freshly loaded tables.
func (b *bench) checkpoint(ctx context.Context) error {
	if err := b.sql(ctx, b.slaveURL, "VACUUM (ANALYZE)"); err != nil {
		return err
	}
	return b.sql(ctx, b.masterURL, "CHECKPOINT")
}

func (b *bench) truncateSlave() error {
	return b.sql(context.Background(), b.slaveURL,
		"TRUNCATE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history")
}

// compare checks the slave holds the master's rows.
func (b *bench) compare(ctx context.Context) error {
	q := `SELECT (SELECT count(*) || '/' || sum(abalance) || '/' || sum(aid::bigint * bid) FROM pgbench_accounts) || ' ' ||
		(SELECT count(*) FROM pgbench_tellers) || ' ' || (SELECT count(*) FROM pgbench_branches)`
	var m, s string
	for url, dst := range map[string]*string{b.masterURL: &m, b.slaveURL: &s} {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		err = c.QueryRow(ctx, q).Scan(dst)
		c.Close(ctx)
		if err != nil {
			return err
		}
	}
	if m != s {
		return fmt.Errorf("slave %s, master %s", s, m)
	}
	return nil
}

func (b *bench) sql(ctx context.Context, url, sql string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql)
	return err
}

func (b *bench) cmd(ctx context.Context, name string, args ...string) error {
	_, err := b.measure(ctx, name, args...)
	return err
}

// measure runs a command and returns its max RSS in KiB.
func (b *bench) measure(ctx context.Context, name string, args ...string) (int64, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "SCHEDSYNC_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss, nil
	}
	return 0, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func (b *bench) report() {
	wal := "logical"
	if b.o.walMinimal {
		wal = "minimal"
	}
	fmt.Printf("\nmedian of %d runs, pgbench scale %d, wal_level %s:\n", b.o.runs, b.o.scale, wal)
	names := []string{"schedsync backup", "schedsync restore", "pg_dump -Fc", "pg_restore --data-only"}
	if b.o.pgJobs > 1 {
		names = append(names, fmt.Sprintf("pg_restore --data-only -j %d", b.o.pgJobs))
	}
	for _, n := range names {
		if strings.Contains(n, "restore") {
			names = append(names, n+", then VACUUM")
		}
	}
	for _, n := range names {
		var all []string
		for _, d := range b.times[n] {
			all = append(all, d.Round(time.Millisecond).String())
		}
		rss := "            "
		if b.rss[n] > 0 {
			rss = fmt.Sprintf("RSS %4d MiB", b.rss[n]/1024)
		}
		fmt.Printf("  %-40s %8s   %s   (%s)\n", n, median(b.times[n]).Round(time.Millisecond), rss, strings.Join(all, ", "))
	}
	ours := median(b.times["schedsync backup"]) + median(b.times["schedsync restore"])
	theirs := median(b.times["pg_dump -Fc"]) + median(b.times["pg_restore --data-only"])
	fmt.Println("  (RSS: the client process's maximum; then VACUUM: the slave's first VACUUM after that restore)")
	fmt.Printf("  backup + restore: schedsync %s, pg_dump + pg_restore %s: ratio %.2f\n",
		ours.Round(time.Millisecond), theirs.Round(time.Millisecond), ours.Seconds()/theirs.Seconds())
	fmt.Printf("  file sizes: schedsync %.1f MiB, pg_dump -Fc %.1f MiB\n",
		float64(b.sizes["schedsync backup"])/(1<<20), float64(b.sizes["pg_dump -Fc"])/(1<<20))
}
