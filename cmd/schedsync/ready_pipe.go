package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The readiness pipe: a detached `start` passes the write end of a pipe to
// the service it spawns (an extra file, named by readyFDEnv) and reads
// until end of file. The service writes one line and closes it:
//
//	ready                  the service is up
//	already PID            another service holds the pid lock (exit 0)
//	error CODE "MESSAGE"   it failed before it was up; MESSAGE is quoted Go-style
//
// A service that dies without a word closes the pipe too (the kernel does),
// and start then reports its exit status and the end of its log.
// (The variable is not a config key: the loader reads only the SCHEDSYNC_*
// variables of config.Keys.)
const readyFDEnv = "SCHEDSYNC_READY_FD"

// readyPipe is the service's end. A nil *readyPipe (not detached) ignores
// every call.
type readyPipe struct {
	mu sync.Mutex
	f  *os.File
}

// takeReadyPipe returns the pipe the starting process passed, if any. It
// removes the variable and makes the descriptor close-on-exec, so that hook
// commands run by the service inherit neither: a hook holding the write end
// would keep `start` waiting after the service died.
func takeReadyPipe() *readyPipe {
	v := os.Getenv(readyFDEnv)
	if v == "" {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	syscall.CloseOnExec(fd)
	return &readyPipe{f: os.NewFile(uintptr(fd), "ready-pipe")}
}

func (p *readyPipe) ready()          { p.send("ready") }
func (p *readyPipe) already(pid int) { p.send(fmt.Sprintf("already %d", pid)) }
func (p *readyPipe) fail(code int, msg string) {
	p.send(fmt.Sprintf("error %d %s", code, strconv.Quote(msg)))
}

// send writes the one line and closes the pipe; later calls do nothing.
// A write error means the starting process is gone: nobody to tell.
func (p *readyPipe) send(line string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return
	}
	_, _ = io.WriteString(p.f, line+"\n")
	_ = p.f.Close()
	p.f = nil
}

// readyMsg is what the starting process read; kind "" means the pipe
// closed without a line.
type readyMsg struct {
	kind string // "ready", "already", "error" or ""
	pid  int    // already
	code int    // error
	msg  string // error
}

// readReadyMsg reads the service's line. Unknown lines (from another
// version of the binary) are skipped rather than taken for a failure.
func readReadyMsg(r io.Reader) readyMsg {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "ready":
			return readyMsg{kind: kind}
		case "already":
			pid, _ := strconv.Atoi(rest)
			return readyMsg{kind: kind, pid: pid}
		case "error":
			codeText, quoted, _ := strings.Cut(rest, " ")
			code, err := strconv.Atoi(codeText)
			if err != nil || code <= 0 {
				code = exitFailure
			}
			msg, err := strconv.Unquote(quoted)
			if err != nil {
				msg = quoted
			}
			return readyMsg{kind: kind, code: code, msg: msg}
		}
	}
	return readyMsg{}
}
