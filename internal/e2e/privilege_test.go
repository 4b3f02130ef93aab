package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

// Roles of the least-privilege scenario: the scheduler's role owns the
// repository's tables, a DBA's role owns the database (so that neither
// owner stands in for the other); schedsync's role has only what
// `schedsync grants` prints for its side.
const (
	ownerRole     = "quartz"
	dbOwnerRole   = "sched_dba"
	schedsyncRole = "schedsync"
)

// TestLeastPrivilege runs a pair whose repositories belong to
// non-superuser roles (the scheduler's owns the tables, a DBA's the
// database), with schedsync connecting as a role that holds nothing but
// what `schedsync grants --side ROLE --switchover=false` prints: install refuses at first and names the statements, the pair
// then replicates the Quartz workload, a resync under load restores as
// that role, and the slave's rows equal the master's, compared as a
// superuser. A privilege revoked later makes start refuse with its GRANT.
// Then, with what grants prints for both sides and switchover, the pair
// switches over and streams the other way.
func TestLeastPrivilege(t *testing.T) {
	requirePostgres(t)
	inEachMode(t, leastPrivilege)
}

func leastPrivilege(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	bin := schedsyncBinary(t)
	w := &world{}
	w.masterDB, w.slaveDB = startClusters(t, ctx)
	for _, c := range []*pgtest.Cluster{w.masterDB, w.slaveDB} {
		ownedRepository(t, ctx, c)
	}
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	syncPort := freePort(t)
	w.master = newNode(t, bin, nodeConfig{role: "master", name: "lp-master", repo: roleURL(w.masterDB, schedsyncRole), mode: mode,
		listen: syncPort, masterPort: syncPort, token: hex.EncodeToString(token)})
	w.slave = newNode(t, bin, nodeConfig{role: "slave", name: "lp-slave", repo: roleURL(w.slaveDB, schedsyncRole), mode: mode,
		listen: freePort(t), masterPort: syncPort, token: hex.EncodeToString(token)})
	t.Cleanup(func() {
		if t.Failed() {
			w.dumpLogs(t)
		}
	})
	// The scheduler works as its own role.
	w.pool = newPool(t, roleURL(w.masterDB, ownerRole))

	t.Run("install names the missing grants", func(t *testing.T) {
		want := map[*node][]string{
			w.master: {`GRANT CREATE ON DATABASE "sched" TO "schedsync";`},
			w.slave: {`GRANT SET ON PARAMETER session_replication_role TO "schedsync";`,
				`GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "public" TO "schedsync";`,
				`GRANT SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "public" TO "schedsync";`},
		}
		if mode == "logical" {
			want[w.master] = append(want[w.master], `ALTER ROLE "schedsync" REPLICATION;`, `GRANT "quartz" TO "schedsync";`)
		} else {
			want[w.master] = append(want[w.master], `GRANT SELECT, TRIGGER ON ALL TABLES IN SCHEMA "public" TO "schedsync";`,
				`GRANT SELECT ON ALL SEQUENCES IN SCHEMA "public" TO "schedsync";`)
		}
		for _, n := range []*node{w.master, w.slave} {
			r, err := n.run(cmdTimeout, "install")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: install without grants: exit %d\n%s", n.name, r.code, r.output())
			if r.code != 2 {
				t.Errorf("%s: install without grants: exit %d, want 2", n.name, r.code)
			}
			for _, s := range want[n] {
				if !strings.Contains(r.output(), s) {
					t.Errorf("%s: install's refusal does not name %s", n.name, s)
				}
			}
		}
		for _, c := range []*pgtest.Cluster{w.masterDB, w.slaveDB} {
			if got := queryBool(t, ctx, c.URL("sched"), `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'schedsync')`); got {
				t.Errorf("a refused install left schema schedsync behind")
			}
		}
	})

	t.Run("grants", func(t *testing.T) {
		for _, side := range []struct {
			n *node
			c *pgtest.Cluster
		}{{w.master, w.masterDB}, {w.slave, w.slaveDB}} {
			role := strings.TrimPrefix(side.n.name, "lp-")
			script := side.n.mustRun(t, cmdTimeout, "grants", "--side", role, "--switchover=false")
			t.Logf("%s: schedsync grants --side %s --switchover=false:\n%s", side.n.name, role, script)
			execAs(t, ctx, side.c.URL("sched"), script)
			if out := side.n.mustRun(t, cmdTimeout, "grants", "--side", role, "--switchover=false", "--missing"); !strings.Contains(out, "Nothing is missing") {
				t.Errorf("%s: after running the script, grants --missing still lists:\n%s", side.n.name, out)
			}
			if queryBool(t, ctx, side.c.URL("sched"), `SELECT rolsuper FROM pg_roles WHERE rolname = 'schedsync'`) {
				t.Fatal("the schedsync role is a superuser")
			}
			// Only a logical master needs the tables' owner.
			owner := queryBool(t, ctx, side.c.URL("sched"), `SELECT pg_has_role('schedsync', 'quartz', 'USAGE')`)
			if wantOwner := mode == "logical" && side.n == w.master; owner != wantOwner {
				t.Errorf("%s: schedsync is a member of the tables' owner: %v, want %v", side.n.name, owner, wantOwner)
			}
		}
	})
	if t.Failed() {
		return
	}

	w.install(t)
	if err := quartz.Seed(ctx, w.pool, quartzOptions); err != nil {
		t.Fatalf("seed the quartz tables: %v", err)
	}

	t.Run("start names a revoked grant", func(t *testing.T) {
		execAs(t, ctx, w.slaveDB.URL("sched"), `REVOKE SET ON PARAMETER session_replication_role FROM schedsync`)
		r, err := w.slave.run(startTimeout, "start", "--wait", "10s")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("start without SET on session_replication_role: exit %d\n%s", r.code, r.output())
		if r.code != 2 || !strings.Contains(r.output(), `GRANT SET ON PARAMETER session_replication_role TO "schedsync";`) {
			t.Errorf("start without SET on session_replication_role: exit %d, want 2 and the GRANT", r.code)
		}
		execAs(t, ctx, w.slaveDB.URL("sched"), `GRANT SET ON PARAMETER session_replication_role TO schedsync`)
	})

	if !t.Run("start", w.startServices) {
		return
	}
	l := startLoad(w.pool)
	t.Cleanup(l.stop)
	time.Sleep(5 * time.Second)
	t.Run("resync under load", func(t *testing.T) {
		out := w.slave.mustRun(t, 3*time.Minute, "resync", "--force")
		t.Log(out)
		w.slave.waitStreaming(t, recoverTimeout)
	})
	time.Sleep(3 * time.Second)
	l.stop()
	l.report(t)
	if !t.Run("catch up", w.waitCaughtUp) {
		return
	}
	t.Run("rows equal", func(t *testing.T) {
		requireSameRows(t, ctx, w.masterDB.URL("sched"), w.slaveDB.URL("sched"))
	})
	t.Run("sequences", func(t *testing.T) {
		ms, err := takeSnapshot(ctx, w.masterDB.URL("sched"))
		if err != nil {
			t.Fatal(err)
		}
		ss, err := takeSnapshot(ctx, w.slaveDB.URL("sched"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("sequences: master %v, slave %v", ms.sequences, ss.sequences)
		if d := differences(ms, ss); d != "" {
			t.Fatalf("the slave differs from the master:\n%s", d)
		}
	})
	t.Run("verify", w.verifyEqual)
	if t.Failed() {
		return
	}
	leastPrivilegeSwitchover(t, ctx, w)
	t.Run("stop", w.stopServices)
}

// leastPrivilegeSwitchover gives both nodes' schedsync role what
// `schedsync grants` prints for both sides and for switchover, then swaps
// the roles: the old master is made read only for the scheduler, the new
// one captures the scheduler's writes, and the old master streams them.
func leastPrivilegeSwitchover(t *testing.T, ctx context.Context, w *world) {
	t.Run("switchover refused up front without the grants", func(t *testing.T) {
		r, err := w.slave.run(5*time.Minute, "switchover")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("switchover with the slave's grants only: exit %d\n%s", r.code, r.output())
		if r.code == 0 || !strings.Contains(r.output(), "GRANT") || !strings.Contains(r.output(), "keep their roles") {
			t.Errorf("switchover with the slave's grants only: exit %d, want a failure naming the GRANTs, both nodes keeping their roles", r.code)
		}
		// Nothing happened: the master still takes the scheduler's writes.
		conn, err := pgx.Connect(ctx, roleURL(w.masterDB, ownerRole))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, `INSERT INTO job_history (fired_at) VALUES (2)`); err != nil {
			t.Errorf("the scheduler's write on the master after a refused switchover: %v", err)
		}
		requireRoles(t, w.master, w.slave, 1)
	})
	t.Run("grants for switchover", func(t *testing.T) {
		for _, side := range []struct {
			n *node
			c *pgtest.Cluster
		}{{w.master, w.masterDB}, {w.slave, w.slaveDB}} {
			script := side.n.mustRun(t, cmdTimeout, "grants")
			execAs(t, ctx, side.c.URL("sched"), script)
			// The database's owner fences; the tables' owner drops the
			// capture triggers of the master that becomes a slave.
			for _, want := range []string{"pg_read_all_stats", "pg_signal_backend", dbOwnerRole, ownerRole} {
				if !queryBool(t, ctx, side.c.URL("sched"), `SELECT pg_has_role('schedsync', '`+want+`', 'USAGE')`) {
					t.Errorf("%s: after grants, schedsync is no member of %s", side.n.name, want)
				}
			}
		}
	})
	a, b := w.master, w.slave
	t.Run("switchover", func(t *testing.T) {
		out := b.mustRun(t, 5*time.Minute, "switchover")
		t.Log(out)
	})
	if t.Failed() {
		return
	}
	requireRoles(t, b, a, 2)
	t.Run("old master read only for the scheduler", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, roleURL(w.masterDB, ownerRole))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, `INSERT INTO job_history (fired_at) VALUES (1)`)
		if err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("the scheduler's write on the demoted master: %v, want a read-only transaction error", err)
		}
	})
	l := startLoad(newPool(t, roleURL(w.slaveDB, ownerRole)))
	t.Cleanup(l.stop)
	time.Sleep(3 * time.Second)
	l.stop()
	l.report(t)
	ba := &world{master: b, slave: a}
	if !t.Run("old master streams from the new", ba.waitCaughtUp) {
		return
	}
	t.Run("rows equal after the switchover", func(t *testing.T) {
		requireSameRows(t, ctx, w.slaveDB.URL("sched"), w.masterDB.URL("sched"))
	})
}

// ownedRepository creates roles quartz, sched_dba and schedsync, and
// database sched owned by sched_dba, whose Quartz and extra tables quartz
// creates.
func ownedRepository(t *testing.T, ctx context.Context, c *pgtest.Cluster) {
	t.Helper()
	execAs(t, ctx, c.URL("postgres"), `CREATE ROLE quartz LOGIN`)
	execAs(t, ctx, c.URL("postgres"), `CREATE ROLE sched_dba LOGIN`)
	execAs(t, ctx, c.URL("postgres"), `CREATE ROLE schedsync LOGIN`)
	execAs(t, ctx, c.URL("postgres"), `CREATE DATABASE sched OWNER sched_dba`)
	execAs(t, ctx, roleURL(c, dbOwnerRole), `GRANT CREATE ON SCHEMA public TO quartz`)
	createTables(t, ctx, roleURL(c, ownerRole))
}

// roleURL is the URL of database sched on c as role.
func roleURL(c *pgtest.Cluster, role string) string {
	u, err := url.Parse(c.URL("sched"))
	if err != nil {
		panic(err)
	}
	u.User = url.User(role)
	return u.String()
}

// execAs runs sql (any number of statements) on the database of url.
func execAs(t *testing.T, ctx context.Context, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// queryBool runs a query of one boolean on the database of url.
func queryBool(t *testing.T, ctx context.Context, url, sql string) bool {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var b bool
	if err := conn.QueryRow(ctx, sql).Scan(&b); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return b
}
