package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pipetest"
)

// childEnv makes the test binary a restore process (see TestMain) that
// loads the file in childEnv_FILE into the database at the URL in
// childEnv, and stops for good in the middle of it, so that the parent can
// kill it there.
const (
	childEnv     = "SCHEDSYNC_BACKUP_TEST_CHILD"
	childAppName = "schedsync-test-restore-child"
)

func childRestore() int {
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(os.Getenv(childEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.RuntimeParams["application_name"] = childAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := Restore(ctx, conn, openFile(os.Getenv(childEnv+"_FILE")), RestoreOptions{Progress: &stallLoad{}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// stallRows is where the load stalls: more rows than all the tables but
// big hold together (41,050), fewer than big's 200,000, so the load is
// inside big's COPY whatever order the tables come in.
const stallRows = 100_000

// stallLoad stops the load for good once stallRows rows have been read,
// with big's COPY under way: the parent kills it there, however long it
// takes to see it. (The stall is bounded only so that a restore whose
// parent died does not linger.)
type stallLoad struct {
	phase string
	rows  int64
}

func (s *stallLoad) Begin(phase string, _ Totals) { s.phase = phase }
func (s *stallLoad) End()                         {}
func (s *stallLoad) Add(rows, _ int64) {
	if s.phase != "load" {
		return
	}
	if s.rows += rows; s.rows >= stallRows {
		time.Sleep(10 * time.Minute)
	}
}

// TestRestoreKilledMidCopy kills a restore (kill -9) while it copies a
// big table: the load rolls back, needs_resync stays set so apply refuses
// to run, the data is what it was, and a second restore completes.
func TestRestoreKilledMidCopy(t *testing.T) {
	big := `CREATE TABLE big (id int PRIMARY KEY, pad text);`
	r := newRig(t, schedDDL+big+schedData+`INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 200000) g`,
		schedDDL+big+`INSERT INTO counters VALUES ('junk', 1); INSERT INTO big VALUES (-1, 'old')`)
	r.Exec(r.MasterURL, `UPDATE counters SET v = 1`)
	r.Capture()
	path, m := backupFile(r, Options{})
	if m.Position == 0 {
		t.Fatal("the backup is at position 0; want a captured change before it")
	}
	before, beforeSeqs := pipetest.Contents(t, r.SlaveURL)

	var stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+r.SlaveURL, childEnv+"_FILE="+path)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() }) // it stalls until killed
	watch := r.Conn(r.SlaveURL)
	ctx := context.Background()
	var copied int64
	eventually.True(t, "the restore to copy rows of big", time.Minute, func() (bool, string) {
		err := watch.QueryRow(ctx, `SELECT coalesce(max(p.tuples_processed), 0) FROM pg_stat_progress_copy p
			JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1 AND p.relid = 'public.big'::regclass`, childAppName).Scan(&copied)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			t.Fatalf("the restore ended before it could be killed: %v\n%s", err, stderr.String())
		default:
		}
		return copied > 0, "nothing copied"
	})
	t.Logf("killing the restore after %d rows of big", copied)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	eventually.True(t, "the killed restore's session to go", time.Minute, func() (bool, string) {
		var n int
		if err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, childAppName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0, fmt.Sprintf("%d session(s)", n)
	})

	requireState(t, r.SlaveURL, 0, true)
	delete(before, "schedsync.state")
	after, afterSeqs := pipetest.Contents(t, r.SlaveURL)
	delete(after, "schedsync.state")
	if fmt.Sprint(after) != fmt.Sprint(before) || fmt.Sprint(afterSeqs) != fmt.Sprint(beforeSeqs) {
		t.Errorf("the killed restore changed the slave:\nbefore %v %v\nafter  %v %v", before, beforeSeqs, after, afterSeqs)
	}

	if _, err := Restore(ctx, r.Conn(r.SlaveURL), openFile(path), RestoreOptions{}); err != nil {
		t.Fatalf("second restore: %v", err)
	}
	requireState(t, r.SlaveURL, m.Position, false)
	r.RequireEqual() // nothing changed on the master since the backup
}
