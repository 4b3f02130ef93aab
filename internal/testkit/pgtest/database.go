package pgtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CreateDB creates database name and returns its URL.
func (c *Cluster) CreateDB(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", errors.New("create database: empty name")
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.URL(name), nil
}

// DropDB drops database name if it exists, even while clients are connected
// to it and replication slots use it.
func (c *Cluster) DropDB(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	// DROP DATABASE refuses while a logical replication slot belongs to
	// the database, and WITH (FORCE) does not drop slots.
	if err := dropSlots(ctx, conn, name); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// dropSlots drops the replication slots of database db, ending the
// walsenders that use them first.
func dropSlots(ctx context.Context, conn *pgx.Conn, db string) error {
	const (
		terminate = `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`
		drop      = `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`
		remaining = `SELECT count(*) FROM pg_replication_slots WHERE database = $1`
	)
	// A terminated walsender releases its slot a moment later, so this is
	// retried until every slot is gone.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := conn.Exec(ctx, terminate, db); err != nil {
			return fmt.Errorf("end walsenders: %w", err)
		}
		if _, err := conn.Exec(ctx, drop, db); err != nil && !isObjectInUse(err) {
			return fmt.Errorf("drop replication slots: %w", err)
		}
		var n int64
		if err := conn.QueryRow(ctx, remaining, db).Scan(&n); err != nil {
			return fmt.Errorf("count replication slots: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop replication slots: %d still in use", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// isObjectInUse reports "replication slot ... is active for PID ...", which
// a slot whose walsender is still exiting gives.
func isObjectInUse(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55006"
}

// Row is one row of a query run by QueryRow.
type Row struct {
	t    testing.TB
	conn *pgx.Conn
	row  pgx.Row
	sql  string
}

// QueryRow runs sql on a connection of its own to url; Scan reads its one
// row and closes the connection. Any error fails the test.
func QueryRow(t testing.TB, url, sql string, args ...any) Row {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	return Row{t: t, conn: conn, row: conn.QueryRow(context.Background(), sql, args...), sql: sql}
}

// Scan reads the row into dest.
func (r Row) Scan(dest ...any) {
	r.t.Helper()
	defer r.conn.Close(context.Background())
	if err := r.row.Scan(dest...); err != nil {
		r.t.Fatalf("%.200s: %v", r.sql, err)
	}
}

// Exec runs sql on a connection of its own to url; any error fails the
// test.
func Exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%.200s: %v", sql, err)
	}
}
