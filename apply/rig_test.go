package apply

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/pgtest"
	"github.com/schedsync/schedsync/spool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// rig is the pipeline without the network: trigger capture on a master
// database into a spool, and an applier from that spool into a slave
// database with the same schema.
type rig struct {
	t                   testing.TB
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

func newRig(t testing.TB, schema string, allowNoPK bool) *rig {
	t.Helper()
	r := &rig{t: t, masterURL: pgtest.NewDB(t), slaveURL: pgtest.NewDB(t)}
	r.exec(r.masterURL, schema)
	r.exec(r.slaveURL, schema)
	for url, role := range map[string]string{r.masterURL: "master", r.slaveURL: "slave"} {
		c := r.conn(url)
		if _, err := capture.Install(context.Background(), c, capture.InstallOptions{Schemas: []string{"public"}, Role: role, AllowNoPK: allowNoPK}); err != nil {
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

func (r *rig) applier(onApplied func(uint64, time.Time)) *Applier {
	cfg, _ := pgx.ParseConfig(r.slaveURL)
	return New(Options{ConnConfig: cfg, OnApplied: onApplied}, SpoolLog(r.sp))
}

// applyAll runs an applier until it has applied everything in the spool.
func (r *rig) applyAll() {
	r.t.Helper()
	a := r.applier(nil)
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

// runUntilError runs an applier that must fail, and returns its error.
func (r *rig) runUntilError() error {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.applier(nil).Run(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		r.t.Fatalf("apply did not fail: %v", err)
	}
	return err
}

// contents fingerprints every public table and sequence of a database.
func (r *rig) contents(url string) (map[string]string, map[string]int64) {
	r.t.Helper()
	c := r.conn(url)
	ctx := context.Background()
	if _, err := c.Exec(ctx, `SET extra_float_digits = 3; SET bytea_output = 'hex'; SET DateStyle = 'ISO'; SET TimeZone = 'UTC'`); err != nil {
		r.t.Fatal(err)
	}
	rows, err := c.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1`)
	if err != nil {
		r.t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.t.Fatal(err)
	}
	tables := map[string]string{}
	for _, n := range names {
		var fp string
		q := `SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM public.` + change.QuoteIdent(n) + ` t`
		if err := c.QueryRow(ctx, q).Scan(&fp); err != nil {
			r.t.Fatal(err)
		}
		tables[n] = fp
	}
	seqs := map[string]int64{}
	rows, err = c.Query(ctx, `SELECT sequencename, coalesce(last_value, 0) FROM pg_sequences WHERE schemaname = 'public'`)
	if err != nil {
		r.t.Fatal(err)
	}
	for rows.Next() {
		var n string
		var v int64
		rows.Scan(&n, &v)
		seqs[n] = v
	}
	return tables, seqs
}

// requireEqual checks the slave holds exactly the master's rows and that
// no slave sequence is behind the master's.
func (r *rig) requireEqual() {
	r.t.Helper()
	mt, ms := r.contents(r.masterURL)
	st, ss := r.contents(r.slaveURL)
	for name, fp := range mt {
		if st[name] != fp {
			r.t.Errorf("table %s differs: master %s, slave %s", name, fp, st[name])
		}
	}
	for name, v := range ms {
		if ss[name] < v {
			r.t.Errorf("sequence %s: slave %d behind master %d", name, ss[name], v)
		}
	}
}
