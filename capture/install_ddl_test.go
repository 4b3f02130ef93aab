package capture

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
)

func (d *testDB) eventTriggers() string {
	d.t.Helper()
	c := d.conn()
	defer c.Close(context.Background())
	var s string
	if err := c.QueryRow(context.Background(), `SELECT coalesce(string_agg(evtname || ':' || evtevent, ',' ORDER BY evtname), '')
		FROM pg_event_trigger WHERE evtname LIKE 'schedsync%'`).Scan(&s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

const bothEventTriggers = "schedsync_ddl_end:ddl_command_end,schedsync_sql_drop:sql_drop"

// TestEventTriggersFollowDDLReplicate: install creates the event triggers
// with ddl.replicate, drops them without it, and uninstall leaves none.
func TestEventTriggersFollowDDLReplicate(t *testing.T) {
	for _, mode := range []config.CaptureMode{config.CaptureTrigger, config.CaptureLogical} {
		t.Run(string(mode), func(t *testing.T) {
			d := newTestDB(t)
			d.exec(`CREATE TABLE a (id int PRIMARY KEY)`)
			opts := InstallOptions{DDL: true, Mode: mode}
			rep := d.install(opts)
			if got := d.eventTriggers(); got != bothEventTriggers || !strings.HasPrefix(rep.DDL, "on") {
				t.Fatalf("install with ddl.replicate: event triggers %q, report %q", got, rep.DDL)
			}
			opts.DDL = false
			rep = d.install(opts)
			if got := d.eventTriggers(); got != "" || !strings.Contains(rep.DDL, "ddl.replicate = false") {
				t.Fatalf("install without ddl.replicate: event triggers %q, report %q", got, rep.DDL)
			}
			opts.DDL = true
			d.install(opts)
			c := d.conn()
			defer c.Close(context.Background())
			if err := Uninstall(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			if got := d.eventTriggers(); got != "" {
				t.Fatalf("uninstall left event triggers %q", got)
			}
		})
	}
}

// TestInstallWithoutSuperuserLeavesDDLOff: a role that may not create
// event triggers still installs capture, and the report says that schema
// changes are not replicated and why.
func TestInstallWithoutSuperuserLeavesDDLOff(t *testing.T) {
	d := newTestDB(t)
	d.exec(`CREATE ROLE sched_owner LOGIN; CREATE TABLE a (id int PRIMARY KEY); ALTER TABLE a OWNER TO sched_owner`)
	c := d.conn()
	var db string
	if err := c.QueryRow(context.Background(), `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	d.exec(fmt.Sprintf(`ALTER DATABASE %s OWNER TO sched_owner; GRANT CREATE ON SCHEMA public TO sched_owner`, pgx.Identifier{db}.Sanitize()))
	cfg, err := pgx.ParseConfig(d.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = "sched_owner"
	owner, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.Background())
	rep, err := Install(context.Background(), owner, InstallOptions{Schemas: []string{"public"}, Role: "master", DDL: true})
	if err != nil {
		t.Fatalf("install as the repository's owner: %v", err)
	}
	if !strings.Contains(rep.DDL, "superuser") || d.eventTriggers() != "" || len(rep.Tables) != 1 {
		t.Fatalf("install without a superuser: report %+v, event triggers %q", rep, d.eventTriggers())
	}
}
