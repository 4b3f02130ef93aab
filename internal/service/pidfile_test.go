package service

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestPidFileLock(t *testing.T) {
	dir := t.TempDir()
	if pid, running, err := Running(dir); err != nil || running || pid != 0 {
		t.Fatalf("Running on an empty dir = %d, %v, %v", pid, running, err)
	}
	p, err := AcquirePidFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p.Path())
	if string(data) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("pid file holds %q", data)
	}
	if pid, running, err := Running(dir); err != nil || !running || pid != os.Getpid() {
		t.Errorf("Running while locked = %d, %v, %v", pid, running, err)
	}
	// flock locks belong to an open file, so a second open conflicts even
	// in the same process: this stands for a second service.
	_, err = AcquirePidFile(dir)
	var already *AlreadyRunningError
	if !errors.As(err, &already) || already.PID != os.Getpid() {
		t.Errorf("second AcquirePidFile = %v, want *AlreadyRunningError with our pid", err)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file still there after Release: %v", err)
	}
	if _, running, _ := Running(dir); running {
		t.Error("Running after Release")
	}
}

// A pid file left by a killed service names a pid that may be anyone's
// by now: it is neither an obstacle nor reported.
func TestPidFileStale(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"1\n", "garbage", ""} {
		if err := os.WriteFile(filepath.Join(dir, PidFileName), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if pid, running, err := Running(dir); err != nil || running || pid != 0 {
			t.Errorf("%q: Running = %d, %v, %v; want not running, pid 0", content, pid, running, err)
		}
		p, err := AcquirePidFile(dir)
		if err != nil {
			t.Fatalf("%q: AcquirePidFile over a stale file: %v", content, err)
		}
		data, _ := os.ReadFile(p.Path())
		if string(data) != strconv.Itoa(os.Getpid())+"\n" {
			t.Errorf("%q: pid file holds %q after acquire", content, data)
		}
		p.Release()
	}
}

func TestAcquirePidFileNeedsDir(t *testing.T) {
	if _, err := AcquirePidFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("AcquirePidFile in a missing directory succeeded")
	}
}
