package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/internal/service"
)

// cmdTimeout bounds every schedsync command the demo runs.
const cmdTimeout = 2 * time.Minute

// node is one schedsync node of the demo: its config file and spool
// directory under the demo directory.
type node struct {
	d      *demo
	name   string
	role   string
	config string // absolute path of the .properties file
	spool  string // spool.dir
	url    string // repository.url
}

func (d *demo) newNode(name, role, url string) *node {
	return &node{d: d, name: name, role: role, url: url,
		config: filepath.Join(d.dir, name+".properties"), spool: filepath.Join(d.dir, name)}
}

func (n *node) logPath() string { return filepath.Join(n.spool, "schedsync.log") }

// properties is the node's configuration file. Only loopback is used.
func (n *node) properties(syncPort, ownPort int, tokenFile string) string {
	listen := syncPort
	if n.role == "slave" {
		listen = ownPort // where it would serve slaves once promoted
	}
	lines := []string{
		fmt.Sprintf("# schedsync demo: the %s node (written by cmd/schedsync-demo)", strings.ToUpper(n.role)),
		"node.role=" + n.role,
		"node.name=" + n.name,
		"repository.url=" + n.url,
		"repository.schemas=public",
		"repository.tables=qrtz_*",
		"capture.mode=" + n.d.opts.mode,
		"capture.poll_interval=200ms",
		"sync.listen=127.0.0.1:" + strconv.Itoa(listen),
		"sync.token_file=" + tokenFile,
		"sync.heartbeat=1s",
	}
	if n.role == "slave" {
		lines = append(lines, "master.host=127.0.0.1", "master.port="+strconv.Itoa(syncPort))
	}
	lines = append(lines, "spool.dir="+n.spool, "log.level=info")
	return strings.Join(lines, "\n") + "\n"
}

// display is how a path is shown: relative to the working directory when
// it is inside it, so that the commands printed are short and can be
// pasted.
func display(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return path
	}
	if !strings.ContainsRune(rel, filepath.Separator) {
		rel = "." + string(filepath.Separator) + rel // not looked up in PATH
	}
	return rel
}

// cmdline is the command line of `schedsync --config FILE args...`, as shown.
func (n *node) cmdline(args ...string) string {
	return strings.Join(append([]string{display(n.d.bin), "--config", display(n.config)}, args...), " ")
}

// exec runs `schedsync --config FILE args...` and returns its combined
// output and exit code; err is for a command that could not run.
func (n *node) exec(ctx context.Context, args ...string) (out string, code int, err error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.d.bin, append([]string{"--config", n.config}, args...)...)
	cmd.Env = childEnv()
	cmd.WaitDelay = 5 * time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return buf.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return buf.String(), -1, fmt.Errorf("%s: %w\n%s", n.cmdline(args...), err, buf.String())
	}
	return buf.String(), 0, nil
}

// run shows a schedsync command, runs it, shows its output, and fails
// unless it exits 0.
func (n *node) run(ctx context.Context, args ...string) error {
	fmt.Printf("    $ %s\n", n.cmdline(args...))
	out, code, err := n.exec(ctx, args...)
	if err != nil {
		return err
	}
	indent(out)
	if code != 0 {
		return fmt.Errorf("%s: exit %d", n.cmdline(args...), code)
	}
	return nil
}

// childEnv is the environment without SCHEDSYNC_* variables, which would
// override the demo's config files.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SCHEDSYNC_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	return env
}

// status is the part of `status --json` the demo reads.
type status struct {
	Running  bool   `json:"running"`
	State    string `json:"state"`
	Position uint64 `json:"position"`
}

// status runs `status --json` without showing it.
func (n *node) status(ctx context.Context) (status, error) {
	var st status
	out, _, err := n.exec(ctx, "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("%s printed %q: %w", n.cmdline("status", "--json"), out, err)
	}
	return st, nil
}

// stopQuietly stops the service if it is running, for cleanup: with
// `schedsync stop`, or SIGKILL if that fails.
func (n *node) stopQuietly(ctx context.Context) error {
	pid, running, err := service.Running(n.spool)
	if err != nil || !running {
		return err
	}
	fmt.Printf("stopping %s's service (pid %d)\n", n.name, pid)
	if _, code, err := n.exec(ctx, "stop", "--timeout", "30s"); err == nil && code == 0 {
		return nil
	}
	if pid, running, _ := service.Running(n.spool); running && pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return fmt.Errorf("%s's service did not stop; it was killed", n.name)
}
