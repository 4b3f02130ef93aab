package pgtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// runDyingOwner runs the test binary as a process that starts a cluster and
// exits without stopping it.
func runDyingOwner(t *testing.T, mode string, keep bool) helperReport {
	t.Helper()
	Shared(t) // skips or fails without PostgreSQL
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	if keep {
		cmd.Env = append(cmd.Env, helperKeepEnv+"=1")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.Bytes())
	}
	var r helperReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("helper said %q: %v", out, err)
	}
	t.Cleanup(func() {
		stopPostmaster(filepath.Join(r.Dir, "data"))
		os.RemoveAll(r.Dir)
	})
	return r
}

func gone(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

func TestWatchdogCleansUpAfterDeadOwner(t *testing.T) {
	r := runDyingOwner(t, "die", false)
	eventually.That(t, "the server to stop", 30*time.Second, func() bool { return refuses(r.Port) })
	eventually.That(t, "the directory to go", 30*time.Second, func() bool { return gone(r.Dir) })
}

func TestWatchdogKeepsKeptCluster(t *testing.T) {
	r := runDyingOwner(t, "die", true)
	eventually.That(t, "the server to stop", 30*time.Second, func() bool { return refuses(r.Port) })
	eventually.That(t, "postmaster.pid to go", 30*time.Second, func() bool { return gone(filepath.Join(r.Dir, "data", "postmaster.pid")) })
	if gone(filepath.Join(r.Dir, "data", "PG_VERSION")) {
		t.Error("kept cluster was deleted")
	}
}

func TestStartRemovesStaleClusters(t *testing.T) {
	live := Shared(t)
	// Each Start cleans up after the dead owners before it, so the first
	// dying owner's cluster is cleaned by the second's Start, and the
	// second's by ours.
	staleKept := runDyingOwner(t, "die-no-watchdog", true)
	if refuses(staleKept.Port) {
		t.Fatal("without a watchdog the dead owner's server should still run")
	}
	stale := runDyingOwner(t, "die-no-watchdog", false)
	if refuses(stale.Port) {
		t.Fatal("without a watchdog the dead owner's server should still run")
	}
	if !refuses(staleKept.Port) || gone(filepath.Join(staleKept.Dir, "data", "PG_VERSION")) {
		t.Errorf("stale kept cluster: want stopped with its data kept")
	}
	c := startCluster(t, Options{})
	if !refuses(stale.Port) || !gone(stale.Dir) {
		t.Errorf("stale cluster still there: %s", stale.Dir)
	}
	for _, alive := range []*Cluster{live, c} {
		conn := connect(t, alive.URL("postgres"))
		if err := conn.Ping(context.Background()); err != nil {
			t.Errorf("a live cluster was touched: %v", err)
		}
	}
}
