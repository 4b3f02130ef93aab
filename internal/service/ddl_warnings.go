package service

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ddlWarningsEvery is how often the master looks for tables that a
// schema change created and capture could not take (no primary key,
// unlogged), which the event trigger records in schedsync.ddl_warnings.
const ddlWarningsEvery = 5 * time.Second

// ddlWarningsKept bounds the warnings status shows.
const ddlWarningsKept = 10

// ddlWarningsLoop logs each new warning once and keeps the last ones for
// status, so that a table left out of replication is never silent. A
// repository without the table (schema changes not installed) or one that
// is down is no error here: capture reports those.
func (m *Master) ddlWarningsLoop(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	since := time.Now().Add(-24 * time.Hour)
	every(ctx, ddlWarningsEvery, func() {
		if conn == nil || conn.IsClosed() {
			c, err := pgx.ConnectConfig(ctx, m.connCfg)
			if err != nil {
				return
			}
			conn = c
		}
		rows, err := conn.Query(ctx, `SELECT at, message FROM schedsync.ddl_warnings WHERE at > $1 ORDER BY at`, since)
		if err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
				conn.Close(context.Background())
				conn = nil
			}
			return
		}
		type warning struct {
			at  time.Time
			msg string
		}
		ws, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (warning, error) {
			var w warning
			return w, r.Scan(&w.at, &w.msg)
		})
		if err != nil {
			return
		}
		for _, w := range ws {
			since = w.at
			m.log.Warn("a schema change made a table that is not replicated", "warning", w.msg, "at", w.at)
			m.mu.Lock()
			m.ddlWarnings = append(m.ddlWarnings, w.msg)
			if n := len(m.ddlWarnings); n > ddlWarningsKept {
				m.ddlWarnings = m.ddlWarnings[n-ddlWarningsKept:]
			}
			m.mu.Unlock()
		}
	})
	return nil
}
