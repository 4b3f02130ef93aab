package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/service"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// procTimeout bounds every schedsync process a test runs.
const procTimeout = 30 * time.Second

// testService is one schedsync config with its spool dir, driven through the real
// binary (the test binary with a fake node; see fakenode_test.go).
type testService struct {
	t      *testing.T
	config string
	spool  string
	mode   string
}

func newTestService(t *testing.T, mode, role string) *testService {
	t.Helper()
	cleanEnv(t)
	spool := t.TempDir()
	props := "node.role=" + role + "\n" +
		"node.name=node02\n" +
		"repository.url=postgres://sched:hunter2@127.0.0.1:1/scheduler\n" +
		"sync.token=test-token-123\n" +
		"sync.listen=127.0.0.1:7700\n" +
		"master.host=127.0.0.1\n" +
		"spool.dir=" + spool + "\n"
	n := &testService{t: t, config: writeFile(t, "sync.properties", props), spool: spool, mode: mode}
	// Never leave a service behind, whatever the test did.
	t.Cleanup(func() {
		if pid, running, _ := service.Running(spool); running && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			eventually.That(t, "the service to die", procTimeout, func() bool { _, r, _ := service.Running(spool); return !r })
		}
	})
	return n
}

// command is schedsync --config FILE args..., run as its own process.
func (n *testService) command(ctx context.Context, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		n.t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"--config", n.config}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) && name != "NOTIFY_SOCKET" {
			env = append(env, kv)
		}
	}
	// A race-enabled binary sleeps 1s at exit by default; these run dozens.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(env, fakeNodeEnv+"="+n.mode, "GORACE="+gorace)
	return cmd
}

// run runs schedsync to completion.
func (n *testService) run(args ...string) (code int, stdout, stderr string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	cmd := n.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		n.t.Fatalf("schedsync %v: %v (stderr %s)", args, err, errb.String())
	}
	return code, out.String(), errb.String()
}

func (n *testService) status() service.Status {
	n.t.Helper()
	code, out, errOut := n.run("status", "--json")
	if code != exitOK {
		n.t.Fatalf("status --json: exit %d, stderr %s", code, errOut)
	}
	var st service.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		n.t.Fatalf("status --json printed %q: %v", out, err)
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, "test-token-123") {
		n.t.Errorf("status --json shows a secret:\n%s", out)
	}
	return st
}

func (n *testService) running() (int, bool) {
	n.t.Helper()
	pid, running, err := service.Running(n.spool)
	if err != nil {
		n.t.Fatal(err)
	}
	return pid, running
}

func (n *testService) log() string {
	data, _ := os.ReadFile(filepath.Join(n.spool, "schedsync.log"))
	return string(data)
}

// startOK starts the service detached and returns its pid.
func (n *testService) startOK(args ...string) int {
	n.t.Helper()
	code, out, errOut := n.run(append([]string{"start", "--wait", "20s"}, args...)...)
	if code != exitOK {
		n.t.Fatalf("start: exit %d\nstdout %s\nstderr %s\nlog:\n%s", code, out, errOut, n.log())
	}
	pid, running := n.running()
	if !running {
		n.t.Fatalf("start said %q but the pid lock is free", out)
	}
	return pid
}

func TestStartStatusStop(t *testing.T) {
	n := newTestService(t, fakeOK, "master")
	code, out, errOut := n.run("start", "--wait", "20s")
	if code != exitOK {
		t.Fatalf("start: exit %d, stderr %s, log:\n%s", code, errOut, n.log())
	}
	pid, running := n.running()
	if !running {
		t.Fatal("pid lock free after start")
	}
	want := "schedsync master started (pid " + strconv.Itoa(pid) + "), listening on 127.0.0.1:7700\n"
	if out != want {
		t.Errorf("start printed %q, want %q", out, want)
	}

	// The service keeps --config FILE in its command line, for ps.
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if i := slices.Index(args, "--config"); i < 0 || i+1 >= len(args) || args[i+1] != n.config ||
		!slices.Contains(args, "--foreground") {
		t.Errorf("service command line %q lacks --config %s ... start --foreground", args, n.config)
	}

	st := n.status()
	if !st.Running || st.State != service.StateStreaming || st.Position != fakePosition ||
		st.PID != pid || st.Role != "master" || st.Name != "node02" || len(st.Slaves) != 1 {
		t.Errorf("status of the running service = %+v", st)
	}
	code, text, _ := n.run("status")
	for _, want := range []string{"role:", "master", "running:", "yes (pid " + strconv.Itoa(pid) + ")",
		"state:", "streaming", "position:", "42", "backlog:", "1.5KiB", "NAME", "replica9", "2KiB"} {
		if code != exitOK || !strings.Contains(text, want) {
			t.Errorf("status (exit %d) lacks %q:\n%s", code, want, text)
		}
	}

	code, out, _ = n.run("start", "--wait", "20s")
	if code != exitOK || out != "schedsync is already running (pid "+strconv.Itoa(pid)+")\n" {
		t.Errorf("second start: exit %d, %q", code, out)
	}

	code, out, errOut = n.run("stop")
	if code != exitOK || out != "schedsync stopped\n" {
		t.Fatalf("stop: exit %d, %q, stderr %s", code, out, errOut)
	}
	if _, running := n.running(); running {
		t.Error("pid lock still held after stop returned")
	}
	st = n.status()
	if st.Running || st.State != service.StateStopped || st.Position != fakePosition || st.PID != 0 {
		t.Errorf("status after stop = %+v, want running=false, stopped, position %d", st, fakePosition)
	}
	for _, f := range []string{service.PidFileName, service.SocketName} {
		if _, err := os.Stat(filepath.Join(n.spool, f)); err == nil {
			t.Errorf("%s left behind by a clean stop", f)
		}
	}
	code, out, _ = n.run("stop")
	if code != exitOK || out != "schedsync is not running\n" {
		t.Errorf("stop when stopped: exit %d, %q", code, out)
	}
	if log := n.log(); !strings.Contains(log, "sync service ready") || strings.Contains(log, "hunter2") ||
		strings.Contains(log, "test-token-123") {
		t.Errorf("log lacks the ready line or shows a secret:\n%s", log)
	}
}

// TestStartAfterKill9: the pid file and socket of a killed service are
// stale, not an obstacle, and status keeps the last known positions.
func TestStartAfterKill9(t *testing.T) {
	n := newTestService(t, fakeOK, "slave")
	pid := n.startOK()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually.That(t, "the killed service's lock to be released", procTimeout, func() bool { _, r := n.running(); return !r })
	if _, err := os.Stat(filepath.Join(n.spool, service.PidFileName)); err != nil {
		t.Fatalf("expected a stale pid file after kill -9: %v", err)
	}
	st := n.status()
	if st.Running || st.State != service.StateStopped || st.Position != fakePosition || st.Role != "slave" {
		t.Errorf("status after kill -9 = %+v, want the last known position, running=false, stopped", st)
	}

	code, out, errOut := n.run("start", "--wait", "20s")
	newPID, running := n.running()
	want := "schedsync slave started (pid " + strconv.Itoa(newPID) + "), streaming from 127.0.0.1:7700\n"
	if code != exitOK || !running || newPID == pid || out != want {
		t.Fatalf("start after kill -9: exit %d, %q (want %q), stderr %s", code, out, want, errOut)
	}
	if st := n.status(); !st.Running || st.PID != newPID {
		t.Errorf("status after restart = %+v", st)
	}
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		mode, role string
		args       []string
		code       int
		stderr     []string
		state      string
	}{
		{fakeFail, "master", []string{"--wait", "7s"}, exitFailure,
			[]string{"schedsync start: fake node: cannot connect to repository database (wait=7s)"}, service.StateFailed},
		{fakeResync, "slave", []string{"--wait", "20s"}, exitNeedsResync,
			[]string{"schedsync start: slave node02 has 5000 bytes", "slave needs a re-sync"}, service.StateNeedsResync},
		{fakeCrash, "master", []string{"--wait", "20s"}, exitFailure,
			[]string{"schedsync start: the service ended before it came up (exit status 2)", "panic: fake node crashed"}, ""},
		{fakeSlow, "master", []string{"--wait", "300ms"}, exitFailure,
			[]string{"schedsync start: the service did not come up within 300ms (--wait 300ms), so it was stopped"}, service.StateStopped},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			n := newTestService(t, tt.mode, tt.role)
			code, out, errOut := n.run(append([]string{"start"}, tt.args...)...)
			if code != tt.code || out != "" {
				t.Errorf("exit %d, stdout %q; want %d and nothing", code, out, tt.code)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
			if _, running := n.running(); running {
				t.Error("a failed start left the service running")
			}
			if tt.state != "" {
				if st := n.status(); st.Running || st.State != tt.state {
					t.Errorf("status after the failed start = %+v, want state %s", st, tt.state)
				}
			}
		})
	}
}

// notifySocket listens where a foreground service sends its sd_notify
// messages, as systemd would.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 10)
	go func() {
		buf := make([]byte, 1024)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:k])
		}
	}()
	return path, msgs
}

func expectNotify(t *testing.T, msgs <-chan string, want string) {
	t.Helper()
	select {
	case m := <-msgs:
		if m != want {
			t.Fatalf("sd_notify message %q, want %q", m, want)
		}
	case <-time.After(procTimeout):
		t.Fatalf("no sd_notify %s", want)
	}
}

// startForeground runs `start --foreground` as systemd would and waits
// until it says READY=1.
func (n *testService) startForeground() (*exec.Cmd, *bytes.Buffer, <-chan string) {
	n.t.Helper()
	sock, msgs := notifySocket(n.t)
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	n.t.Cleanup(cancel)
	cmd := n.command(ctx, "start", "--foreground")
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sock)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	expectNotify(n.t, msgs, "READY=1")
	return cmd, &stderr, msgs
}

func TestForegroundStopsGracefullyOnSIGTERM(t *testing.T) {
	n := newTestService(t, fakeOK, "master")
	cmd, stderr, msgs := n.startForeground()
	if pid, running := n.running(); !running || pid != cmd.Process.Pid {
		t.Fatalf("foreground service pid %d, lock held by %d (held: %v)", cmd.Process.Pid, pid, running)
	}
	if st := n.status(); !st.Running || st.State != service.StateStreaming {
		t.Errorf("status = %+v", st)
	}
	// A second foreground start finds it running: an error there.
	code, _, errOut := n.run("start", "--foreground")
	want := "schedsync start: schedsync is already running (pid " + strconv.Itoa(cmd.Process.Pid) + ")"
	if code != exitFailure || !strings.HasPrefix(errOut, want) {
		t.Errorf("second start --foreground: exit %d, %q; want 1 and %q", code, errOut, want)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectNotify(t, msgs, "STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, output:\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "sync service stopped") {
		t.Errorf("foreground log (stderr) lacks the stop:\n%s", stderr)
	}
	if st := n.status(); st.Running || st.State != service.StateStopped || st.Position != fakePosition {
		t.Errorf("status after SIGTERM = %+v", st)
	}
}

func TestForegroundSecondSignalForcesExit(t *testing.T) {
	n := newTestService(t, fakeHang, "master")
	cmd, stderr, msgs := n.startForeground()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	expectNotify(t, msgs, "STOPPING=1") // the first signal was taken
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("after two signals: %v, want exit 1; output:\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "schedsync start: "+service.ErrForced.Error()) {
		t.Errorf("output lacks the forced exit:\n%s", stderr)
	}
	if _, running := n.running(); running {
		t.Error("pid lock still held after the forced exit")
	}
}
