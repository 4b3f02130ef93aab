package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive lock on the spool directory, so that two
// processes (or two Opens in one process) never append to the same files.
// The kernel drops the lock when the process dies, however it dies.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open spool lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock spool %s: in use by another process or another Open", dir)
		}
		return nil, fmt.Errorf("lock spool %s: %w", dir, err)
	}
	return f, nil
}

// fdatasync flushes a file's data and the metadata needed to read it back
// (its size), but not its timestamps.
// It holds a reference to the descriptor throughout (SyscallConn), so a
// Close meanwhile (Sync runs it without the writer lock) waits instead of
// letting the number be reused; on a file already closed it returns
// os.ErrClosed.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return os.ErrClosed // Control fails only on a closed descriptor
	}
	return serr
}
