package pgtest

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"syscall"
)

// watchdogScript waits for its stdin to close. A "done" line means the
// owner stopped the cluster itself; end of file without it means the owner
// died (panic, test timeout, SIGKILL), and the watchdog shuts the postmaster
// down (immediate) and removes the cluster directory, unless it is kept.
// The pid is checked against the data directory, as in stopPostmaster,
// because postmaster.pid may be stale after a crash.
const watchdogScript = `
data=$1 dir=$2
IFS= read -r line
[ "$line" = done ] && exit 0
pidfile=$data/postmaster.pid
if [ -f "$pidfile" ]; then
	pid=$(head -n 1 "$pidfile")
	if [ ! -d /proc/self ] || [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$data" ]; then
		kill -QUIT "$pid" 2>/dev/null
		i=0
		while [ -f "$pidfile" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
	fi
fi
[ -n "$dir" ] && rm -rf "$dir"
exit 0
`

// watchdog is a shell process that cleans up after an owner that dies
// without Stop. The pipe to its stdin is the dead man's switch: only this
// process holds the write end (Go opens pipes close-on-exec, so neither
// pg_ctl nor postgres inherit it), and the kernel closes it however this
// process ends.
type watchdog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// startWatchdog watches the cluster in dir; removeDir says whether to delete
// dir after stopping the server.
func startWatchdog(dir string, removeDir bool) (*watchdog, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	rm := ""
	if removeDir {
		rm = realDir
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "pgtest-watchdog", filepath.Join(realDir, "data"), rm)
	// Its own process group keeps a Ctrl-C aimed at `go test` from
	// killing the watchdog along with its owner. Stdout and stderr stay
	// /dev/null: holding the test binary's output pipe would make `go
	// test` wait for the watchdog.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	w := &watchdog{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // reap it, whenever it ends
		close(w.done)
	}()
	return w, nil
}

// dismiss tells the watchdog that the owner cleaned up itself, and waits
// for it to exit.
func (w *watchdog) dismiss() {
	_, _ = io.WriteString(w.stdin, "done\n")
	_ = w.stdin.Close()
	<-w.done
}
