// Package pipetest is the replication pipeline without the network, for
// tests: trigger capture on a master database into a spool, and an applier
// from that spool into a slave database, both in the package's shared
// throwaway cluster (internal/testkit/pgtest). The tests of apply and backup use
// it; it must never be imported by non-test code.
package pipetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/spool"
)

// Pipeline is a master and a slave database joined by a spool.
type Pipeline struct {
	T                   testing.TB
	MasterURL, SlaveURL string
	Spool               *spool.Spool
	Reader              *capture.TriggerReader
	// pollMu serialises Poll: the reader is run from one goroutine at a time.
	pollMu sync.Mutex
}

// New creates both databases with their schemas, installs schedsync on
// them and connects capture.
func New(t testing.TB, masterSchema, slaveSchema string, allowNoPK bool) *Pipeline {
	t.Helper()
	p := &Pipeline{T: t, MasterURL: pgtest.NewDB(t), SlaveURL: pgtest.NewDB(t)}
	p.Exec(p.MasterURL, masterSchema)
	p.Exec(p.SlaveURL, slaveSchema)
	for url, role := range map[string]config.Role{p.MasterURL: config.RoleMaster, p.SlaveURL: config.RoleSlave} {
		opts := capture.InstallOptions{Schemas: []string{"public"}, Role: role, AllowNoPK: allowNoPK}
		if _, err := capture.Install(context.Background(), p.Conn(url), opts); err != nil {
			t.Fatalf("install %s: %v", role, err)
		}
	}
	var err error
	if p.Spool, err = spool.Open(spool.Options{Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Spool.Close() })
	cfg, _ := pgx.ParseConfig(p.MasterURL)
	p.Reader = capture.NewTriggerReader(capture.TriggerOptions{ConnConfig: cfg, PollInterval: time.Hour, SequenceSchemas: []string{"public"}}, sink{p.Spool})
	if err := p.Reader.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Reader.Close)
	return p
}

// sink is the spool as capture sees it; there is no crash recovery to do.
type sink struct{ sp *spool.Spool }

func (s sink) Append(ctx context.Context, src change.TxnSource) (uint64, error) {
	return s.sp.Append(ctx, src)
}
func (s sink) Sync(ctx context.Context) error { return s.sp.Sync(ctx) }
func (s sink) LastPosition() uint64           { return s.sp.LastPosition() }
func (s sink) HeadersAfter(context.Context, uint64, func(uint64, change.TxnHeader)) (uint64, error) {
	return s.sp.DurablePosition(), nil
}

// Conn connects to url for the rest of the test.
func (p *Pipeline) Conn(url string) *pgx.Conn {
	p.T.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		p.T.Fatal(err)
	}
	p.T.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs sql on url in a connection of its own.
func (p *Pipeline) Exec(url, sql string, args ...any) {
	p.T.Helper()
	pgtest.Exec(p.T, url, sql, args...)
}

// Poll runs one capture poll; concurrent calls take turns.
func (p *Pipeline) Poll(ctx context.Context) (int, error) {
	p.pollMu.Lock()
	defer p.pollMu.Unlock()
	return p.Reader.Poll(ctx)
}

// Snapshot begins a transaction on conn in an exact capture snapshot, as
// the master service gives backups, and says where it stands. It polls
// capture until the snapshot is taken (alongside any other poller).
func (p *Pipeline) Snapshot(conn *pgx.Conn) (pgx.Tx, capture.SnapshotResult) {
	p.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan struct{})
	polled := make(chan error, 1)
	go func() {
		for {
			select {
			case <-done:
				polled <- nil
				return
			default:
			}
			if _, err := p.Poll(ctx); err != nil {
				polled <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var tx pgx.Tx
	res, err := capture.ExportSnapshot(ctx, p.Reader, func(ctx context.Context, name string) (err error) {
		tx, err = capture.BeginInSnapshot(ctx, conn, name)
		return err
	})
	close(done)
	if perr := <-polled; perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		p.T.Fatalf("exact snapshot: %v", err)
	}
	return tx, res
}

// Capture moves every committed master change into the spool.
func (p *Pipeline) Capture() {
	p.T.Helper()
	for {
		n, err := p.Poll(context.Background())
		if err != nil {
			p.T.Fatalf("capture: %v", err)
		}
		if n == 0 {
			return
		}
	}
}

// Applier makes an applier from the spool into the slave.
func (p *Pipeline) Applier(onApplied func(uint64, time.Time)) *apply.Applier {
	cfg, _ := pgx.ParseConfig(p.SlaveURL)
	return apply.New(apply.Options{ConnConfig: cfg, OnApplied: onApplied}, apply.SpoolLog(p.Spool))
}

// ApplyAll runs an applier until it has applied everything in the spool.
func (p *Pipeline) ApplyAll() {
	p.T.Helper()
	p.ApplyWith(p.Applier(nil))
}

// ApplyWith runs a until it has applied everything in the spool.
func (p *Pipeline) ApplyWith(a *apply.Applier) {
	p.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually.True(p.T, "apply to reach the end of the spool", time.Minute, func() (bool, string) {
		select {
		case err := <-done:
			p.T.Fatalf("apply stopped at %d of %d: %v", a.Applied(), p.Spool.DurablePosition(), err)
		default:
		}
		return a.Applied() >= p.Spool.DurablePosition(), fmt.Sprintf("applied %d of %d", a.Applied(), p.Spool.DurablePosition())
	})
	cancel()
	if err := <-done; err != nil {
		p.T.Fatalf("apply: %v", err)
	}
}

// RequireEqual checks the slave holds exactly the master's rows and that
// no slave sequence is behind the master's.
func (p *Pipeline) RequireEqual() {
	p.T.Helper()
	mt, ms := Contents(p.T, p.MasterURL)
	st, ss := Contents(p.T, p.SlaveURL)
	delete(mt, StateTable)
	for name, fp := range mt {
		if st[name] != fp {
			p.T.Errorf("table %s differs: master %.60s, slave %.60s", name, fp, st[name])
		}
	}
	for name, v := range ms {
		if ss[name] < v {
			p.T.Errorf("sequence %s: slave %d behind master %d", name, ss[name], v)
		}
	}
}

// StateTable is the key of schedsync.state (applied position and
// needs_resync) in Contents.
const StateTable = "schedsync.state"

// Contents fingerprints every public table, schedsync.state, and the last
// value of every public sequence of a database.
func Contents(t testing.TB, url string) (tables map[string]string, seqs map[string]int64) {
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
	tables = map[string]string{}
	for _, n := range append(names, StateTable) {
		q := "public." + change.QuoteIdent(n)
		if n == StateTable {
			q = `(SELECT applied_position, needs_resync FROM schedsync.state)`
		}
		var fp string
		err := c.QueryRow(ctx, `SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM `+q+` t`).Scan(&fp)
		if err != nil {
			t.Fatal(err)
		}
		tables[n] = fp
	}
	rows, err = c.Query(ctx, `SELECT sequencename, coalesce(last_value, 0) FROM pg_sequences WHERE schemaname = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err = collectSeqs(rows)
	if err != nil {
		t.Fatal(err)
	}
	return tables, seqs
}

func collectSeqs(rows pgx.Rows) (map[string]int64, error) {
	seqs := map[string]int64{}
	defer rows.Close()
	for rows.Next() {
		var n string
		var v int64
		if err := rows.Scan(&n, &v); err != nil {
			return nil, err
		}
		seqs[n] = v
	}
	return seqs, rows.Err()
}
