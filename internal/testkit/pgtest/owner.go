package pgtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// ownerFile is locked (flock) by the process that owns the cluster for
	// as long as it does. A lock, not the pid it contains, tells whether
	// the owner lives: the kernel drops it when the owner dies, even if
	// the owner lingers as a zombie in a container without an init, and
	// a recycled pid cannot fake it. The pid is there for humans.
	ownerFile = "owner.pid"
	// keepFile marks a cluster started with Keep: cleanup of dead owners
	// stops its server but leaves its data.
	keepFile = "keep"
	// orphanAge is how old a cluster directory without an owner file must
	// be before it counts as abandoned: younger ones may be being created.
	orphanAge = time.Hour
)

// clustersDir returns the directory that holds one subdirectory per cluster
// started without Options.Dir, creating it. It is per user, so that cleanup
// only ever meets clusters it may delete.
func clustersDir(cred *syscall.Credential) (string, error) {
	base := os.TempDir()
	if cred != nil && !traversableBy(base, cred) {
		// The postgres user must reach its data directory; a private
		// TMPDIR such as /root/tmp would make initdb fail obscurely.
		base = "/tmp"
	}
	dir := filepath.Join(base, fmt.Sprintf("schedsync-pgtest-%d", os.Geteuid()))
	mode := os.FileMode(0o700)
	if cred != nil {
		mode = 0o755
	}
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create clusters directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("create clusters directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || (ok && int(st.Uid) != os.Geteuid()) {
		// Someone else's directory under a shared /tmp: we would delete
		// their clusters or run ours where they can tamper with them.
		return "", fmt.Errorf("clusters directory %s is not a directory owned by uid %d; remove it or set TMPDIR", dir, os.Geteuid())
	}
	if err := os.Chmod(dir, mode); err != nil {
		return "", fmt.Errorf("chmod clusters directory: %w", err)
	}
	return dir, nil
}

// traversableBy reports whether every directory from / down to dir can be
// entered by the user of cred.
func traversableBy(dir string, cred *syscall.Credential) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		switch {
		case perm&0o001 != 0:
		case ok && st.Uid == cred.Uid && perm&0o100 != 0:
		case ok && st.Gid == cred.Gid && perm&0o010 != 0:
		default:
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// lockOwner takes the owner lock of the cluster in dir, or fails if a live
// process holds it.
func lockOwner(dir string) (*os.File, error) {
	path := filepath.Join(dir, ownerFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	switch {
	case err == nil:
		// An existing directory (Options.Dir): ours if its owner is gone.
		if err := tryLock(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("cluster in %s is in use by another process (%s is locked)", dir, path)
		}
	case errors.Is(err, os.ErrNotExist):
		// Lock under a temporary name and rename into place, so that the
		// owner file never exists unlocked: cleanup in another process
		// would take it for a dead owner's and delete the new cluster.
		tmp := path + ".new"
		if f, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
			return nil, fmt.Errorf("create owner file: %w", err)
		}
		if err := tryLock(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("cluster in %s is being created by another process", dir)
		}
		if err := os.Rename(tmp, path); err != nil {
			f.Close()
			return nil, fmt.Errorf("create owner file: %w", err)
		}
	default:
		return nil, fmt.Errorf("open owner file: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func tryLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// removeStaleClusters stops and deletes the clusters under parent whose
// owner died without stopping them. It is best effort: a cluster it cannot
// clean now is left for the next run, never a reason to fail this one.
func removeStaleClusters(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeIfStale(filepath.Join(parent, e.Name()))
		}
	}
}

func removeIfStale(dir string) {
	_, err := os.Stat(filepath.Join(dir, keepFile))
	keep := err == nil
	f, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		fi, err := os.Stat(dir)
		if err == nil && time.Since(fi.ModTime()) > orphanAge && !keep {
			stopPostmaster(filepath.Join(dir, "data"))
			_ = os.RemoveAll(dir)
		}
		return
	}
	if err != nil {
		return
	}
	defer f.Close()
	if tryLock(f) != nil {
		return // its owner is alive
	}
	stopPostmaster(filepath.Join(dir, "data"))
	if !keep {
		_ = os.RemoveAll(dir)
	}
}

// stopPostmaster shuts down (immediate mode) the postmaster running in
// dataDir, if any, and waits a bounded time for it to go. It signals the
// postmaster itself rather than running pg_ctl, because pg_ctl would have
// to run as the postgres user, and it checks that the pid in a possibly
// stale postmaster.pid really is that postmaster before signalling it.
func stopPostmaster(dataDir string) {
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || !isPostmasterOf(pid, dataDir) {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		return
	}
	// The postmaster removes its pid file as it exits.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(pidFile); errors.Is(err, os.ErrNotExist) {
			return
		}
	}
}

// isPostmasterOf reports whether pid is a live process whose working
// directory is dataDir: the postmaster chdirs into its data directory, so
// this tells it apart from a process that was given a recycled pid.
func isPostmasterOf(pid int, dataDir string) bool {
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		if _, err := os.Stat("/proc/self"); err != nil {
			// No procfs to check with: trust the pid file, as pg_ctl does.
			return syscall.Kill(pid, 0) == nil
		}
		return false
	}
	real, err := filepath.EvalSymlinks(dataDir)
	return err == nil && cwd == real
}
