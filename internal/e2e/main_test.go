package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/service"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/reaper"
)

// buildTimeout bounds `go build` of the binary, on a cold cache too.
const buildTimeout = 5 * time.Minute

// binary is the schedsync binary built for this run, on first use, so that
// a `go test -run` that selects nothing builds nothing.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// services holds the spool directories of the services the tests may have
// running, so that an interrupted run can kill them: they run detached in
// sessions of their own and would outlive the test binary.
var services sync.Map // spool dir → struct{}

// reap kills the services if this binary dies without killing them.
var reap *reaper.Reaper

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: killing the schedsync services; pgtest's watchdogs remove the clusters\n", sig)
		killServices()
		// Die of the signal, as without the handler.
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
	}()
	// go test's own timeout ends the binary from a timer, with no signal
	// and no deferred call: the reaper kills the services then.
	r, err := reaper.Start("schedsync")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	reap = r
	code := m.Run()
	reap.Done()
	signal.Stop(sigs)
	if binary.dir != "" {
		_ = os.RemoveAll(binary.dir)
	}
	return code
}

// killServices kills every registered service that still holds its pid
// lock (only then is the pid in the file surely its own).
func killServices() {
	services.Range(func(dir, _ any) bool {
		if pid, running, _ := service.Running(dir.(string)); running && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return true
	})
}

// requirePostgres skips the test when the PostgreSQL server is not
// installed, or fails it when CI is set, where a skip would pass silently.
func requirePostgres(t *testing.T) {
	t.Helper()
	if err := pgtest.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and PostgreSQL is missing (install it: make deps): %v", err)
		}
		t.Skipf("PostgreSQL is missing (install it: make deps): %v", err)
	}
}

// schedsyncBinary returns the path of the schedsync binary, building it
// from the module's cmd/schedsync on first use.
func schedsyncBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		binary.path, binary.err = buildBinary()
	})
	if binary.err != nil {
		t.Fatalf("build schedsync: %v", binary.err)
	}
	return binary.path
}

func buildBinary() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// go test puts its own go first in PATH.
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root (go env GOMOD): %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if binary.dir, err = os.MkdirTemp("", "schedsync-e2e-"); err != nil {
		return "", err
	}
	out := filepath.Join(binary.dir, "schedsync")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/schedsync")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/schedsync in %s: %w\n%s", root, err, b)
	}
	return out, nil
}
