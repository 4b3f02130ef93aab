package service

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// TestVerifyWhileMasterWrites: verify compares at one exact position, so a
// master that keeps writing gives no false differences, and a row changed
// on the slave is caught and named.
func TestVerifyWhileMasterWrites(t *testing.T) {
	masterURL, slaveURL := newRepositories(t, `CREATE TABLE t (id bigserial PRIMARY KEY, v text, f float8, j jsonb);
		CREATE TABLE still (id int PRIMARY KEY, v text); INSERT INTO still VALUES (1, 'untouched')`)
	m, _ := startMaster(t, baseConfig(t, "master", masterURL))
	s := newSlave(t, slaveConfig(t, slaveURL, m.addr), 10*time.Second)
	if _, err := start(t, s); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := pgx.Connect(ctx, masterURL)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := c.Exec(ctx, `INSERT INTO t (v, f, j) VALUES ($1, random(), jsonb_build_object('i', $1::text))`, fmt.Sprint(i)); err != nil {
				t.Logf("writer: %v", err)
				return
			}
			if _, err := c.Exec(ctx, `UPDATE t SET v = v || '.' WHERE id = (SELECT max(id) - 3 FROM t)`); err != nil {
				return
			}
		}
	}()
	eventually.That(t, "the slave to apply something", 20*time.Second, func() bool { return s.applied.Load() > 10 })
	for i := 0; i < 3; i++ {
		res, err := s.verify(context.Background())
		if err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if !res.Equal {
			t.Fatalf("verify %d under writes found differences: %+v", i, res.Differences)
		}
		if len(res.Tables) != 2 || res.Tables[0].MasterRows == 0 {
			t.Fatalf("verify %d compared %+v", i, res.Tables)
		}
	}
	mustExec(t, slaveURL, `UPDATE still SET v = 'tampered' WHERE id = 1`)
	res, err := s.verify(context.Background())
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.Equal || len(res.Differences) != 1 || res.Differences[0].Table != "public.still" ||
		!strings.Contains(res.Differences[0].What, "buckets") {
		t.Fatalf("a changed slave row was not reported on public.still: %+v", res)
	}
}
