package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PidFileName is the pid file in spool.dir.
const PidFileName = "schedsync.pid"

// acquireRetry is how long AcquirePidFile retries a lock that is taken.
// Running takes a shared lock for a few microseconds to probe, and a
// service starting at that moment must not mistake the probe for another
// service.
const acquireRetry = 200 * time.Millisecond

// AlreadyRunningError is what AcquirePidFile returns when another process
// holds the lock: the service is running.
type AlreadyRunningError struct {
	PID int // 0 if the pid file could not be read
}

func (e *AlreadyRunningError) Error() string {
	return fmt.Sprintf("schedsync is already running (pid %d)", e.PID)
}

// PidFile is the service's pid file, exclusively locked (flock) for as long
// as the service lives. The lock, not the pid, says whether the service is
// running: the kernel drops it when the process dies, however it dies, so a
// stale file left by kill -9 is no obstacle, and a zombie that `kill -0`
// still reports alive holds no lock.
type PidFile struct {
	path string
	f    *os.File
}

// AcquirePidFile locks dir/schedsync.pid and writes this process's pid into
// it. If another process holds the lock it returns *AlreadyRunningError.
// The file is opened close-on-exec, so hook commands the service runs do
// not inherit (and keep alive) the lock.
func AcquirePidFile(dir string) (*PidFile, error) {
	path := filepath.Join(dir, PidFileName)
	deadline := time.Now().Add(acquireRetry)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open pid file: %w", err)
		}
		err = flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			if time.Now().After(deadline) {
				return nil, &AlreadyRunningError{PID: readPid(path)}
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock pid file %s: %w", path, err)
		}
		// A service that stopped between our open and our lock removed
		// the file we opened; locking an unlinked file proves nothing, so
		// start over on the file now at path.
		if !isFileAt(f, path) {
			f.Close()
			continue
		}
		p := &PidFile{path: path, f: f}
		if err := p.writePid(); err != nil {
			f.Close()
			return nil, err
		}
		return p, nil
	}
}

func (p *PidFile) writePid() error {
	if err := p.f.Truncate(0); err != nil {
		return fmt.Errorf("write pid file %s: %w", p.path, err)
	}
	if _, err := p.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return fmt.Errorf("write pid file %s: %w", p.path, err)
	}
	return nil
}

// Path is the pid file's path.
func (p *PidFile) Path() string { return p.path }

// Release removes the pid file and drops the lock. The file is removed
// while still locked, so that no other process can lock it in between
// and then see it disappear.
func (p *PidFile) Release() error {
	err := os.Remove(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Running reports whether a service holds the lock on dir/schedsync.pid,
// and its pid if so. It probes with a non-blocking shared lock, released
// at once. pid is 0 when the service is not running: a stale pid may
// belong to an unrelated process by now.
func Running(dir string) (pid int, running bool, err error) {
	path := filepath.Join(dir, PidFileName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("open pid file: %w", err)
	}
	defer f.Close()
	err = flock(f, unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		_ = flock(f, unix.LOCK_UN)
		return 0, false, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return 0, false, fmt.Errorf("probe lock of pid file %s: %w", path, err)
	}
	// The service writes its pid just after taking the lock: give a service
	// that is starting this instant a moment to do so.
	for range 10 {
		if pid = readPid(path); pid > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return pid, true, nil
}

// readPid returns the pid in the file, or 0 if there is none.
func readPid(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid < 0 {
		return 0
	}
	return pid
}

func flock(f *os.File, how int) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = conn.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if !errors.Is(ferr, unix.EINTR) {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}

// isFileAt reports whether the open file f is the file at path.
func isFileAt(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}
