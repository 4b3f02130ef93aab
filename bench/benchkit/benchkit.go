// Package benchkit holds what the benchmark tools (bench/*bench)
// share: building the schedsync binary, running its commands, loopback
// ports, and reading CPU time from /proc. It is for those tools only.
package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BuildBinary builds cmd/schedsync of the module the tool belongs to into
// out. -buildvcs=auto, whatever GOFLAGS says: reports name the commit.
func BuildBinary(ctx context.Context, out string) error {
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("find the module: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=auto", "-o", out, "./cmd/schedsync")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/schedsync: %w\n%s", err, b)
	}
	return nil
}

// Run runs `bin --config config args...` and returns its output; name
// says which node in errors.
func Run(ctx context.Context, bin, config, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config", config}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("schedsync %s (%s): %w\n%s", strings.Join(args, " "), name, err, out)
	}
	return out, nil
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ClockTicks is USER_HZ, the unit of /proc's CPU times on Linux.
const ClockTicks = 100

// ProcStat returns the fields of /proc/PID/stat after the command name
// (which, in parentheses, may hold spaces): index 0 is field 3, the state.
func ProcStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return f, nil
}

// Ticks converts a /proc CPU time field to a duration.
func Ticks(field string) time.Duration {
	n, _ := strconv.ParseInt(field, 10, 64)
	return time.Duration(n) * time.Second / ClockTicks
}

// ProcCPU is the user and system CPU time a process has used.
func ProcCPU(pid int) (time.Duration, error) {
	f, err := ProcStat(pid)
	if err != nil {
		return 0, err
	}
	return Ticks(f[11]) + Ticks(f[12]), nil
}

// ProcMem reads a process's VmRSS and VmHWM (the peak RSS of its life),
// in bytes, from /proc/pid/status.
func ProcMem(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	return rss, hwm, sc.Err()
}

// Median is the middle of v, or the mean of the two middle values.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// SystemCPU is the first line of /proc/stat without its "cpu": the ticks
// all CPUs spent in user, nice, system, idle, iowait, irq, softirq,
// steal, guest and guest_nice since boot.
func SystemCPU() ([]string, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "cpu" {
		return nil, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	return f[1:], nil
}

// SystemBusy is the CPU time all CPUs spent busy (not idle, not waiting
// for I/O, not stolen) since boot, from /proc/stat.
func SystemBusy() (time.Duration, error) {
	f, err := SystemCPU()
	if err != nil {
		return 0, err
	}
	if len(f) < 5 {
		return 0, fmt.Errorf("unexpected /proc/stat")
	}
	var busy time.Duration
	for i, v := range f {
		if i != 3 && i != 4 && i < 7 { // user nice system [idle iowait] irq softirq; guest is in user
			busy += Ticks(v)
		}
	}
	return busy, nil
}

// Pgbench runs the pgbench binary at bin and returns its output; the last
// argument is the URL and is left out of errors.
func Pgbench(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = CleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args[:len(args)-1], " "), err, out)
	}
	return string(out), nil
}

// CleanEnv is the environment without the caller's PG* variables, which
// pgbench and pg_recvlogical would obey.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// WriteNodeConfig writes dir/name.properties for a schedsync node with
// spool.dir dir/name, then the common lines, and returns both paths.
func WriteNodeConfig(dir, name, role, url string, common []string) (config, spool string, err error) {
	config, spool = filepath.Join(dir, name+".properties"), filepath.Join(dir, name)
	props := append([]string{
		"node.role=" + role,
		"node.name=" + name,
		"repository.url=" + url,
		"spool.dir=" + spool,
	}, common...)
	if err := os.WriteFile(config, []byte(strings.Join(props, "\n")+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("write %s: %w", config, err)
	}
	return config, spool, nil
}

// Main runs a tool: run gets a context that SIGINT and SIGTERM cancel, so
// the tool can clean up; an error is printed after the tool's name and
// exits 1.
func Main(name string, run func(context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// WorkDir makes a run's temporary directory. done removes it, unless keep:
// then its path is printed and it stays.
func WorkDir(name string, keep bool) (dir string, done func(), err error) {
	if dir, err = os.MkdirTemp("", name+"-"); err != nil {
		return "", nil, fmt.Errorf("create the temporary directory: %w", err)
	}
	if keep {
		fmt.Println("keeping", dir)
		return dir, func() {}, nil
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// Machine says what figures were taken on, in one line: they mean little
// without the CPU model and count, the memory, the load others put on the
// machine, and the Go version.
func Machine() string {
	return fmt.Sprintf("machine: %s, %d CPUs (runtime.NumCPU), %s RAM, %s %s/%s, load average %s",
		procField("/proc/cpuinfo", "model name"), runtime.NumCPU(), memTotal(), runtime.Version(),
		runtime.GOOS, runtime.GOARCH, loadAvg())
}

func memTotal() string {
	v := procField("/proc/meminfo", "MemTotal")
	kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// procField reads "key: value" from a /proc file; "?" when absent.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
