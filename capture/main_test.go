package capture

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testDB is a fresh database in the package's shared cluster.
type testDB struct {
	t   *testing.T
	url string
}

func newTestDB(t *testing.T) *testDB {
	t.Helper()
	return &testDB{t: t, url: pgtest.NewDB(t)}
}

func (d *testDB) conn() *pgx.Conn {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, d.url)
	if err != nil {
		d.t.Fatalf("connect: %v", err)
	}
	d.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (d *testDB) exec(sql string, args ...any) {
	d.t.Helper()
	c := d.conn()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		d.t.Fatalf("exec %q: %v", sql, err)
	}
	c.Close(context.Background())
}

func (d *testDB) install(opts InstallOptions) InstallReport {
	d.t.Helper()
	if opts.Role == "" {
		opts.Role = config.RoleMaster
	}
	if opts.Schemas == nil {
		opts.Schemas = []string{"public"}
	}
	rep, err := Install(context.Background(), d.conn(), opts)
	if err != nil {
		d.t.Fatalf("install: %v", err)
	}
	return rep
}

// reader returns a connected reader feeding sink; PollInterval is an hour so
// that only a notification can wake Run.
func (d *testDB) reader(sink Sink, batch int) *TriggerReader {
	d.t.Helper()
	cfg, err := pgx.ParseConfig(d.url)
	if err != nil {
		d.t.Fatal(err)
	}
	r := NewTriggerReader(TriggerOptions{ConnConfig: cfg, BatchChanges: batch, PollInterval: time.Hour}, sink)
	if err := r.Connect(context.Background()); err != nil {
		d.t.Fatalf("connect reader: %v", err)
	}
	d.t.Cleanup(r.Close)
	return r
}

// drain polls until the audit table has nothing committed left.
func drain(t *testing.T, r *TriggerReader) int {
	t.Helper()
	total := 0
	for {
		n, err := r.Poll(context.Background())
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if n == 0 {
			return total
		}
		total += n
	}
}
