package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/quartz"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// env is the benchmark's world: a schedsync binary, one throwaway
// PostgreSQL cluster holding the master repository and the slave
// repositories (databases of one cluster: the nodes tell them apart by
// database OID), and a master node configured and installed. Slaves are
// added per run.
type env struct {
	dir      string   // temporary directory: binary, configs, spool dirs
	bins     []string // the schedsync binaries compared; bins[0] installs
	cluster  *pgtest.Cluster
	token    string
	syncPort int
	maxBack  int64
	master   *node
	keep     bool
	apply    bool // the slave repository has the tables: the slave applies while it receives
}

// node is one schedsync service, driven through a binary.
type node struct {
	env    *env
	bin    string
	db     string // its repository database
	name   string
	config string // the .properties file
	spool  string // spool.dir
}

func newEnv(ctx context.Context, o options) (*env, error) {
	dir, err := os.MkdirTemp("", "shipbench-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, bins: o.bins, maxBack: max(4<<30, 2*o.backlog), keep: o.keep, apply: o.apply}
	if err := e.setup(ctx); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) setup(ctx context.Context) error {
	if len(e.bins) == 0 {
		bin := filepath.Join(e.dir, "schedsync")
		if err := benchkit.BuildBinary(ctx, bin); err != nil {
			return err
		}
		e.bins = []string{bin}
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	e.token = hex.EncodeToString(tok)
	var err error
	if e.syncPort, err = benchkit.FreePort(); err != nil {
		return err
	}
	if e.cluster, err = pgtest.Start(ctx, pgtest.Options{Keep: e.keep}); err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	const masterDB = "bench_master"
	masterURL, err := e.cluster.CreateDB(ctx, masterDB)
	if err != nil {
		return err
	}
	if err := createQuartzSchema(ctx, masterURL); err != nil {
		return err
	}
	e.master, err = e.newNode("bench-master", "master", masterDB)
	return err
}

func createQuartzSchema(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return quartz.CreateSchema(ctx, conn)
}

// newNode writes the config of a node, with its own spool.dir, and runs
// `schedsync install` for it.
func (e *env) newNode(name, role, db string) (*node, error) {
	n := &node{env: e, bin: e.bins[0], db: db, name: name,
		config: filepath.Join(e.dir, name+".properties"), spool: filepath.Join(e.dir, name)}
	props := []string{
		"node.role=" + role,
		"node.name=" + name,
		"repository.url=" + e.cluster.URL(db),
		"sync.token=" + e.token,
		"sync.listen=127.0.0.1:" + strconv.Itoa(e.syncPort),
		"master.host=127.0.0.1",
		"master.port=" + strconv.Itoa(e.syncPort),
		"spool.dir=" + n.spool,
		"spool.max_backlog=" + strconv.FormatInt(e.maxBack, 10),
		"log.level=info",
	}
	if err := os.WriteFile(n.config, []byte(strings.Join(props, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	if _, err := n.run(context.Background(), "install"); err != nil {
		return nil, err
	}
	return n, nil
}

// newSlave adds slave number i: a new name, an empty spool and a new
// repository database, so that the master serves it the whole backlog
// from position 0.
func (e *env) newSlave(ctx context.Context, i int) (*node, error) {
	db := "bench_slave_" + strconv.Itoa(i)
	url, err := e.cluster.CreateDB(ctx, db)
	if err != nil {
		return nil, err
	}
	if e.apply {
		if err := createQuartzSchema(ctx, url); err != nil {
			return nil, err
		}
	}
	return e.newNode("bench-slave-"+strconv.Itoa(i), "slave", db)
}

// setCapturePosition records pos as the position capture confirmed in the
// master repository, as a master that captured the backlog itself would
// have it. Left at 0, the master's startup recovery reads the whole spool
// to list the XIDs it must delete from the audit table.
func (e *env) setCapturePosition(ctx context.Context, pos uint64) error {
	conn, err := pgx.Connect(ctx, e.cluster.URL(e.master.db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `UPDATE schedsync.capture_state SET position = $1 WHERE id = 1`, int64(pos))
	return err
}

// captureEpoch reads the capture history install drew for the master.
func (e *env) captureEpoch(ctx context.Context) (uint64, error) {
	conn, err := pgx.Connect(ctx, e.cluster.URL(e.master.db))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var epoch int64
	err = conn.QueryRow(ctx, `SELECT epoch FROM schedsync.capture_state WHERE id = 1`).Scan(&epoch)
	return uint64(epoch), err
}

// stopMaster stops the master and makes it forget its slaves (its
// registry, slaves.json), so that spool retention never cuts the backlog:
// a slave of an earlier run that applied some of it would let it.
func (e *env) stopMaster() {
	e.master.stop()
	if err := os.Remove(filepath.Join(e.master.spool, "slaves.json")); err != nil && !os.IsNotExist(err) {
		fmt.Fprintln(os.Stderr, "shipbench:", err)
	}
}

// postmasterPID is the pid of the cluster's postmaster, whose process tree
// is all of PostgreSQL's CPU use.
func (e *env) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(e.cluster.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// close stops what is still running and, unless keep, deletes everything.
func (e *env) close() {
	if e.cluster != nil {
		if err := e.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "shipbench:", err)
		}
	}
	if e.keep {
		fmt.Printf("kept: %s", e.dir)
		if e.cluster != nil {
			fmt.Printf(" and the PostgreSQL cluster in %s (stopped)", e.cluster.Dir)
		}
		fmt.Println()
		return
	}
	_ = os.RemoveAll(e.dir)
}

// remove stops a slave and, unless keep, deletes its spool and its
// database: the page cache they fill is freed for the next run.
func (n *node) remove() {
	n.stop()
	if n.env.keep {
		return
	}
	_ = os.RemoveAll(n.spool)
	if err := n.env.cluster.DropDB(context.Background(), n.db); err != nil {
		fmt.Fprintln(os.Stderr, "shipbench:", err)
	}
}

// stop stops the node's service if it runs; errors are only reported.
func (n *node) stop() {
	if _, err := n.run(context.Background(), "stop"); err != nil {
		fmt.Fprintln(os.Stderr, "shipbench:", err)
	}
}

// run runs one schedsync command for the node and returns its output.
func (n *node) run(ctx context.Context, args ...string) ([]byte, error) {
	return benchkit.Run(ctx, n.bin, n.config, n.name, args...)
}
