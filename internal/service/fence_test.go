package service

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/ship"
)

// TestGenerationsFence: a slave records the generation of the master it
// follows, in node.json and in its repository; a master that meets a
// slave of a higher generation refuses it, runs demote_command and ends
// fenced, with the word and the way back in its error.
func TestGenerationsFence(t *testing.T) {
	masterURL, slaveURL := newRepositories(t, "")
	mcfg := baseConfig(t, "master", masterURL)
	hookLog := filepath.Join(t.TempDir(), "hook.log")
	mcfg.Failover.DemoteCommand = "echo $SCHEDSYNC_EVENT $SCHEDSYNC_GENERATION >> " + hookLog
	m, err := NewMaster(mcfg, testLogger(t).With("node", "master"), NodeOptions{ConfigPath: "/etc/schedsync/sync.properties"})
	if err != nil {
		t.Fatal(err)
	}
	running, err := start(t, m)
	if err != nil {
		t.Fatalf("master: %v", err)
	}
	eventually.That(t, "master to reach its repository", 30*time.Second, func() bool { return m.Status().State == StateStreaming })
	if g := m.Status().Generation; g != 1 {
		t.Fatalf("a first master's generation is %d, want 1", g)
	}

	t.Run("slave learns its master's generation", func(t *testing.T) {
		scfg := slaveConfig(t, slaveURL, m.addr)
		s := newSlave(t, scfg, 10*time.Second)
		r, err := start(t, s)
		if err != nil {
			t.Fatalf("a new slave and a master of generation 1: %v", err)
		}
		r.stop(t)
		st, ok, err := LoadNodeState(scfg.Spool.Dir)
		if err != nil || !ok || st.Role != config.RoleSlave || st.Generation != 1 || s.Status().Generation != 1 {
			t.Errorf("slave after streaming: node.json %+v (%v, %v), status generation %d; want slave of generation 1", st, ok, err, s.Status().Generation)
		}
		var g int64
		pgtest.QueryRow(t, slaveURL, `SELECT generation FROM schedsync.state`).Scan(&g)
		if g != 1 {
			t.Errorf("schedsync.state.generation on the slave = %d, want 1", g)
		}
	})

	t.Run("master fenced by a slave of a higher generation", func(t *testing.T) {
		scfg := slaveConfig(t, slaveURL, m.addr)
		if err := SaveNodeState(scfg.Spool.Dir, NodeState{Role: config.RoleSlave, Generation: 3}); err != nil {
			t.Fatal(err)
		}
		_, err := start(t, newSlave(t, scfg, 5*time.Second))
		if !errors.Is(err, ship.ErrFenced) || !strings.Contains(err.Error(), "fenced") {
			t.Fatalf("slave of generation 3 against a master of generation 1: %v, want a fenced refusal", err)
		}
		ended, err := running.ended(30 * time.Second)
		if !ended {
			t.Fatal("the master kept running after a slave of a higher generation connected")
		}
		var f *FencedError
		if !errors.As(err, &f) || f.Higher != 3 || !strings.Contains(err.Error(), "resync --force") ||
			!strings.Contains(err.Error(), "/etc/schedsync/sync.properties") {
			t.Fatalf("master ended with %v; want a FencedError naming generation 3 and the way back", err)
		}
		data, _ := os.ReadFile(hookLog)
		if strings.TrimSpace(string(data)) != "fenced 1" {
			t.Errorf("demote_command log %q, want 'fenced 1'", data)
		}
	})
}

// TestNewerMasterStartsBesideAnOlderOne: a master of a higher generation
// that finds a master of a lower one among its failover.peers starts, and
// the older one fences itself.
func TestNewerMasterStartsBesideAnOlderOne(t *testing.T) {
	oldURL, newURL := pgtest.NewDB(t), pgtest.NewDB(t)
	install(t, oldURL, config.RoleMaster)
	install(t, newURL, config.RoleMaster)
	old, err := NewMaster(baseConfig(t, "master", oldURL), testLogger(t).With("node", "old"), NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	running, err := start(t, old)
	if err != nil {
		t.Fatalf("old master: %v", err)
	}

	ncfg := baseConfig(t, "master", newURL)
	ncfg.Node.Name = "master2"
	ncfg.Failover.Peers = []string{old.addr}
	if err := SaveNodeState(ncfg.Spool.Dir, NodeState{Role: config.RoleMaster, Generation: 2}); err != nil {
		t.Fatal(err)
	}
	newer, _ := startMaster(t, ncfg)
	if g := newer.Status().Generation; g != 2 {
		t.Errorf("the newer master's generation is %d, want 2", g)
	}
	ended, err := running.ended(30 * time.Second)
	if !ended {
		t.Fatal("the older master kept running beside a newer one")
	}
	var f *FencedError
	if !errors.As(err, &f) || f.Higher != 2 {
		t.Fatalf("the older master ended with %v; want a FencedError naming generation 2", err)
	}
}
