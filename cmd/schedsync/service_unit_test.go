package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd unit is what operators install: it must run the service in
// the foreground with the packaged config and not restart on exit 2 or 3.
func TestExampleSystemdUnit(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "schedsync.service"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"Type":                     "notify",
		"ExecStart":                "/usr/bin/schedsync --config /etc/schedsync/sync.properties start --foreground",
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": "2 3",
		"KillSignal":               "SIGTERM",
		"User":                     "schedsync",
		"StateDirectory":           "schedsync",
	} {
		if got[k] != want {
			t.Errorf("%s=%q, want %q", k, got[k], want)
		}
	}
	if !strings.HasPrefix(got["ExecStop"], "/usr/bin/schedsync --config /etc/schedsync/sync.properties stop") {
		t.Errorf("ExecStop=%q", got["ExecStop"])
	}
}
