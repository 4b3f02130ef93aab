package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/backup"
	"github.com/schedsync/schedsync/internal/service"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

const backupSchema = `CREATE TABLE qrtz_jobs (id serial PRIMARY KEY, name text UNIQUE, data bytea);
	CREATE TABLE qrtz_triggers (id int PRIMARY KEY, job_id int REFERENCES qrtz_jobs (id), next_fire timestamptz)`

// backupPair is a master and a slave repository with their configs.
type backupPair struct {
	masterURL, slaveURL   string
	masterConf, slaveConf string
	slaveSpool            string
	masterConn, slaveConn *pgx.Conn
}

func newBackupPair(t *testing.T) *backupPair {
	t.Helper()
	cleanEnv(t)
	p := &backupPair{masterURL: pgtest.NewDB(t), slaveURL: pgtest.NewDB(t), slaveSpool: t.TempDir()}
	p.masterConn, p.slaveConn = dbConn(t, p.masterURL), dbConn(t, p.slaveURL)
	ctx := context.Background()
	if _, err := p.masterConn.Exec(ctx, backupSchema+`;
		INSERT INTO qrtz_jobs (name, data) SELECT 'job' || g, '\xdeadbeef' FROM generate_series(1, 3000) g;
		INSERT INTO qrtz_triggers SELECT g, g, now() FROM generate_series(1, 3000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.slaveConn.Exec(ctx, backupSchema+`; INSERT INTO qrtz_jobs (name) VALUES ('stale')`); err != nil {
		t.Fatal(err)
	}
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p.masterConf = writeFile(t, "master.properties", "node.role=master\nnode.name=node01\nrepository.url="+p.masterURL+
		"\nsync.token=tok\nsync.listen=127.0.0.1:"+strconv.Itoa(port)+"\nspool.dir="+t.TempDir()+"\n")
	p.slaveConf = writeFile(t, "slave.properties", "node.role=slave\nnode.name=node02\nrepository.url="+p.slaveURL+
		"\nmaster.host=127.0.0.1\nsync.token=tok\nspool.dir="+p.slaveSpool+"\n")
	for _, conf := range []string{p.masterConf, p.slaveConf} {
		if code, _, errOut := cli(t, "--config", conf, "install"); code != exitOK {
			t.Fatalf("install: exit %d: %s", code, errOut)
		}
	}
	return p
}

// startMaster runs the master's sync service in this process until the
// test ends: backup takes its snapshot from the service's capture.
func startMaster(t *testing.T, conf string) {
	t.Helper()
	cfg, err := load(t, conf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- service.RunService(ctx, *cfg, service.Options{Ready: func() { close(ready) }}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("master service: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("master service: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the master service did not get ready in 30s")
	}
}

func dbConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func fingerprint(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	var fp string
	err := c.QueryRow(context.Background(), `SELECT
		coalesce((SELECT md5(string_agg(j::text, ',' ORDER BY id)) FROM qrtz_jobs j), '-') ||
		coalesce((SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM qrtz_triggers t), '-') ||
		(SELECT last_value FROM qrtz_jobs_id_seq)::text`).Scan(&fp)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// TestBackupAndRestoreCommands runs both commands end to end: the backup
// file appears atomically, restore replaces the slave's rows, sets its
// position and removes its old spool and status file, and both print a
// one-line summary.
func TestBackupAndRestoreCommands(t *testing.T) {
	p := newBackupPair(t)
	file := filepath.Join(t.TempDir(), "master.ssbak")
	code, out, errOut := cli(t, "--config", p.masterConf, "backup", "--out", file)
	want := "the master service is not running: start it first (schedsync start)"
	if code != exitFailure || !strings.Contains(errOut, want) {
		t.Fatalf("backup without the master service: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	startMaster(t, p.masterConf)
	code, out, errOut = cli(t, "--config", p.masterConf, "backup", "--out", file)
	t.Logf("backup: %s%s", out, errOut)
	if code != exitOK || !strings.Contains(out, "backup written to "+file+": 2 tables, 6,000 rows") || !strings.Contains(out, "of capture history ") {
		t.Fatalf("backup: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temporary file is still there: %v", err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, %v; want mode 0600", fi, err)
	}

	for _, name := range []string{"spool/00000001.seg", service.StatusFileName} {
		path := filepath.Join(p.slaveSpool, name)
		_ = os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut = cli(t, "--config", p.slaveConf, "restore", "--in", file)
	t.Logf("restore: %s%s", out, errOut)
	if code != exitOK || !strings.Contains(out, "restored "+file+": 2 tables, 6,000 rows") {
		t.Fatalf("restore: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "verify: done") || !strings.Contains(errOut, "load: done") {
		t.Errorf("restore printed no progress lines to stderr: %q", errOut)
	}
	if got, want := fingerprint(t, p.slaveConn), fingerprint(t, p.masterConn); got != want {
		t.Errorf("slave %s after restore, master %s", got, want)
	}
	// The slave takes the master's capture history and the backup's
	// position, which is the spool's at the snapshot.
	var masterEpoch, slaveEpoch, applied int64
	if err := p.masterConn.QueryRow(context.Background(), `SELECT epoch FROM schedsync.capture_state`).Scan(&masterEpoch); err != nil {
		t.Fatal(err)
	}
	if err := p.slaveConn.QueryRow(context.Background(), `SELECT capture_epoch, applied_position FROM schedsync.state`).Scan(&slaveEpoch, &applied); err != nil {
		t.Fatal(err)
	}
	if masterEpoch == 0 || slaveEpoch != masterEpoch || !strings.Contains(out, fmt.Sprintf("position %d", applied)) {
		t.Errorf("restored slave: capture_epoch %x, applied %d; master's epoch %x; restore said %q", slaveEpoch, applied, masterEpoch, out)
	}
	for _, name := range []string{"spool", service.StatusFileName, service.PidFileName} {
		if _, err := os.Stat(filepath.Join(p.slaveSpool, name)); !os.IsNotExist(err) {
			t.Errorf("%s is still in spool.dir after restore: %v", name, err)
		}
	}
}

func TestBackupToStdout(t *testing.T) {
	p := newBackupPair(t)
	startMaster(t, p.masterConf)
	var out, errb bytes.Buffer
	code := run([]string{"--config", p.masterConf, "backup", "--out", "-"}, &out, &errb)
	if code != exitOK || !strings.Contains(errb.String(), "backup written to -: 2 tables") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	m, err := backup.Verify(context.Background(), &out)
	if err != nil || m.Rows != 6000 {
		t.Errorf("the backup on stdout: %v, %+v", err, m)
	}
}

// TestBackupRestoreWrongRole: backup is for a master, restore for a slave.
func TestBackupRestoreWrongRole(t *testing.T) {
	cleanEnv(t)
	slave := writeFile(t, "slave.properties", slaveProps(t))
	master := writeFile(t, "master.properties", masterProps(t))
	code, _, errOut := cli(t, "--config", slave, "backup", "--out", filepath.Join(t.TempDir(), "x"))
	if code != exitUsage || !strings.Contains(errOut, "backup runs on the master (node.role = master)") {
		t.Errorf("backup on a slave: exit %d, %q", code, errOut)
	}
	code, _, errOut = cli(t, "--config", master, "restore", "--in", "/nonexistent")
	if code != exitUsage || !strings.Contains(errOut, "restore runs on a slave (node.role = slave)") {
		t.Errorf("restore on a master: exit %d, %q", code, errOut)
	}
}

// TestRestoreRefusedWhileServiceRuns: with the slave service running (its
// pid lock held), restore refuses and changes nothing.
func TestRestoreRefusedWhileServiceRuns(t *testing.T) {
	p := newBackupPair(t)
	startMaster(t, p.masterConf)
	file := filepath.Join(t.TempDir(), "master.ssbak")
	if code, _, errOut := cli(t, "--config", p.masterConf, "backup", "--out", file); code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, errOut)
	}
	lock, err := service.AcquirePidFile(p.slaveSpool)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	before := fingerprint(t, p.slaveConn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, _, errOut := cli(t, "--config", p.slaveConf, "restore", "--in", file)
	want := "stop the slave service first (schedsync stop); resync does this for you"
	if code != exitFailure || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if after := fingerprint(t, p.slaveConn); after != before {
		t.Errorf("the slave changed: %s, then %s", before, after)
	}
	var marked bool
	if err := p.slaveConn.QueryRow(ctx, `SELECT needs_resync FROM schedsync.state`).Scan(&marked); err != nil || marked {
		t.Errorf("needs_resync %v (%v); want false", marked, err)
	}
}
