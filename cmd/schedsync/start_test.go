package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestStartRefusesSpoolDirTooLongForSocket(t *testing.T) {
	cleanEnv(t)
	dir := "/" + strings.Repeat("d", 100)
	path := writeFile(t, "sync.properties", overlay(masterProps(t), "spool.dir="+dir+"\n"))
	code, _, errOut := cli(t, "--config", path, "start")
	want := "schedsync start: config " + path + ": spool.dir: is too long for the control socket schedsync.sock"
	if code != exitUsage || !strings.HasPrefix(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}
}

func TestStatusAndStopWhenNeverStarted(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", masterProps(t))
	code, out, errOut := cli(t, "--config", path, "status", "--json")
	if code != exitOK {
		t.Fatalf("status --json: exit %d, stderr %s", code, errOut)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatalf("status --json printed %q: %v", out, err)
	}
	for k, want := range map[string]any{"role": "master", "name": "node01", "running": false, "state": "stopped",
		"position": 0.0, "received_position": 0.0, "lag_seconds": 0.0, "backlog_bytes": 0.0} {
		if fields[k] != want {
			t.Errorf("status --json %s = %v, want %v", k, fields[k], want)
		}
	}
	if s, ok := fields["slaves"].([]any); !ok || len(s) != 0 {
		t.Errorf("status --json slaves = %v, want []", fields["slaves"])
	}

	code, out, _ = cli(t, "--config", path, "status")
	if code != exitOK || !strings.Contains(out, "running:") || !strings.Contains(out, "no") ||
		!strings.Contains(out, "slaves: none") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	code, out, _ = cli(t, "--config", path, "stop")
	if code != exitOK || out != "schedsync is not running\n" {
		t.Errorf("stop: exit %d, %q", code, out)
	}
}
