package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

const (
	// cmdTimeout bounds every schedsync command but start and verify, and
	// install and uninstall under load.
	cmdTimeout = 30 * time.Second
	// ddlTimeout bounds install and uninstall while the workload runs:
	// they wait for moments when the scheduler leaves the tables alone
	// (up to two minutes, capture's ddlPatience).
	ddlTimeout = 150 * time.Second
	// startTimeout bounds `start --wait 30s`: the wait, plus the
	// service's own start-up.
	startTimeout = 90 * time.Second
)

// node is one schedsync service, master or slave, driven through the
// binary with its own config file and spool directory.
type node struct {
	bin    string
	name   string
	config string // the .properties file
	spool  string // spool.dir: pid file, log, segments
	repo   string // repository.url, for the test's own queries
	listen int    // sync.listen's port
}

// nodeConfig is what differs between the two nodes' config files.
type nodeConfig struct {
	role, name, repo string
	mode             string // capture.mode
	listen           int    // sync.listen port
	masterPort       int    // master.port
	token            string
	extra            []string // more key=value lines
}

// newNode writes the node's config in a new temporary directory and makes
// sure that its service is dead when the test ends, whatever happened.
func newNode(t *testing.T, bin string, c nodeConfig) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{bin: bin, name: c.name, config: filepath.Join(dir, c.name+".properties"),
		spool: filepath.Join(dir, "spool"), repo: c.repo, listen: c.listen}
	props := []string{
		"node.role=" + c.role,
		"node.name=" + c.name,
		"repository.url=" + c.repo,
		"repository.schemas=public",
		"capture.mode=" + c.mode,
		"capture.poll_interval=200ms",
		"sync.listen=127.0.0.1:" + strconv.Itoa(c.listen),
		"sync.token=" + c.token,
		"sync.heartbeat=1s",
		"master.host=127.0.0.1",
		"master.port=" + strconv.Itoa(c.masterPort),
		"spool.dir=" + n.spool,
		"log.level=info",
	}
	// A key in extra replaces the default: a key twice in one file is a
	// mistake.
	for _, kv := range c.extra {
		key, _, _ := strings.Cut(kv, "=")
		props = slices.DeleteFunc(props, func(p string) bool { return strings.HasPrefix(p, key+"=") })
	}
	props = append(props, c.extra...)
	if err := os.WriteFile(n.config, []byte(strings.Join(props, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	services.Store(n.spool, struct{}{})
	reap.Watch(filepath.Join(n.spool, "schedsync.pid"))
	t.Cleanup(func() {
		n.killIfRunning(t)
		services.Delete(n.spool)
	})
	return n
}

// result is how a schedsync command ended.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) output() string { return r.stdout + r.stderr }

// command is `schedsync --config FILE args...` for this node, with the
// test's SCHEDSYNC_ variables left out; the caller starts it.
func (n *node) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, n.bin, append([]string{"--config", n.config}, args...)...)
	cmd.Env = childEnv()
	return cmd
}

// run runs `schedsync --config FILE args...` to completion, or until
// timeout. Only a command that could not be run or timed out is an error;
// an exit code is a result.
func (n *node) run(timeout time.Duration, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := n.command(ctx, args...)
	// A detached service writes to its log file, not to these pipes;
	// this bounds the wait if that ever changes.
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %s", timeout)
		}
		return r, fmt.Errorf("schedsync %s (%s): %w\n%s", strings.Join(args, " "), n.name, err, r.output())
	}
	return r, nil
}

// mustRun runs a command that must succeed (exit 0) and returns its output.
func (n *node) mustRun(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	r, err := n.run(timeout, args...)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 {
		t.Fatalf("schedsync %s (%s): exit %d\n%s", strings.Join(args, " "), n.name, r.code, r.output())
	}
	return r.output()
}

// childEnv is our environment without what would change how schedsync
// reads its config (SCHEDSYNC_* overrides) or talks to systemd.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SCHEDSYNC_") || name == "NOTIFY_SOCKET" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// start starts the service detached, giving it up to 30s to come up.
func (n *node) start(t *testing.T) {
	t.Helper()
	out := n.mustRun(t, startTimeout, "start", "--wait", "30s")
	t.Logf("%s: %s", n.name, strings.TrimSpace(out))
}

// stop stops the service gracefully.
func (n *node) stop(t *testing.T) {
	t.Helper()
	out := n.mustRun(t, 2*time.Minute, "stop")
	t.Logf("%s: %s", n.name, strings.TrimSpace(out))
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// kill9 kills the service with SIGKILL, as a crash would, and waits until
// status no longer reports it running (its pid lock is gone).
func (n *node) kill9(t *testing.T) {
	t.Helper()
	st, err := n.status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.PID <= 0 {
		t.Fatalf("%s: kill -9: status --json says running=%v pid=%d", n.name, st.Running, st.PID)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("%s: kill -9 %d: %v", n.name, st.PID, err)
	}
	t.Logf("%s: killed pid %d (SIGKILL) at position %d", n.name, st.PID, st.Position)
	eventually.True(t, n.name+" to be reported not running after kill -9", 15*time.Second, func() (bool, string) {
		st, err := n.status()
		if err != nil {
			return false, err.Error()
		}
		return !st.Running, fmt.Sprintf("running=%v state=%s", st.Running, st.State)
	})
}

// killIfRunning is the last resort at the end of a test.
func (n *node) killIfRunning(t *testing.T) {
	st, err := n.status()
	if err != nil || !st.Running || st.PID <= 0 {
		return
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Errorf("%s: kill the service left running (pid %d): %v", n.name, st.PID, err)
	}
}

// logTail is the end of the service's log file, for failure reports.
func (n *node) logTail(lines int) string {
	return pgtest.FileTail(filepath.Join(n.spool, "schedsync.log"), lines)
}

// status is the contract part of `status --json` (docs/DESIGN.md), decoded
// independently of the service package so that a renamed field shows.
type status struct {
	Role             string        `json:"role"`
	ConfigRole       string        `json:"config_role"`
	AutoFailoverHeld string        `json:"auto_failover_held"`
	Generation       uint64        `json:"generation"`
	Running          bool          `json:"running"`
	State            string        `json:"state"`
	Position         uint64        `json:"position"`
	ReceivedPosition uint64        `json:"received_position"`
	LagSeconds       float64       `json:"lag_seconds"`
	BacklogBytes     int64         `json:"backlog_bytes"`
	Slaves           []slaveStatus `json:"slaves"`
	PID              int           `json:"pid"`
	Error            string        `json:"error"`
	CaptureMode      string        `json:"capture_mode"`
	Slot             string        `json:"slot"`
	SlotRetainedWAL  *int64        `json:"slot_retained_wal_bytes"`
	Warnings         []string      `json:"warnings"`
	Synchronous      string        `json:"synchronous"`
}

type slaveStatus struct {
	Name            string `json:"name"`
	Connected       bool   `json:"connected"`
	AppliedPosition uint64 `json:"applied_position"`
	BacklogBytes    int64  `json:"backlog_bytes"`
	NeedsResync     bool   `json:"needs_resync"`
}

func (s status) String() string {
	return fmt.Sprintf("running=%v state=%s position=%d received=%d lag=%.1fs backlog=%dB error=%q",
		s.Running, s.State, s.Position, s.ReceivedPosition, s.LagSeconds, s.BacklogBytes, s.Error)
}

// slave returns the master's row for the named slave.
func (s status) slave(name string) (slaveStatus, bool) {
	for _, sl := range s.Slaves {
		if sl.Name == name {
			return sl, true
		}
	}
	return slaveStatus{}, false
}

// status runs `status --json`. It prints the status even when it exits 1
// (a service that does not answer), so only unreadable output is an error.
func (n *node) status() (status, error) {
	var st status
	r, err := n.run(cmdTimeout, "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		return st, fmt.Errorf("%s: status --json (exit %d) printed %q: %v; stderr %s", n.name, r.code, r.stdout, err, r.stderr)
	}
	return st, nil
}

// mustStatus is status for a test that cannot go on without it.
func (n *node) mustStatus(t *testing.T) status {
	t.Helper()
	st, err := n.status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStreaming waits until the service runs and reports state streaming.
func (n *node) waitStreaming(t *testing.T, timeout time.Duration) status {
	t.Helper()
	var st status
	eventually.True(t, n.name+" to be running and streaming", timeout, func() (bool, string) {
		var err error
		if st, err = n.status(); err != nil {
			return false, err.Error()
		}
		return st.Running && st.State == "streaming", st.String()
	})
	return st
}
