package quartz

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Schema is the DDL of the Quartz 2.x JDBC job store for PostgreSQL.
//
//go:embed testdata/tables_postgres.sql
var Schema string

// tables are the qrtz_* tables in a fixed (alphabetical) order, so that
// reports and comparisons built from them are stable.
var tables = []string{
	"qrtz_blob_triggers",
	"qrtz_calendars",
	"qrtz_cron_triggers",
	"qrtz_fired_triggers",
	"qrtz_job_details",
	"qrtz_locks",
	"qrtz_paused_trigger_grps",
	"qrtz_scheduler_state",
	"qrtz_simple_triggers",
	"qrtz_simprop_triggers",
	"qrtz_triggers",
}

// Tables returns the names of the Quartz tables, sorted.
func Tables() []string { return append([]string(nil), tables...) }

// CreateSchema creates the Quartz tables and indexes in conn's database.
func CreateSchema(ctx context.Context, conn *pgx.Conn) error {
	// Without arguments Exec uses the simple protocol, which accepts the
	// whole multi-statement script and runs it as one implicit transaction.
	if _, err := conn.Exec(ctx, Schema); err != nil {
		return fmt.Errorf("create quartz schema: %w", err)
	}
	return nil
}
