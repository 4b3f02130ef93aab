package service

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/ship"
)

// repositoryIdentity identifies the database conn is connected to, so that a
// master can refuse a slave pointed at the master's own repository.
func repositoryIdentity(ctx context.Context, conn *pgx.Conn) (ship.Identity, error) {
	var id ship.Identity
	var sysid string
	var start time.Time
	err := conn.QueryRow(ctx, `SELECT (SELECT system_identifier::text FROM pg_control_system()),
		d.oid, d.datname, pg_postmaster_start_time()
		FROM pg_database d WHERE d.datname = current_database()`).Scan(&sysid, &id.DatabaseOID, &id.Database, &start)
	if err != nil {
		return id, fmt.Errorf("read repository identity: %w", err)
	}
	if id.SystemID, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return id, fmt.Errorf("parse system identifier %q: %w", sysid, err)
	}
	id.ServerStart = start
	return id, nil
}
