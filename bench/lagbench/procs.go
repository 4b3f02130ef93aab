package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// proc is a process whose CPU time is counted, under a label shared by
// the processes doing the same work.
type proc struct {
	Label    string
	PID      int
	Repl     bool // does replication work
	Observer bool // lagbench's own probing
}

// clusterProcs lists a cluster's server processes, labelled by what they
// do: the postmaster and every process pg_stat_activity shows. Processes
// that come and go (autovacuum workers, connections opened for a moment)
// are missed; the report shows them within "unaccounted".
func clusterProcs(ctx context.Context, c *pgtest.Cluster, side string) ([]proc, error) {
	out := []proc{}
	if pid, err := postmasterPID(c.DataDir); err == nil {
		out = append(out, proc{Label: side + " postgres background", PID: pid})
	}
	conn, err := connect(ctx, c.URL(dbName))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '')
		FROM pg_stat_activity WHERE pid <> pg_backend_pid()`)
	if err != nil {
		return nil, fmt.Errorf("list %s server processes: %w", side, err)
	}
	err = forEachRow(rows, func(pid int32, typ, app string) {
		p := serverProc(side, typ, app)
		p.PID = int(pid)
		out = append(out, p)
	})
	return out, err
}

func forEachRow(rows pgx.Rows, f func(pid int32, typ, app string)) error {
	defer rows.Close()
	for rows.Next() {
		var pid int32
		var typ, app string
		if err := rows.Scan(&pid, &typ, &app); err != nil {
			return err
		}
		f(pid, typ, app)
	}
	return rows.Err()
}

// serverProc labels one server process from pg_stat_activity.
func serverProc(side, typ, app string) proc {
	switch {
	case typ == "client backend" && app == "pgbench":
		return proc{Label: side + " pgbench backends"}
	case typ == "client backend" && app == appName:
		return proc{Label: side + " lagbench probe backend", Observer: true}
	case typ == "client backend":
		return proc{Label: side + " schedsync backends", Repl: true}
	case typ == "walsender":
		return proc{Label: side + " walsender", Repl: true}
	case typ == "logical replication worker":
		return proc{Label: side + " apply worker", Repl: true}
	}
	return proc{Label: side + " postgres background"}
}

// postmasterPID reads the first line of postmaster.pid.
func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// allProcs is every process of the measurement: the system's own, both
// clusters', pgbench and lagbench itself.
func allProcs(ctx context.Context, w *world, sys system, benchPID int) ([]proc, error) {
	procs, err := sys.procs(ctx)
	if err != nil {
		return nil, err
	}
	for _, side := range []struct {
		c    *pgtest.Cluster
		name string
	}{{w.master, "master"}, {w.slave, "slave"}} {
		ps, err := clusterProcs(ctx, side.c, side.name)
		if err != nil {
			return nil, err
		}
		procs = append(procs, ps...)
	}
	if benchPID > 0 {
		procs = append(procs, proc{Label: "pgbench client", PID: benchPID})
	}
	return append(procs, proc{Label: "lagbench (probe client)", PID: os.Getpid(), Observer: true}), nil
}
