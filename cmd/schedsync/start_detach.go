package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

const (
	// childStopWait is how long a start that gives up waits for the service
	// it spawned to stop on SIGTERM before it kills it.
	childStopWait = 10 * time.Second
	// logTailLines is how much of the log a start shows for a service that
	// died without saying why.
	logTailLines = 10
)

// startDetached is `start` without --foreground: it runs this binary again
// as `--config FILE start --foreground` in a session of its own, its output
// appended to the log file, and waits on a readiness pipe (ready_pipe.go)
// until the service is up or has failed.
func (a *app) startDetached(ctx context.Context, cfg *config.Config, opts startOptions) error {
	dir := cfg.Spool.Dir
	if pid, running, err := service.Running(dir); err != nil {
		return err
	} else if running {
		fmt.Fprintf(a.stdout, "schedsync is already running (pid %d)\n", pid)
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create spool.dir: %w", err)
	}
	logPath := cfg.LogFilePath()
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log file (log.file): %w", err)
	}
	defer logf.Close()

	child, r, err := a.spawnService(opts, logf)
	if err != nil {
		return err
	}
	defer r.Close()
	msgs := make(chan readyMsg, 1)
	go func() { msgs <- readReadyMsg(r) }()

	limit := max(opts.wait, 0) + a.readyGrace
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	select {
	case m := <-msgs:
		return a.startOutcome(cfg, child, m, logPath)
	case <-timeout.C:
		stopChild(child)
		return fmt.Errorf("the service did not come up within %s (--wait %s), so it was stopped%s",
			limit, opts.wait, logTail(logPath))
	case <-ctx.Done():
		stopChild(child)
		return fmt.Errorf("interrupted while waiting for the service to come up, so it was stopped%s",
			logTail(logPath))
	}
}

// spawnService starts the service process and returns it with the read end
// of its readiness pipe.
func (a *app) spawnService(opts startOptions, logf *os.File) (*exec.Cmd, *os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find this program to run the service: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("create readiness pipe: %w", err)
	}
	defer w.Close() // the service's copy is the only one that may stay open
	// --config stays in the service's command line, absolute, so that ps
	// tells instances apart and the service reads the same file.
	args := []string{"--config", a.configPath, "start", "--foreground"}
	if opts.waitGiven {
		args = append(args, "--wait", opts.wait.String())
	}
	child := exec.Command(exe, args...)
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%d", readyFDEnv, 3)) // ExtraFiles[0] is fd 3
	child.ExtraFiles = []*os.File{w}
	child.Stdout, child.Stderr = logf, logf // stdin stays /dev/null
	child.Dir = "/"                         // every path in the config is absolute; keep no directory busy
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("start the service: %w", err)
	}
	return child, r, nil
}

// startOutcome turns what the service said into start's output and exit.
func (a *app) startOutcome(cfg *config.Config, child *exec.Cmd, m readyMsg, logPath string) error {
	switch m.kind {
	case "ready":
		fmt.Fprintln(a.stdout, startedMessage(cfg, child.Process.Pid))
		a.warnRepositoryUnreachable(cfg)
		// The service lives on; this process does not wait for it.
		_ = child.Process.Release()
		return nil
	case "already": // another start won the race for the pid lock
		_ = child.Wait()
		fmt.Fprintf(a.stdout, "schedsync is already running (pid %d)\n", m.pid)
		return nil
	case "error":
		_ = child.Wait()
		return &exitError{code: m.code, err: errors.New(m.msg)}
	}
	// It closed the pipe without a word: crashed, killed, or an error
	// before it could say anything (such as a config changed since).
	// Its exit status is shown but not passed on: a Go panic exits 2,
	// which is not a configuration error.
	err := child.Wait()
	how := "exit status 0"
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		how = ee.ProcessState.String() // "exit status 2", "signal: killed"
	} else if err != nil {
		how = err.Error()
	}
	return &exitError{code: exitFailure, err: fmt.Errorf("the service ended before it came up (%s)%s", how, logTail(logPath))}
}

// stopChild stops a service that start gave up on: SIGTERM, then SIGKILL.
func stopChild(child *exec.Cmd) {
	_ = child.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = child.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(childStopWait):
		_ = child.Process.Kill()
		<-done
	}
}

// logTail is "; last lines of LOG:" and the end of the log, indented, or ""
// if there is nothing to show.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxTail = 8 << 10
	if info, err := f.Stat(); err == nil && info.Size() > maxTail {
		_, _ = f.Seek(-maxTail, io.SeekEnd)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	if len(lines) == 0 || lines[0] == "" && len(lines) == 1 {
		return ""
	}
	return "; last lines of " + path + ":\n  " + strings.Join(lines, "\n  ")
}

// warnRepositoryUnreachable says plainly, after a start, that the master
// came up without its repository: it stays up and retries (an outage is
// survived), but the operator must know now, not at the first failover.
func (a *app) warnRepositoryUnreachable(cfg *config.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := service.QueryStatus(ctx, cfg.Spool.Dir)
	if err != nil || st.Role != string(config.RoleMaster) || st.State != service.StateMasterUnavailable {
		return
	}
	fmt.Fprintf(a.stdout, "warning: the master repository is unreachable: %s\n"+
		"the service keeps retrying and captures once it answers; start --wait DURATION waits for it (or fails)\n", st.Error)
}
