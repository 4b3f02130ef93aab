package config

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://sched@db:5432/scheduler", "postgres://sched@db:5432/scheduler"},
		{"postgres://sched:hunter2@db:5432/scheduler", "postgres://sched:***@db:5432/scheduler"},
		{"postgresql://sched:p%40ss@db/scheduler?sslmode=require", "postgresql://sched:***@db/scheduler?sslmode=require"},
		{"postgres://sched@db/scheduler?password=hunter2", "postgres://sched@db/scheduler?password=***"},
		{"postgres://sched:hunter2@db/x%zz", "postgres://sched:***@db/x%zz"},
		{"host=db dbname=scheduler user=sched password=hunter2", "host=db dbname=scheduler user=sched password=***"},
		{"host=db password = 'hun ter2' dbname=s", "host=db password = *** dbname=s"},
		{"host=db PASSWORD=hunter2", "host=db PASSWORD=***"},
		{"host=db sslpassword=hunter2", "host=db sslpassword=***"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactedAndStringHideSecrets(t *testing.T) {
	c := validMaster()
	c.Repository.URL = "postgres://sched:hunter2@db/scheduler"
	c.Sync.Token = "top-secret-token"
	r := c.Redacted()
	if r.Sync.Token != Mask || strings.Contains(r.Repository.URL, "hunter2") {
		t.Errorf("Redacted() = token %q, url %q", r.Sync.Token, r.Repository.URL)
	}
	if c.Sync.Token != "top-secret-token" {
		t.Error("Redacted() changed the original config")
	}
	r.Repository.Schemas[0] = "changed"
	if c.Repository.Schemas[0] != "public" {
		t.Error("Redacted() shares the schema list with the original")
	}
	s := c.String()
	for _, secret := range []string{"hunter2", "top-secret-token"} {
		if strings.Contains(s, secret) {
			t.Errorf("String() leaks %q:\n%s", secret, s)
		}
	}
	for _, line := range []string{"sync.token=***\n", "spool.max_backlog=1GiB\n", "node.role=master\n"} {
		if !strings.Contains(s, line) {
			t.Errorf("String() lacks %q:\n%s", line, s)
		}
	}
}
