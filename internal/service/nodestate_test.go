package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/config"
)

func TestNodeStateRoundTripAndEffective(t *testing.T) {
	dir := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Node.Role, cfg.Spool.Dir = config.RoleMaster, dir
	cfg.Master.Host, cfg.Master.Port = "10.0.0.9", 7700
	if _, ok, err := LoadNodeState(dir); ok || err != nil {
		t.Fatalf("no node.json: ok=%v err=%v, want neither", ok, err)
	}
	if eff, st, err := Effective(cfg); err != nil || eff.Node.Role != config.RoleMaster || st.Role != config.RoleMaster {
		t.Fatalf("without node.json Effective = %s, %+v, %v; want the config file's role", eff.Node.Role, st, err)
	}
	want := NodeState{Role: config.RoleSlave, Generation: 3, MasterHost: "10.0.0.2", MasterPort: 7701, Why: "switchover", Since: time.Now().UTC().Truncate(time.Second)}
	if err := SaveNodeState(dir, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := LoadNodeState(dir)
	if err != nil || !ok || got != want {
		t.Fatalf("LoadNodeState = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	eff, _, err := Effective(cfg)
	if err != nil || eff.Node.Role != config.RoleSlave || eff.Master.Host != "10.0.0.2" || eff.Master.Port != 7701 {
		t.Fatalf("Effective = role %s master %s:%d, %v; want the persisted slave of 10.0.0.2:7701", eff.Node.Role, eff.Master.Host, eff.Master.Port, err)
	}
	if cfg.Node.Role != config.RoleMaster {
		t.Error("Effective changed the caller's config")
	}
}

func TestNodeStateCorruptIsAnError(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"{not json", `{"role":"boss","generation":2}`} {
		if err := os.WriteFile(filepath.Join(dir, nodeStateFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, ok, err := LoadNodeState(dir)
		if err == nil || ok || !strings.Contains(err.Error(), nodeStateFile) {
			t.Errorf("node.json %q: ok=%v err=%v; want an error naming the file", content, ok, err)
		}
	}
}
