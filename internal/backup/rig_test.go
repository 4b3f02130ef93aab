package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/pgtest"
	"github.com/schedsync/schedsync/spool"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childRestore())
	}
	pgtest.Main(m)
}

// rig is the pipeline without the network, as in apply's tests: trigger
// capture on a master database into a spool, and an applier from that
// spool into a slave database with the same schema.
type rig struct {
	t                   *testing.T
	masterURL, slaveURL string
	sp                  *spool.Spool
	reader              *capture.TriggerReader
}

type spoolSink struct{ sp *spool.Spool }

func (s spoolSink) Append(ctx context.Context, src change.TxnSource) (uint64, error) {
	return s.sp.Append(ctx, src)
}
func (s spoolSink) Sync(ctx context.Context) error { return s.sp.Sync(ctx) }
func (s spoolSink) LastPosition() uint64           { return s.sp.LastPosition() }
func (s spoolSink) XIDsAfter(context.Context, uint64, func(uint64) bool) ([]uint64, uint64, error) {
	return nil, s.sp.DurablePosition(), nil
}

func newRig(t *testing.T, masterSchema, slaveSchema string) *rig {
	t.Helper()
	r := &rig{t: t, masterURL: pgtest.NewDB(t), slaveURL: pgtest.NewDB(t)}
	r.exec(r.masterURL, masterSchema)
	r.exec(r.slaveURL, slaveSchema)
	for url, role := range map[string]string{r.masterURL: "master", r.slaveURL: "slave"} {
		c := r.conn(url)
		if _, err := capture.Install(context.Background(), c, capture.InstallOptions{Schemas: []string{"public"}, Role: role}); err != nil {
			t.Fatalf("install %s: %v", role, err)
		}
	}
	var err error
	if r.sp, err = spool.Open(spool.Options{Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.sp.Close() })
	cfg, _ := pgx.ParseConfig(r.masterURL)
	r.reader = capture.NewTriggerReader(capture.TriggerOptions{ConnConfig: cfg, PollInterval: time.Hour, SequenceSchemas: []string{"public"}}, spoolSink{r.sp})
	if err := r.reader.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.reader.Close)
	return r
}

func (r *rig) conn(url string) *pgx.Conn {
	r.t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (r *rig) exec(url, sql string, args ...any) {
	r.t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		r.t.Fatalf("%.200s: %v", sql, err)
	}
}

// capture moves every committed master change into the spool.
func (r *rig) capture() {
	r.t.Helper()
	for {
		n, err := r.reader.Poll(context.Background())
		if err != nil {
			r.t.Fatalf("capture: %v", err)
		}
		if n == 0 {
			return
		}
	}
}

// applyAll runs an applier, which starts from the slave's applied
// position, until it has applied everything in the spool.
func (r *rig) applyAll() {
	r.t.Helper()
	cfg, _ := pgx.ParseConfig(r.slaveURL)
	a := apply.New(apply.Options{ConnConfig: cfg}, apply.SpoolLog(r.sp))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for a.Applied() < r.sp.DurablePosition() {
		select {
		case err := <-done:
			cancel()
			r.t.Fatalf("apply stopped at %d of %d: %v", a.Applied(), r.sp.DurablePosition(), err)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("apply stuck at %d of %d", a.Applied(), r.sp.DurablePosition())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		r.t.Fatalf("apply: %v", err)
	}
}

// contents fingerprints every public table and sequence of a database,
// and schedsync.state.
func contents(t *testing.T, url string) (tables map[string]string, seqs map[string]int64) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SET extra_float_digits = 3; SET bytea_output = 'hex'; SET DateStyle = 'ISO'; SET TimeZone = 'UTC'`); err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	names = append(names, "schedsync.state")
	tables = map[string]string{}
	for _, n := range names {
		q := "public." + change.QuoteIdent(n)
		if n == "schedsync.state" {
			q = `(SELECT applied_position, needs_resync FROM schedsync.state)`
		}
		var fp string
		err := c.QueryRow(ctx, `SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM `+q+` t`).Scan(&fp)
		if err != nil {
			t.Fatal(err)
		}
		tables[n] = fp
	}
	seqs = map[string]int64{}
	rows, err = c.Query(ctx, `SELECT sequencename, coalesce(last_value, 0) FROM pg_sequences WHERE schemaname = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		var v int64
		if err := rows.Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		seqs[n] = v
	}
	return tables, seqs
}

// requireConverged checks the slave holds exactly the master's rows and no
// slave sequence is behind the master's.
func (r *rig) requireConverged() {
	r.t.Helper()
	mt, ms := contents(r.t, r.masterURL)
	st, ss := contents(r.t, r.slaveURL)
	delete(mt, "schedsync.state")
	for name, fp := range mt {
		if st[name] != fp {
			r.t.Errorf("table %s differs: master %.60s, slave %.60s", name, fp, st[name])
		}
	}
	for name, v := range ms {
		if ss[name] < v {
			r.t.Errorf("sequence %s: slave %d behind master %d", name, ss[name], v)
		}
	}
}

// requireUnchanged compares a database with a snapshot of its contents.
func requireUnchanged(t *testing.T, url string, before map[string]string, beforeSeqs map[string]int64) {
	t.Helper()
	after, afterSeqs := contents(t, url)
	if fmt.Sprint(after) != fmt.Sprint(before) || fmt.Sprint(afterSeqs) != fmt.Sprint(beforeSeqs) {
		t.Errorf("the slave changed:\nbefore %v %v\nafter  %v %v", before, beforeSeqs, after, afterSeqs)
	}
}

// backupFile writes a backup of the master into a file and returns its path.
func (r *rig) backupFile(opts Options) (string, Manifest) {
	r.t.Helper()
	path := filepath.Join(r.t.TempDir(), "backup.ssbak")
	f, err := os.Create(path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	m, err := Write(context.Background(), r.conn(r.masterURL), f, opts)
	if err != nil {
		r.t.Fatalf("backup: %v", err)
	}
	return path, m
}

func openFile(path string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}
