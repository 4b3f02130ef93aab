package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sharedStartTimeout bounds initdb plus startup on a slow CI machine.
const sharedStartTimeout = 3 * time.Minute

// shared is the package's cluster for Shared, started on first use so that
// a `go test -run` that needs no database does not pay for initdb.
var shared struct {
	mu      sync.Mutex
	cluster *Cluster
	err     error
	stopped bool
}

// inCI reports whether a missing PostgreSQL must fail the tests instead of
// skipping them: in CI (and in `make test`), skipped tests would pass
// silently.
func inCI() bool { return os.Getenv("CI") != "" }

func notFoundBanner(err error) string {
	line := strings.Repeat("=", 78)
	what := "Tests that need it are SKIPPED."
	if inCI() {
		what = "CI is set, so this is a FAILURE: tests must not be skipped here."
	}
	return fmt.Sprintf("%s\n%v\n%s\nInstall the PostgreSQL server: apt-get install -y postgresql (as root), or run `make deps`.\n%s\n", line, err, what, line)
}

// Main is for TestMain: it runs the tests, then stops the package's shared
// cluster if one was started, including on SIGINT and SIGTERM, and exits.
// Without PostgreSQL it fails at once when CI is set and otherwise lets the
// tests run (Shared skips them).
func Main(m *testing.M) {
	if err := Available(); err != nil {
		fmt.Fprint(os.Stderr, notFoundBanner(err))
		if inCI() {
			os.Exit(1)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "pgtest: %v: stopping the shared PostgreSQL cluster\n", sig)
		stopped := make(chan struct{})
		go func() {
			_ = stopShared()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-sigs: // a second signal does not wait; the watchdog cleans up
		}
		// Die of the signal, as without the handler, so that the
		// caller sees how the tests ended.
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		os.Exit(1)
	}()
	code := m.Run()
	signal.Stop(sigs)
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: stop shared cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func stopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.stopped = true
	if shared.cluster == nil {
		return nil
	}
	err := shared.cluster.Stop()
	shared.cluster = nil
	return err
}

// Shared returns the package's shared cluster, starting it on first use.
// Without PostgreSQL the test is skipped, or fails when CI is set. Tests
// that stop, crash or reconfigure a server must Start their own instead.
// Without Main the cluster is still removed when the test binary exits, by
// its watchdog.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if err := Available(); err != nil {
		if inCI() {
			t.Fatal(notFoundBanner(err))
		}
		t.Skip(notFoundBanner(err))
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.stopped {
		t.Fatal("pgtest: the shared cluster was already stopped")
	}
	if shared.cluster == nil && shared.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), sharedStartTimeout)
		defer cancel()
		shared.cluster, shared.err = Start(ctx, Options{})
	}
	if shared.err != nil {
		t.Fatalf("pgtest: start the shared cluster: %v", shared.err)
	}
	return shared.cluster
}

// NewDB creates a database with a unique name in the shared cluster and
// returns its URL; it is dropped when the test ends.
func NewDB(t testing.TB) string {
	t.Helper()
	c := Shared(t)
	name := dbName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, err := c.CreateDB(ctx, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DropDB(ctx, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return url
}

// dbName makes a database name from a test name that is recognisable in the
// server log, unique, and within PostgreSQL's 63-byte identifier limit.
func dbName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	base := b.String()
	if len(base) > 40 {
		base = base[:40]
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	return "t_" + base + "_" + hex.EncodeToString(suffix[:])
}
