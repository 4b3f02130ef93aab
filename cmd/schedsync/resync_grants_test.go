package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

// TestResyncOfFormerMasterChecksTheTablesOwner: resync drops a former
// master's capture triggers before it replaces its data, and only the
// tables' owner may drop them. Its check, before it stops the service,
// asks for that membership on a former master, and not on a slave that
// never captured.
func TestResyncOfFormerMasterChecksTheTablesOwner(t *testing.T) {
	cleanEnv(t)
	url := pgtest.NewDB(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	owner, role := "own_"+hex.EncodeToString(b), "sync_"+hex.EncodeToString(b)
	pgtest.Exec(t, url, `CREATE ROLE `+owner+` LOGIN; CREATE ROLE `+role+` LOGIN;
		GRANT CREATE ON SCHEMA public TO `+owner+`;
		SET ROLE `+owner+`; CREATE TABLE jobs (id int PRIMARY KEY, name text); RESET ROLE`)
	t.Cleanup(func() {
		// Roles outlive the database: drop them and what they own.
		pgtest.Exec(t, url, `DROP SCHEMA IF EXISTS schedsync CASCADE`)
		for _, r := range []string{role, owner} {
			pgtest.Exec(t, url, `DROP OWNED BY `+r+`; DROP ROLE `+r)
		}
	})
	roleURL := strings.Replace(url, "postgres@", role+"@", 1)
	if roleURL == url {
		t.Fatalf("cannot make a URL for role %s from %s", role, url)
	}
	cfg := config.DefaultConfig()
	cfg.Node.Role, cfg.Node.Name, cfg.Repository.URL = config.RoleSlave, "s1", roleURL
	a := newApp(io.Discard, io.Discard)
	ownerGrant := `GRANT "` + owner + `" TO "` + role + `";`
	// grantMissing runs, as a superuser, what the check says is missing,
	// and reports whether that named the owner's membership.
	grantMissing := func(what string) (named bool) {
		t.Helper()
		err := a.checkResyncGrants(context.Background(), &cfg)
		var missing *grants.MissingError
		if !errors.As(err, &missing) {
			t.Fatalf("%s: %v, want the missing grants", what, err)
		}
		pgtest.Exec(t, url, missing.Plan.Script(true))
		return strings.Contains(err.Error(), ownerGrant)
	}
	if grantMissing("a slave that never captured") {
		t.Errorf("a slave that never captured is asked for %s", ownerGrant)
	}
	if err := a.checkResyncGrants(context.Background(), &cfg); err != nil {
		t.Fatalf("after the slave's grants: %v", err)
	}

	path := writeFile(t, "master.properties", "node.role=master\nnode.name=m1\nrepository.url="+url+"\nsync.token=tok\n")
	if code, _, errOut := cli(t, "--config", path, "install"); code != exitOK {
		t.Fatalf("install: exit %d, stderr %s", code, errOut)
	}
	// Install ran as a superuser: first its objects' ownership, then the
	// tables' owner.
	named := grantMissing("a former master, its objects")
	if !named && !grantMissing("a former master with its capture triggers") {
		t.Errorf("resync of a former master does not ask for %s", ownerGrant)
	}
	if err := a.checkResyncGrants(context.Background(), &cfg); err != nil {
		t.Fatalf("after the grants: %v", err)
	}
	var member bool
	pgtest.QueryRow(t, url, `SELECT pg_has_role($1, $2, 'USAGE')`, role, owner).Scan(&member)
	if !member {
		t.Errorf("%s is no member of %s after the grants", role, owner)
	}
}
