package quartz

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// testPool is a minimal DB for the tests: a fixed number of connections,
// reopened when the server closed them. The tests cannot use pgxpool until
// go.sum holds github.com/jackc/puddle/v2, which pgxpool imports.
type testPool struct {
	url   string
	conns chan *pgx.Conn // nil entries: not connected yet, or closed
}

func newTestPool(t *testing.T, url string, size int) *testPool {
	p := &testPool{url: url, conns: make(chan *pgx.Conn, size)}
	for range size {
		p.conns <- nil
	}
	t.Cleanup(func() {
		for range size {
			if c := <-p.conns; c != nil {
				_ = c.Close(context.Background())
			}
		}
	})
	return p
}

func (p *testPool) Begin(ctx context.Context) (pgx.Tx, error) {
	var c *pgx.Conn
	select {
	case c = <-p.conns:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c == nil || c.IsClosed() {
		var err error
		if c, err = pgx.Connect(ctx, p.url); err != nil {
			p.conns <- nil
			return nil, err
		}
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		p.conns <- c
		return nil, err
	}
	return &pooledTx{Tx: tx, release: func() { p.conns <- c }}, nil
}

// pooledTx gives its connection back when the transaction ends.
type pooledTx struct {
	pgx.Tx
	once    sync.Once
	release func()
}

func (t *pooledTx) Commit(ctx context.Context) error {
	defer t.once.Do(t.release)
	return t.Tx.Commit(ctx)
}

func (t *pooledTx) Rollback(ctx context.Context) error {
	defer t.once.Do(t.release)
	return t.Tx.Rollback(ctx)
}

// testLogger sends the workload's log to the test's, shown on failure or
// with -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
