package e2e

import (
	"context"
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

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// TestSlaveSpoolCorrupt: a byte of the slave's spool that apply has not
// reached yet is damaged while the slave is down. The slave must stop
// rather than skip it, name the segment and the offset, and apply nothing
// past it; `schedsync refetch` and a start must then bring it back, with
// the master's rows exactly.
func TestSlaveSpoolCorrupt(t *testing.T) {
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	// Small segments, so that the backlog fills sealed segments that are
	// wholly unapplied.
	w := newWorldWith(t, ctx, "trigger", nil, []string{"spool.segment_size=64KiB"})
	l, ok := w.installAndLoad(t, ctx)
	if !ok {
		return
	}
	time.Sleep(2 * time.Second) // some applied, some not
	applied := w.slaveBacklog(t, ctx, 256<<10)
	file, off, ok := flipUnapplied(t, filepath.Join(w.slave.spool, "spool"), applied)
	if !ok {
		t.Fatalf("no sealed segment of the slave's spool starts after position %d", applied)
	}
	t.Logf("flipped the byte at %d of %s (slave applied %d)", off, file, applied)
	if err := w.slaveDB.Restart(ctx); err != nil {
		t.Fatal(err)
	}

	var msg string
	r, err := w.slave.run(startTimeout, "start", "--wait", "30s")
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 {
		msg = r.output() // found as the spool was opened
	} else {
		eventually.True(t, "the slave to stop at the damaged record", recoverTimeout, func() (bool, string) {
			st := w.slave.mustStatus(t)
			msg = st.Error
			return !st.Running && st.State == "failed", st.String()
		})
	}
	t.Logf("the slave stopped with: %s", msg)
	for _, want := range []string{filepath.Base(file), "at byte", "schedsync refetch"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not name %q: %s", want, msg)
		}
	}
	if hi, ok := sealedHi(file); ok {
		var now uint64
		if err := w.slave.queryRow(ctx, `SELECT applied_position FROM schedsync.state`, &now); err != nil {
			t.Fatal(err)
		}
		if now >= hi {
			t.Errorf("the slave applied position %d, past the damaged segment (which ends at %d)", now, hi)
		}
	}

	out := w.slave.mustRun(t, cmdTimeout, "refetch")
	if !strings.Contains(out, "moved the spool aside") {
		t.Fatalf("refetch: %s", out)
	}
	t.Log(strings.TrimSpace(out))
	w.slave.start(t)
	w.slave.waitStreaming(t, recoverTimeout)
	w.finish(t, ctx, l)
}

// TestSlaveSpoolDiskFull: the filesystem of the slave's spool.dir fills up
// while the master is busy. The slave must say so in status (disk_full,
// naming the directory), keep running, and resume by itself once space
// returns, with nothing lost. It needs a filesystem of its own: root
// mounts a small tmpfs.
func TestSlaveSpoolDiskFull(t *testing.T) {
	requirePostgres(t)
	spoolDiskFull(t, "logical", func(w *world) *node { return w.slave })
}

// TestMasterSpoolDiskFull: the filesystem of the master's spool.dir fills
// up under load. The master must say so in status (disk_full, naming the
// directory) and keep serving its slave what the spool holds (the slave
// stays streaming: a full disk is no reason for a failover); once space
// returns it must resume capture by itself, with nothing lost: the changes
// made meanwhile waited in the repository.
func TestMasterSpoolDiskFull(t *testing.T) {
	inEachMode(t, func(t *testing.T, mode string) {
		spoolDiskFull(t, mode, func(w *world) *node { return w.master })
	})
}

// spoolDiskFull fills the filesystem of the spool.dir of one node of the
// pair (which picks it) under load, checks that it reports disk_full and
// stays up while the other streams on, frees the space and requires the
// pair to converge to equal rows.
func spoolDiskFull(t *testing.T, mode string, which func(*world) *node) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small filesystem for the spool.dir (CI runs as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, mode)
	full := which(w)
	other := w.slave
	if full == w.slave {
		other = w.master
	}
	mountSmallFS(t, full, 64<<20)
	l, ok := w.installAndLoad(t, ctx)
	if !ok {
		return
	}
	time.Sleep(2 * time.Second)
	free := fillDisk(t, full.spool)
	var st status
	eventually.True(t, "the "+full.name+" to report disk_full", recoverTimeout, func() (bool, string) {
		st = full.mustStatus(t)
		return st.State == "disk_full", st.String()
	})
	if !st.Running || !strings.Contains(st.Error, "no space left on device") || !strings.Contains(st.Error, full.spool) {
		t.Errorf("disk_full status does not say what and where: %s", st)
	}
	time.Sleep(3 * time.Second) // the workload goes on meanwhile
	if st := full.mustStatus(t); !st.Running || st.State != "disk_full" {
		t.Errorf("the %s did not stay up and paused while the disk was full: %s", full.name, st)
	}
	if st := other.mustStatus(t); !st.Running || st.State != "streaming" {
		t.Errorf("the %s should go on streaming while the other's disk is full: %s", other.name, st)
	}
	free()
	full.waitStreaming(t, recoverTimeout)
	w.finish(t, ctx, l)
}

// slaveBacklog stops the slave's database, so that the slave receives
// without applying, until it holds at least n spool bytes past its
// applied position; then it kills the slave service and returns that
// position. The slave database stays stopped.
func (w *world) slaveBacklog(t *testing.T, ctx context.Context, n int64) uint64 {
	t.Helper()
	if err := w.slaveDB.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	var st status
	eventually.True(t, "the slave to receive a backlog it cannot apply", recoverTimeout, func() (bool, string) {
		st = w.slave.mustStatus(t)
		return st.BacklogBytes >= n, st.String()
	})
	w.slave.kill9(t)
	return st.Position
}

// queryRow runs one query on the node's repository.
func (n *node) queryRow(ctx context.Context, sql string, dest ...any) error {
	conn, err := pgx.Connect(ctx, n.repo)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// segFile is a spool segment file and the positions its name gives.
type segFile struct {
	path   string
	lo, hi uint64
	sealed bool
	size   int64
}

// segments lists the spool's segment files, oldest first.
func segments(t *testing.T, dir string) []segFile {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	var segs []segFile
	for _, p := range names {
		base := strings.TrimSuffix(filepath.Base(p), ".seg")
		lo, rest, sealed := strings.Cut(base, "-")
		s := segFile{path: p, sealed: sealed}
		var err error
		if s.lo, err = strconv.ParseUint(lo, 16, 64); err != nil {
			continue
		}
		if sealed {
			if s.hi, err = strconv.ParseUint(rest, 16, 64); err != nil {
				continue
			}
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		s.size = fi.Size()
		segs = append(segs, s)
	}
	slices.SortFunc(segs, func(a, b segFile) int { return int(a.lo) - int(b.lo) })
	return segs
}

// sealedHi is the last position of a sealed segment, from its name.
func sealedHi(path string) (uint64, bool) {
	base := strings.TrimSuffix(filepath.Base(path), ".seg")
	_, hi, ok := strings.Cut(base, "-")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(hi, 16, 64)
	return v, err == nil
}

// flipByte inverts the byte at off in the file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// mountSmallFS mounts a tmpfs of size bytes on the node's spool.dir (root
// only), unmounted when the test ends.
func mountSmallFS(t *testing.T, n *node, size int64) {
	t.Helper()
	dir := n.spool
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0750", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mount a tmpfs on %s: %v: %s", dir, err, out)
	}
	// The service first: its pid file is on the mount, so once unmounted
	// neither the node's cleanup nor the reaper could find it.
	// The log is on the mount too: a failed test shows it before it goes
	// (the world's own dump runs later, after the unmount).
	t.Cleanup(func() {
		n.killIfRunning(t)
		if t.Failed() {
			t.Logf("---- last lines of %s's log, on the small filesystem about to be unmounted:\n%s", n.name, n.logTail(80))
		}
		_ = exec.Command("umount", "-l", dir).Run()
	})
}

// fillDisk fills the filesystem of dir with a file and returns what
// removes it.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// Single bytes, until not one more fits.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	f.Close()
	return func() {
		if err := os.Remove(path); err != nil {
			t.Error(err)
		}
	}
}
