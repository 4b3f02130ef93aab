package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
)

// A role with only the master's grants installs trigger capture on tables
// it does not own (no TRUNCATE, UPDATE or DELETE to lock them with), and
// the scheduler's writes are captured; uninstall, which only the tables'
// owner may run, is refused up front with the GRANT, then works with it.
func TestInstallAndUninstallWithLeastPrivilege(t *testing.T) {
	d := newTestDB(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	owner, role := "own_"+hex.EncodeToString(b), "sync_"+hex.EncodeToString(b)
	d.exec(`CREATE ROLE ` + owner + ` LOGIN; CREATE ROLE ` + role + ` LOGIN`)
	t.Cleanup(func() {
		d.exec(`DROP OWNED BY ` + role + `, ` + owner + `; DROP ROLE ` + role + `; DROP ROLE ` + owner)
	})
	d.exec(`GRANT CREATE ON SCHEMA public TO ` + owner + `; SET ROLE ` + owner + `; CREATE TABLE app_jobs (id int PRIMARY KEY, name text); RESET ROLE`)
	ctx := context.Background()
	as := func(r string) *pgx.Conn {
		c, err := pgx.Connect(ctx, strings.Replace(d.url, "postgres@", r+"@", 1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	conn := as(role)
	opts := InstallOptions{Role: config.RoleMaster, Mode: config.CaptureTrigger, Schemas: []string{"public"}, DDL: true}
	req := grants.Request{Master: true, Install: true, Mode: config.CaptureTrigger, Schemas: []string{"public"}}
	plan, err := grants.Work(ctx, conn, req)
	if err != nil {
		t.Fatal(err)
	}
	d.exec(plan.Script(true))

	rep, err := Install(ctx, conn, opts)
	if err != nil {
		t.Fatalf("install with the master's grants: %v", err)
	}
	if len(rep.Added) != 1 || !strings.HasPrefix(rep.DDL, "off") {
		t.Errorf("install report: added %v, DDL %q; want app_jobs added and schema changes off", rep.Added, rep.DDL)
	}
	if _, err := as(owner).Exec(ctx, `INSERT INTO app_jobs VALUES (1, 'a')`); err != nil {
		t.Fatalf("the owner's write: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM schedsync.audit`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("audit rows after the owner's insert: %d, %v; want 1", n, err)
	}

	err = Uninstall(ctx, conn)
	var missing *grants.MissingError
	if !errors.As(err, &missing) || !strings.Contains(err.Error(), "GRANT "+owner+" TO "+role+";") {
		t.Fatalf("uninstall by a role that does not own the tables: %v, want a MissingError naming GRANT %s TO %s", err, owner, role)
	}
	var triggers int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app_jobs'::regclass AND NOT tgisinternal`).Scan(&triggers); err != nil || triggers != 2 {
		t.Fatalf("capture triggers after the refused uninstall: %d, %v; want both still there", triggers, err)
	}
	d.exec(`GRANT ` + owner + ` TO ` + role)
	if err := Uninstall(ctx, conn); err != nil {
		t.Fatalf("uninstall with the owner's role: %v", err)
	}
}
