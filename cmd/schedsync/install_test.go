package main

import (
	"strings"
	"testing"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// TestInstallAndUninstall runs the commands against a real database: the
// report names what is captured, a second install changes nothing, and
// uninstall removes schema schedsync.
func TestInstallAndUninstall(t *testing.T) {
	cleanEnv(t)
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `CREATE TABLE qrtz_jobs (id int PRIMARY KEY, name text);
		CREATE TABLE qrtz_triggers (id int PRIMARY KEY);
		CREATE TABLE unrelated (id int PRIMARY KEY)`)
	path := writeFile(t, "sync.properties", "node.role=master\nnode.name=node01\n"+
		"repository.url="+url+"\nrepository.tables=qrtz_*\nsync.token=tok\n")

	code, out, errOut := cli(t, "--config", path, "install")
	if code != exitOK {
		t.Fatalf("install: exit %d, stderr %s", code, errOut)
	}
	t.Logf("install printed:\n%s", out)
	for _, want := range []string{
		"installed schedsync on master node01",
		"public.qrtz_jobs  (triggers added)",
		"public.qrtz_triggers  (triggers added)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "unrelated") {
		t.Errorf("install captured a table outside repository.tables:\n%s", out)
	}

	code, out, errOut = cli(t, "--config", path, "install")
	if code != exitOK || !strings.Contains(out, "nothing changed") {
		t.Errorf("second install: exit %d, stdout %s, stderr %s; want it to change nothing", code, out, errOut)
	}

	code, out, errOut = cli(t, "--config", path, "uninstall")
	if code != exitOK || !strings.Contains(out, "uninstalled schedsync from master node01") {
		t.Errorf("uninstall: exit %d, stdout %s, stderr %s", code, out, errOut)
	}
	var left bool
	pgtest.QueryRow(t, url, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'schedsync')`).Scan(&left)
	if left {
		t.Error("schema schedsync is still there after uninstall")
	}
}

func TestInstallRefusesTableWithoutPrimaryKey(t *testing.T) {
	cleanEnv(t)
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `CREATE TABLE job_log (at timestamptz, line text)`)
	path := writeFile(t, "sync.properties", "node.role=master\nnode.name=node01\n"+
		"repository.url="+url+"\nsync.token=tok\n")
	code, _, errOut := cli(t, "--config", path, "install")
	t.Logf("install printed to stderr:\n%s", errOut)
	if code != exitFailure || !strings.Contains(errOut, "capture.allow_no_pk") {
		t.Errorf("exit %d, stderr %q; want 1 and a pointer to capture.allow_no_pk", code, errOut)
	}

	t.Setenv("SCHEDSYNC_CAPTURE_ALLOW_NO_PK", "true")
	code, out, errOut := cli(t, "--config", path, "install")
	if code != exitOK || !strings.Contains(out, "public.job_log  (triggers added; no primary key") {
		t.Errorf("with allow_no_pk: exit %d, stdout %s, stderr %s", code, out, errOut)
	}
}
