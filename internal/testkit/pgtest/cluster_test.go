package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if err := Available(); err != nil {
		Shared(t) // skips or fails, loudly
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// refuses reports whether nothing accepts connections on port any more.
func refuses(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func TestStartAppliesSettingsAndStopRemovesAll(t *testing.T) {
	c, err := Start(context.Background(), Options{Settings: map[string]string{"work_mem": "7MB", "cluster_name": "it's ours"}})
	if errors.Is(err, ErrNotFound) {
		Shared(t)
	}
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, c.URL("postgres"))
	for name, want := range map[string]string{
		"wal_level":               "logical",
		"fsync":                   "off",
		"full_page_writes":        "off",
		"synchronous_commit":      "on",
		"max_replication_slots":   "10",
		"max_wal_senders":         "10",
		"max_connections":         "100",
		"shared_buffers":          "64MB",
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": "",
		"port":                    strconv.Itoa(c.Port),
		"work_mem":                "7MB",
		"cluster_name":            "it's ours",
	} {
		if got := queryString(t, conn, "SHOW "+name); got != want {
			t.Errorf("SHOW %s = %q, want %q", name, got, want)
		}
	}
	if got := queryString(t, conn, "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user = %q", got)
	}
	for _, name := range []string{"psql", "pgbench", "initdb"} {
		if _, err := os.Stat(c.Bin(name)); err != nil {
			t.Errorf("Bin(%q): %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Dir, logName)); err != nil {
		t.Errorf("server log: %v", err)
	}
	conn.Close(context.Background())

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory after Stop: %v", err)
	}
	if !refuses(c.Port) {
		t.Errorf("port %d still accepts connections after Stop", c.Port)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.Restart(context.Background()); err == nil {
		t.Error("Restart after Stop without Keep succeeded")
	}
}

func TestBadSettingsAreRefused(t *testing.T) {
	if err := Available(); err != nil {
		Shared(t)
	}
	for _, s := range []map[string]string{{"port": "5432"}, {"bad name": "1"}, {"work_mem": "1MB\nfsync = on"}} {
		if c, err := Start(context.Background(), Options{Settings: s}); err == nil {
			c.Stop()
			t.Errorf("Start accepted settings %q", s)
		}
	}
}

func TestNewDBConnectsAndIsDropped(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		url := NewDB(t)
		conn := connect(t, url)
		var one int
		if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("SELECT 1: %d, %v", one, err)
		}
		name = queryString(t, conn, "SELECT current_database()")
		if url2 := NewDB(t); url2 == url {
			t.Errorf("two NewDB gave the same URL %s", url)
		}
		// Cleanup must drop it although this connection is still open.
	})
	conn := connect(t, Shared(t).URL("postgres"))
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil || n != 0 {
		t.Errorf("database %s still exists after the test (%d, %v)", name, n, err)
	}
}

func TestCreateDBAndDropDBWithReplicationSlot(t *testing.T) {
	c := Shared(t)
	ctx := context.Background()
	url, err := c.CreateDB(ctx, "With Space")
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, url)
	if got := queryString(t, conn, "SELECT current_database()"); got != "With Space" {
		t.Errorf("connected to %q", got)
	}
	// An inactive slot and one held by a walsender: both pin the database.
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('idle', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('busy', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
	repl := connect(t, url+"&replication=database")
	if err := pglogrepl.StartReplication(ctx, repl.PgConn(), "busy", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'none'"},
	}); err != nil {
		t.Fatal(err)
	}
	eventually.That(t, "slot busy to become active", 30*time.Second, func() bool {
		return queryString(t, conn, "SELECT count(*)::text FROM pg_replication_slots WHERE active") == "1"
	})
	if err := c.DropDB(ctx, "With Space"); err != nil {
		t.Fatal(err)
	}
	admin := connect(t, c.URL("postgres"))
	if got := queryString(t, admin, "SELECT count(*)::text FROM pg_database WHERE datname = 'With Space'"); got != "0" {
		t.Error("database still exists")
	}
	if err := c.DropDB(ctx, "With Space"); err != nil {
		t.Errorf("dropping a missing database: %v", err)
	}
}

func TestStopImmediateAndRestartKeepData(t *testing.T) {
	c := startCluster(t, Options{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (i int)"); err != nil {
		t.Fatal(err)
	}
	// Separate commits right up to the crash: every one that returned
	// must survive it.
	const n = 500
	for i := range n {
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	port := c.Port
	if err := c.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if !refuses(port) {
		t.Fatal("server still up after StopImmediate")
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port != port {
		t.Errorf("port changed from %d to %d", port, c.Port)
	}
	conn2 := connect(t, c.URL("postgres"))
	if got := queryString(t, conn2, "SELECT count(*)::text FROM t"); got != strconv.Itoa(n) {
		t.Errorf("after crash and restart: %s rows, want %d", got, n)
	}
	if !strings.Contains(readFrom(filepath.Join(c.Dir, logName), 0), "not properly shut down") {
		t.Error("the server log does not show crash recovery")
	}
	// Restart of a running server stops it first.
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStartOnBusyPortFailsCleanly(t *testing.T) {
	if err := Available(); err != nil {
		Shared(t)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cred, _ := runAs()
	parent, err := clustersDir(cred)
	if err != nil {
		t.Fatal(err)
	}
	// Only this process's cluster directories count: other test binaries
	// start clusters in the same parent meanwhile.
	ours := func() int {
		entries, _ := os.ReadDir(parent)
		n := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), fmt.Sprintf("cluster-%d-", os.Getpid())) {
				n++
			}
		}
		return n
	}
	before := ours()
	c, err := Start(context.Background(), Options{Port: port})
	if err == nil {
		c.Stop()
		t.Fatal("Start on a busy port succeeded")
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("error does not say why: %v", err)
	}
	if after := ours(); after > before {
		t.Errorf("failed Start left a directory behind: %d of our cluster directories before, %d after", before, after)
	}
}

// accessibleTempDir is a t.TempDir that the postgres user can reach when
// we are root (t.TempDir's parent is private).
func accessibleTempDir(t *testing.T) string {
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return filepath.Join(dir, "cluster")
}

func TestKeepAndReuseDir(t *testing.T) {
	dir := accessibleTempDir(t)
	ctx := context.Background()
	c := startCluster(t, Options{Dir: dir, Keep: true})
	conn := connect(t, c.URL("postgres"))
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (i int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if _, err := Start(ctx, Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Start in a live cluster's directory: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("Keep: %v", err)
	}

	// Restart after Stop, then a new Start in the same directory.
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c2 := startCluster(t, Options{Dir: dir})
	conn2 := connect(t, c2.URL("postgres"))
	if got := queryString(t, conn2, "SELECT i::text FROM kept"); got != "42" {
		t.Errorf("kept data: %s", got)
	}
	conn2.Close(ctx)
	if err := c2.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stop without Keep left %s: %v", dir, err)
	}
}

func TestDBName(t *testing.T) {
	a, b := dbName("TestX/sub test#1"), dbName("TestX/sub test#1")
	if a == b {
		t.Errorf("not unique: %s", a)
	}
	if !strings.HasPrefix(a, "t_testx_sub_test_1_") {
		t.Errorf("dbName = %s", a)
	}
	if long := dbName(strings.Repeat("Test", 40)); len(long) > 63 {
		t.Errorf("%d bytes: %s", len(long), long)
	}
}
