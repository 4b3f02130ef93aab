package grants

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture is a fresh database whose tables belong to a new non-superuser
// owner role, and a new login role for schedsync with nothing granted.
type fixture struct {
	t            *testing.T
	ctx          context.Context
	admin        *pgx.Conn
	owner, role  string
	url, roleURL string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	suffix := hex.EncodeToString(b)
	f := &fixture{t: t, ctx: ctx, owner: "own_" + suffix, role: "sync_" + suffix, url: pgtest.NewDB(t)}
	var err error
	if f.admin, err = pgx.Connect(ctx, f.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.admin.Close(context.Background()) })
	f.exec(`CREATE ROLE ` + f.owner + ` LOGIN`)
	f.exec(`CREATE ROLE ` + f.role + ` LOGIN`)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, r := range []string{f.role, f.owner} {
			_, _ = f.admin.Exec(ctx, `DROP OWNED BY `+r)
		}
		for _, r := range []string{f.role, f.owner} {
			_, _ = f.admin.Exec(ctx, `DROP ROLE `+r)
		}
	})
	f.exec(`CREATE SCHEMA app AUTHORIZATION ` + f.owner)
	f.exec(`SET ROLE ` + f.owner + `;
		CREATE TABLE app.jobs (id int PRIMARY KEY, name text);
		CREATE TABLE app.runs (id bigserial PRIMARY KEY, job int);
		CREATE TABLE app.other (id int PRIMARY KEY);
		RESET ROLE`)
	f.roleURL = strings.Replace(f.url, "postgres@", f.role+"@", 1)
	if f.roleURL == f.url {
		t.Fatalf("cannot make a URL for role %s from %s", f.role, f.url)
	}
	return f
}

func (f *fixture) exec(sql string) {
	f.t.Helper()
	if _, err := f.admin.Exec(f.ctx, sql); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// asRole connects as the schedsync role.
func (f *fixture) asRole() *pgx.Conn {
	f.t.Helper()
	c, err := pgx.Connect(f.ctx, f.roleURL)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func missingStatements(p *Plan) string {
	var s []string
	for _, n := range p.Missing() {
		s = append(s, n.Statement)
	}
	return strings.Join(s, "\n")
}

func requireContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

// The statements that a role lacks, once run, leave nothing missing: for
// each side and mode, for a master's demotion and for fencing.
func TestGrantingWhatIsMissingLeavesNothingMissing(t *testing.T) {
	for _, c := range []struct {
		name string
		req  Request
		want []string
	}{
		{"trigger master", Request{Master: true, Install: true, Mode: config.CaptureTrigger},
			[]string{`GRANT CREATE ON DATABASE`, `GRANT USAGE ON SCHEMA "app"`, `GRANT SELECT, TRIGGER ON ALL TABLES IN SCHEMA "app"`, `GRANT SELECT ON ALL SEQUENCES IN SCHEMA "app"`}},
		{"logical master", Request{Master: true, Install: true, Mode: config.CaptureLogical},
			[]string{`REPLICATION;`, `GRANT CREATE ON DATABASE`, `GRANT "own_`}},
		{"slave", Request{Slave: true, Mode: config.CaptureTrigger},
			[]string{`GRANT SET ON PARAMETER session_replication_role`, `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "app"`, `GRANT SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "app"`}},
		{"demoted trigger master", Request{Demote: true, Mode: config.CaptureTrigger},
			[]string{`GRANT "own_`}},
		{"demoted logical master", Request{Demote: true, Mode: config.CaptureLogical},
			[]string{`REPLICATION;`, `GRANT "own_`}},
		{"fencing", Request{Fence: true},
			[]string{`GRANT pg_read_all_stats`, `GRANT pg_signal_backend`, `ALTER DATABASE`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.req.Schemas = []string{"app"}
			conn := f.asRole()
			err := Check(f.ctx, conn, c.req, "the work")
			var missing *MissingError
			if !errors.As(err, &missing) {
				t.Fatalf("Check of a role with nothing granted: %v, want a *MissingError", err)
			}
			requireContains(t, "the error", err.Error(), append([]string{"then try again"}, c.want...)...)
			// The database belongs to the superuser: fencing's ownership
			// cannot be granted by membership and says what to do.
			script := missing.Plan.Script(true)
			if c.req.Fence {
				f.exec(`ALTER DATABASE ` + pgx.Identifier{missing.Plan.Database}.Sanitize() + ` OWNER TO ` + f.owner)
				p, err := Work(f.ctx, conn, c.req)
				if err != nil {
					t.Fatal(err)
				}
				requireContains(t, "fencing once the owner owns the database", missingStatements(p), `GRANT "`+f.owner+`" TO "`+f.role+`";`)
				script = p.Script(true)
			}
			f.exec(script)
			if err := Check(f.ctx, conn, c.req, "the work"); err != nil {
				t.Fatalf("after running\n%s\nCheck still fails: %v", script, err)
			}
			// Revoking one required privilege makes it missing again.
			if c.req.Slave {
				f.exec(`REVOKE TRUNCATE ON app.runs FROM ` + f.role)
				err := Check(f.ctx, conn, c.req, "the work")
				requireContains(t, "the error after a REVOKE", errorText(err), `TRUNCATE ON ALL TABLES IN SCHEMA "app"`)
			}
		})
	}
}

func errorText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// A role that does not exist gets a CREATE ROLE and every privilege; a
// superuser needs nothing.
func TestNewRoleAndSuperuser(t *testing.T) {
	f := newFixture(t)
	req := Request{Role: "no_such_role_x", Master: true, Slave: true, Install: true, Fence: true, Schemas: []string{"app"}}
	p, err := Work(f.ctx, f.admin, req)
	if err != nil {
		t.Fatal(err)
	}
	if p.Exists || len(p.Needs) == 0 || p.Needs[0].Statement != `CREATE ROLE "no_such_role_x" LOGIN;` {
		t.Fatalf("plan of a missing role: %+v", p)
	}
	for _, n := range p.Needs {
		if n.Held {
			t.Errorf("a missing role holds %s", n.Statement)
		}
	}
	requireContains(t, "the missing role's script", p.Script(false), `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER ON ALL TABLES IN SCHEMA "app" TO "no_such_role_x";`)

	req.Role = ""
	p, err = Work(f.ctx, f.admin, req)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Super || len(p.Missing()) != 0 {
		t.Errorf("a superuser misses %s", missingStatements(p))
	}
}

// With repository.tables, the grants name the tables, not the schema.
func TestTableFilterNamesTables(t *testing.T) {
	f := newFixture(t)
	p, err := Work(f.ctx, f.asRole(), Request{Slave: true, Schemas: []string{"app"}, Tables: []string{"jobs", "app.run*"}})
	if err != nil {
		t.Fatal(err)
	}
	got := missingStatements(p)
	requireContains(t, "the filtered grants", got, `ON TABLE "app"."jobs", "app"."runs" TO`)
	if strings.Contains(got, "ALL TABLES") || strings.Contains(got, `"other"`) {
		t.Errorf("the filtered grants cover more than the filtered tables:\n%s", got)
	}
}

// Objects of schema schedsync that another role created must be given to
// schedsync's role, and the plan says how.
func TestForeignSchedsyncObjects(t *testing.T) {
	f := newFixture(t)
	f.exec(`CREATE SCHEMA schedsync; CREATE TABLE schedsync.state (id int);
		CREATE FUNCTION schedsync.f(a int) RETURNS int LANGUAGE sql AS 'SELECT a'`)
	p, err := Work(f.ctx, f.asRole(), Request{Slave: true, Schemas: []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}
	got := missingStatements(p)
	requireContains(t, "the plan", got,
		`ALTER SCHEMA schedsync OWNER TO `+f.role+`;`,
		`ALTER TABLE schedsync.state OWNER TO `+f.role+`;`,
		`ALTER FUNCTION schedsync.f(integer) OWNER TO `+f.role+`;`)
	if strings.Contains(got, "CREATE ON DATABASE") {
		t.Errorf("CREATE on the database asked for although schema schedsync exists:\n%s", got)
	}
}
