// Package reaper kills the processes a test binary started in the
// background (detached schedsync services) when the binary dies without
// cleaning up: a panic, `go test`'s own timeout (which exits from a timer,
// running no deferred function and no signal handler), or SIGKILL.
//
// A shell process holds the read end of a pipe that only the test binary
// writes; the kernel closes the write end however the binary ends. Each
// Watch sends it a pid file; at end of file without a "done" line, it
// kills -9 every watched pid whose command line still names the expected
// program (a pid may have been reused).
package reaper

import (
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
)

const script = `
prog=$1
files=""
while IFS= read -r line; do
	case "$line" in
	done) exit 0 ;;
	watch\ *) files="$files ${line#watch }" ;;
	esac
done
for f in $files; do
	[ -f "$f" ] || continue
	pid=$(head -n 1 "$f" 2>/dev/null)
	case "$pid" in ''|*[!0-9]*) continue ;; esac
	if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$prog"; then
		kill -9 "$pid" 2>/dev/null
	fi
done
exit 0
`

// Reaper watches pid files for one test binary.
type Reaper struct {
	mu    sync.Mutex
	stdin io.WriteCloser
	cmd   *exec.Cmd
}

// Start starts the reaper for processes whose command line contains prog.
func Start(prog string) (*Reaper, error) {
	cmd := exec.Command("/bin/sh", "-c", script, "test-reaper", prog)
	// Its own process group: a Ctrl-C aimed at go test must not kill it
	// before it has done its work.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start the reaper: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the reaper: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	return &Reaper{stdin: stdin, cmd: cmd}, nil
}

// Watch makes the reaper kill the process whose pid is in pidFile (read
// when the binary dies) if the binary dies first.
func (r *Reaper) Watch(pidFile string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = io.WriteString(r.stdin, "watch "+pidFile+"\n")
}

// Done tells the reaper that the binary cleaned up itself.
func (r *Reaper) Done() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = io.WriteString(r.stdin, "done\n")
	_ = r.stdin.Close()
}
