package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/schedsync/schedsync/internal/config"
)

// The example files in configs/ are what operators copy: they must load,
// validate and show every key.
func TestExampleConfigs(t *testing.T) {
	for _, tt := range []struct {
		file string
		role config.Role
	}{
		{"master.sync.properties", config.RoleMaster},
		{"slave.sync.properties", config.RoleSlave},
	} {
		t.Run(tt.file, func(t *testing.T) {
			cleanEnv(t)
			path := filepath.Join("..", "..", "configs", tt.file)
			// The examples read the token from /etc/schedsync/token.
			t.Setenv("SCHEDSYNC_SYNC_TOKEN_FILE", writeFile(t, "token", "example-token\n"))
			cfg, err := load(t, path)
			if err != nil {
				t.Fatalf("load %s: %v", tt.file, err)
			}
			if cfg.Node.Role != tt.role || cfg.Sync.Token != "example-token" {
				t.Errorf("%s: role %s, token %q", tt.file, cfg.Node.Role, cfg.Sync.Token)
			}
			if tt.role == config.RoleSlave && cfg.Master.Addr() != "10.0.0.1:7700" {
				t.Errorf("slave dials %s, want 10.0.0.1:7700", cfg.Master.Addr())
			}

			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range config.Keys() {
				// Set or commented out: either way the operator sees it.
				re := regexp.MustCompile(`(?m)^#?` + regexp.QuoteMeta(k.Name) + `=`)
				if !re.Match(data) {
					t.Errorf("%s does not show key %s", tt.file, k.Name)
				}
			}
		})
	}
}

func TestExampleCrontabRunsResync(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "crontab"))
	if err != nil {
		t.Fatal(err)
	}
	var jobs []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 5 && !strings.HasPrefix(line, "#") && !strings.Contains(f[0], "=") {
			jobs = append(jobs, strings.Join(f[5:], " "))
		}
	}
	if len(jobs) != 1 || !strings.HasPrefix(jobs[0], "schedsync --config /etc/schedsync/sync.properties resync") {
		t.Errorf("crontab jobs = %q, want one `schedsync --config ... resync`", jobs)
	}
}
