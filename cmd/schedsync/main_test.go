package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// cli runs schedsync in-process, as main would, with a clean SCHEDSYNC_*
// environment so that the developer's own settings cannot leak in.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// cleanEnv blanks every SCHEDSYNC_* variable for the test; blank counts as
// unset for the loader, as for viper.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, envPrefix) {
			t.Setenv(name, "")
		}
	}
}

// masterProps is a complete, valid master config; tests add keys to it,
// or replace its keys with overlay (a key twice is an error).
func masterProps(t *testing.T) string {
	return "node.role=master\n" +
		"node.name=node01\n" +
		"repository.url=postgres://sched@127.0.0.1:1/scheduler?connect_timeout=5\n" +
		"sync.token=test-token-123\n" +
		"spool.dir=" + t.TempDir() + "\n"
}

// overlay is base with the key=value lines of extra, which replace the
// lines of base that set the same keys (a key twice is a config error).
func overlay(base, extra string) string {
	set := map[string]bool{}
	for _, line := range strings.Split(extra, "\n") {
		if k, _, ok := strings.Cut(line, "="); ok {
			set[strings.TrimSpace(k)] = true
		}
	}
	var keep []string
	for _, line := range strings.Split(strings.TrimSuffix(base, "\n"), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && set[strings.TrimSpace(k)] {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n") + "\n" + extra
}

func slaveProps(t *testing.T) string {
	return "node.role=slave\n" +
		"node.name=node02\n" +
		"repository.url=postgres://sched@127.0.0.1:1/scheduler?connect_timeout=5\n" +
		"master.host=127.0.0.1\n" +
		"sync.token=test-token-123\n" +
		"spool.dir=" + t.TempDir() + "\n"
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// contractCommands are the commands of docs/DESIGN.md's CLI contract.
var contractCommands = []string{
	"install", "uninstall", "start", "stop", "status", "backup", "restore",
	"resync", "verify", "promote", "version",
}

func TestHelpListsEveryCommand(t *testing.T) {
	cleanEnv(t)
	code, out, errOut := cli(t, "--help")
	if code != exitOK {
		t.Fatalf("--help exit %d, stderr %s", code, errOut)
	}
	for _, name := range contractCommands {
		found := false
		for line := range strings.SplitSeq(out, "\n") {
			f := strings.Fields(line)
			// "  install     Create the capture triggers ..." : name and a description.
			if len(f) >= 2 && f[0] == name {
				found = true
			}
		}
		if !found {
			t.Errorf("--help does not list %q with a description:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "--config") {
		t.Errorf("--help does not mention --config:\n%s", out)
	}
}

func TestVersionNeedsNoConfig(t *testing.T) {
	cleanEnv(t)
	t.Setenv(configPathEnv, "/nonexistent/sync.properties")
	code, out, errOut := cli(t, "version")
	if code != exitOK {
		t.Fatalf("version exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{"schedsync " + version, "commit: ", runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

// TestRoleChecks: slave-only commands refuse to run on a master (exit 2).
func TestRoleChecks(t *testing.T) {
	cleanEnv(t)
	master := writeFile(t, "master.properties", masterProps(t))
	for _, args := range [][]string{{"restore", "--in", "/tmp/x"}, {"resync", "--force"}} {
		code, _, errOut := cli(t, append([]string{"--config", master}, args...)...)
		if code != exitUsage || !strings.Contains(errOut, "runs on a slave") {
			t.Errorf("%v on a master: exit %d, %q", args, code, errOut)
		}
	}
}

// TestVerifyNeedsARunningSlave: verify is a slave command that goes through
// the slave service.
func TestVerifyNeedsARunningSlave(t *testing.T) {
	cleanEnv(t)
	master := writeFile(t, "master.properties", masterProps(t))
	if code, _, errOut := cli(t, "--config", master, "verify"); code != exitUsage || !strings.Contains(errOut, "verify runs on a slave") {
		t.Errorf("verify on a master: exit %d, %q", code, errOut)
	}
	slave := writeFile(t, "slave.properties", slaveProps(t))
	if code, _, errOut := cli(t, "--config", slave, "verify"); code != exitFailure || !strings.Contains(errOut, "the slave service is not running") {
		t.Errorf("verify without a service: exit %d, %q", code, errOut)
	}
}

// TestPromoteOnAMasterDoesNothing: promote is idempotent; on a master it
// says so and exits 0 without touching anything.
func TestPromoteOnAMasterDoesNothing(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", masterProps(t))
	code, out, errOut := cli(t, "--config", path, "promote")
	if code != 0 || !strings.Contains(out, "is already the master") {
		t.Errorf("promote on a master: exit %d, stdout %q, stderr %q; want 0 and 'is already the master'", code, out, errOut)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", masterProps(t))
	tests := []struct {
		args []string
		msg  string
	}{
		{nil, "missing command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--config", path, "start", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"--config", path, "start", "--wait", "soon"}, `invalid argument "soon"`},
		{[]string{"--config", path, "backup"}, `required flag(s) "out" not set`},
		{[]string{"--config", path, "verify", "extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		code, _, errOut := cli(t, tt.args...)
		if code != exitUsage || !strings.Contains(errOut, tt.msg) || !strings.Contains(errOut, "--help") {
			t.Errorf("%v: exit %d, stderr %q; want 2, %q and a pointer to --help", tt.args, code, errOut, tt.msg)
		}
	}
}

// TestEveryCommandReportsConfigErrors: a config mistake is exit 2 and the
// same message whatever the command, because each loads the config first.
func TestEveryCommandReportsConfigErrors(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", overlay(masterProps(t), "node.role=mastr\n"))
	for _, name := range contractCommands {
		if name == "version" {
			continue
		}
		args := []string{"--config", path, name}
		switch name {
		case "backup":
			args = append(args, "--out", "/tmp/x")
		case "restore":
			args = append(args, "--in", "/tmp/x")
		}
		code, _, errOut := cli(t, args...)
		want := "schedsync " + name + ": config " + path + `: node.role: "mastr" is not allowed; use master or slave`
		if code != exitUsage || strings.TrimSpace(errOut) != want {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", name, code, errOut, want)
		}
	}
}

func TestInstallReportsUnreachableRepository(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", masterProps(t)) // port 1: nothing listens
	code, _, errOut := cli(t, "--config", path, "install")
	want := "schedsync install: cannot connect to repository database (repository.url): "
	if code != exitFailure || !strings.HasPrefix(errOut, want) ||
		!strings.Contains(errOut, "check that PostgreSQL is running and the URL is right") {
		t.Errorf("exit %d, stderr %q; want 1 and %q...", code, errOut, want)
	}
}
