package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures Start. The zero value is a new cluster on a random
// port in a new temporary directory, deleted by Stop.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Settings are extra postgresql.conf parameters (name → value, e.g.
	// "max_wal_size": "64MB"); values are quoted by pgtest. They override
	// the defaults, except port, which belongs to Port.
	Settings map[string]string
	// Dir holds the cluster; "" means a new temporary directory. A Dir
	// that already holds a cluster (Keep from an earlier run) is started
	// as it is, without initdb.
	Dir string
	// Keep leaves the directory in place on Stop; without it Stop deletes
	// the directory, Options.Dir included.
	Keep bool
}

// Cluster is a running (or stopped) throwaway PostgreSQL cluster. Its
// superuser is "postgres", with trust authentication over TCP on Host.
type Cluster struct {
	Dir     string // the cluster's directory: DataDir, the server log postgres.log, the owner file
	DataDir string // Dir/data, the PostgreSQL data directory
	Host    string // always "127.0.0.1"
	Port    int
	BinDir  string // where initdb, pg_ctl, postgres, psql, pgbench... are

	opts    Options
	cred    *syscall.Credential // run PostgreSQL's processes as this user; nil: as ourselves
	logFile string

	mu      sync.Mutex
	owner   *os.File  // the locked owner file; nil once Stop released it
	dog     *watchdog // nil once Stop dismissed it
	running bool
	removed bool
}

const (
	confFile      = "pgtest.conf" // in DataDir, included by postgresql.conf, rewritten on every start
	logName       = "postgres.log"
	startAttempts = 5 // a random free port may be taken before postgres binds it
	pgCtlTimeout  = "120"
	fastStopWait  = "15" // then immediate: a walsender waiting for an idle replication client can hold a fast shutdown for a minute
)

// Start creates (initdb) and starts a cluster. On error nothing is left
// running, and a directory Start created is removed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	if err := checkSettings(opts.Settings); err != nil {
		return nil, err
	}
	c := &Cluster{Host: "127.0.0.1", Port: opts.Port, BinDir: bin, opts: opts, cred: cred}
	if err := c.makeDir(); err != nil {
		if opts.Dir == "" && c.Dir != "" {
			_ = os.RemoveAll(c.Dir)
		}
		return nil, err
	}
	if err := c.acquire(); err != nil {
		if opts.Dir == "" {
			_ = os.RemoveAll(c.Dir)
		}
		return nil, err
	}
	// A kept cluster whose owner and watchdog both died may still be
	// running; it is ours now that we hold the lock.
	stopPostmaster(c.DataDir)
	if err := c.initdb(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	if err := c.start(ctx, opts.Port == 0); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

// makeDir sets Dir, DataDir and the log file, creating Dir: under the
// per-user clusters directory (cleaning up dead owners' clusters there
// first), or the caller's Options.Dir.
func (c *Cluster) makeDir() error {
	if c.opts.Dir == "" {
		parent, err := clustersDir(c.cred)
		if err != nil {
			return err
		}
		removeStaleClusters(parent)
		if c.Dir, err = os.MkdirTemp(parent, fmt.Sprintf("cluster-%d-", os.Getpid())); err != nil {
			return fmt.Errorf("create cluster directory: %w", err)
		}
	} else {
		dir, err := filepath.Abs(c.opts.Dir)
		if err != nil {
			return fmt.Errorf("cluster directory %s: %w", c.opts.Dir, err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create cluster directory: %w", err)
		}
		c.Dir = dir
	}
	c.DataDir = filepath.Join(c.Dir, "data")
	c.logFile = filepath.Join(c.Dir, logName)
	if c.cred == nil {
		return nil
	}
	// The postgres user creates DataDir and the log file in Dir.
	if err := os.Chown(c.Dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("chown cluster directory to postgres: %w", err)
	}
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return fmt.Errorf("chmod cluster directory: %w", err)
	}
	if !traversableBy(c.Dir, c.cred) {
		return fmt.Errorf("cluster directory %s cannot be reached by OS user postgres (uid %d), which PostgreSQL runs as when we are root; use a directory whose parents are world-searchable (chmod o+x)", c.Dir, c.cred.Uid)
	}
	return nil
}

// acquire takes ownership of the cluster directory: the owner lock, the keep
// marker and the watchdog.
func (c *Cluster) acquire() error {
	f, err := lockOwner(c.Dir)
	if err != nil {
		return err
	}
	keep := filepath.Join(c.Dir, keepFile)
	if c.opts.Keep {
		err = os.WriteFile(keep, nil, 0o644)
	} else if err = os.Remove(keep); errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("mark cluster kept: %w", err)
	}
	dog, err := startWatchdog(c.Dir, !c.opts.Keep)
	if err != nil {
		f.Close()
		return err
	}
	c.owner, c.dog = f, dog
	return nil
}

// release undoes acquire, once the server is stopped.
func (c *Cluster) release() {
	if c.dog != nil {
		c.dog.dismiss()
		c.dog = nil
	}
	if c.owner != nil {
		c.owner.Close()
		c.owner = nil
	}
}

func (c *Cluster) initdb(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err == nil {
		return nil // a kept cluster from an earlier run
	}
	// -N: nothing here survives an OS crash anyway, and syncing the new
	// cluster takes most of initdb's time.
	out, err := c.command(ctx, "initdb", "-D", c.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "-N").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", c.DataDir, err, out)
	}
	conf := filepath.Join(c.DataDir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("include %s: %w", confFile, err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "\n# Written by schedsync's pgtest, which rewrites it on every start.\ninclude_if_exists '%s'\n", confFile); err != nil {
		return fmt.Errorf("include %s: %w", confFile, err)
	}
	return nil
}

// start starts the server; pickPort chooses a new random port on each
// attempt, so that losing the race for a free port is retried.
func (c *Cluster) start(ctx context.Context, pickPort bool) error {
	attempts := 1
	if pickPort {
		attempts = startAttempts
	}
	for i := 1; ; i++ {
		if pickPort {
			port, err := FreePort()
			if err != nil {
				return err
			}
			c.Port = port
		}
		if err := c.writeConf(); err != nil {
			return err
		}
		var logStart int64
		if fi, err := os.Stat(c.logFile); err == nil {
			logStart = fi.Size()
		}
		out, err := c.pgCtl(ctx, "start", "-w", "-t", pgCtlTimeout, "-l", c.logFile)
		if err == nil {
			c.running = true
			return nil
		}
		log := readFrom(c.logFile, logStart)
		// pg_ctl may have given up (or been killed by ctx) while the
		// server kept starting: make sure nothing is left behind.
		_, _ = c.pgCtl(context.Background(), "stop", "-m", "immediate", "-w")
		if i < attempts && addressInUse(log) {
			continue
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("start postgres in %s on port %d: %w\n%s%s", c.DataDir, c.Port, err, out, log)
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func addressInUse(log string) bool {
	return strings.Contains(log, "Address already in use") || strings.Contains(log, "could not create any TCP/IP sockets")
}

// readFrom returns the end of the log written since offset, enough to say
// why the server did not start.
func readFrom(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	lines := strings.SplitAfter(string(b[offset:]), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "")
}

// Stop stops the server (fast shutdown, immediate if that does not finish
// in time) and removes Dir unless Options.Keep. Stopping a stopped cluster
// is not an error.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		if _, err := c.pgCtl(context.Background(), "stop", "-m", "fast", "-w", "-t", fastStopWait); err != nil {
			if out, err := c.pgCtl(context.Background(), "stop", "-m", "immediate", "-w", "-t", pgCtlTimeout); err != nil {
				// Keep the directory and the watchdog: deleting the
				// data under a live server would leak it unseen.
				return fmt.Errorf("stop postgres in %s: %w\n%s", c.DataDir, err, out)
			}
		}
		c.running = false
	}
	if !c.opts.Keep && !c.removed {
		if err := os.RemoveAll(c.Dir); err != nil {
			return fmt.Errorf("remove cluster directory: %w", err)
		}
		c.removed = true
	}
	c.release()
	return nil
}

// StopImmediate stops the server the way a crash would (immediate shutdown:
// no checkpoint, recovery on the next start) and keeps everything for
// Restart.
func (c *Cluster) StopImmediate() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	if out, err := c.pgCtl(context.Background(), "stop", "-m", "immediate", "-w", "-t", pgCtlTimeout); err != nil {
		return fmt.Errorf("stop postgres (immediate) in %s: %w\n%s", c.DataDir, err, out)
	}
	c.running = false
	return nil
}

// Restart starts the server again on the same port with the same data,
// after StopImmediate, or after Stop of a kept cluster. A running server is
// stopped (fast) first.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return fmt.Errorf("restart cluster: %s was removed by Stop (use Options.Keep to restart after Stop)", c.Dir)
	}
	if c.owner == nil {
		if err := c.acquire(); err != nil {
			return fmt.Errorf("restart cluster: %w", err)
		}
	}
	if c.running {
		if out, err := c.pgCtl(ctx, "stop", "-m", "fast", "-w", "-t", pgCtlTimeout); err != nil {
			return fmt.Errorf("restart cluster: stop postgres: %w\n%s", err, out)
		}
		c.running = false
	}
	return c.start(ctx, false)
}

// URL is the connection URL of database dbname, as the superuser.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort(c.Host, strconv.Itoa(c.Port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Bin is the full path of a PostgreSQL program of the cluster's version,
// e.g. Bin("pgbench"); on Debian the psql in PATH is a wrapper that may pick
// another version.
func (c *Cluster) Bin(name string) string {
	return filepath.Join(c.BinDir, name)
}

func (c *Cluster) pgCtl(ctx context.Context, action string, args ...string) ([]byte, error) {
	return c.command(ctx, "pg_ctl", append([]string{action, "-D", c.DataDir}, args...)...).CombinedOutput()
}

// command runs a PostgreSQL program as the user PostgreSQL must run as.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Bin(name), args...)
	cmd.Dir = c.Dir // the postgres user may not be allowed into our working directory
	cmd.Env = childEnv()
	// A server started by pg_ctl without -l would hold the output pipe
	// and CombinedOutput would wait for it forever; this bounds the
	// damage if that ever happens.
	cmd.WaitDelay = 5 * time.Second
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// childEnv drops the PG* variables of the caller's environment (PGDATA,
// PGPORT, PGOPTIONS...), which pg_ctl and postgres would obey, and makes
// messages English, which addressInUse relies on.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// FileTail is the last lines of a file (a server's or a service's log), or
// why it cannot be read: for failure reports.
func FileTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
