package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// deployment is schedsync on the world's clusters for one measurement: a
// master service, and with -with-slave a slave service, each with a fresh
// config and spool directory, driven through the binary as an operator
// would.
type deployment struct {
	master *node
	slave  *node // nil without -with-slave
}

// node is one schedsync service.
type node struct {
	bin    string
	name   string
	config string // the .properties file
	spool  string // spool.dir, also where the service logs
}

// status is what this tool reads of `status --json` (docs/DESIGN.md's
// contract fields).
type status struct {
	Role     string `json:"role"`
	Running  bool   `json:"running"`
	State    string `json:"state"`
	Position uint64 `json:"position"`
	Error    string `json:"error"`
	PID      int    `json:"pid"`
}

// newDeployment writes the configs of a deployment with capture.mode mode
// under dir; nothing is installed yet.
func newDeployment(o options, w *world, dir, mode string) (*deployment, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	port, err := benchkit.FreePort()
	if err != nil {
		return nil, fmt.Errorf("find a free port for sync.listen: %w", err)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	common := []string{
		"repository.schemas=public",
		"capture.mode=" + captureMode(mode),
		"capture.allow_no_pk=true", // pgbench_history has no primary key
		"sync.listen=127.0.0.1:" + strconv.Itoa(port),
		"sync.token=" + hex.EncodeToString(tok),
		"master.host=127.0.0.1",
		"master.port=" + strconv.Itoa(port),
		"log.level=" + o.logLevel,
	}
	if mode == modeLogicalSync {
		common = append(common, "failover.synchronous=true")
	}
	d := &deployment{}
	if d.master, err = writeNode(o.bin, dir, "tps-master", "master", w.masterURL(), common); err != nil {
		return nil, err
	}
	if o.withSlave {
		if d.slave, err = writeNode(o.bin, dir, "tps-slave", "slave", w.slaveURL(), common); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// writeNode writes one node's .properties file.
func writeNode(bin, dir, name, role, url string, common []string) (*node, error) {
	n := &node{bin: bin, name: name}
	var err error
	if n.config, n.spool, err = benchkit.WriteNodeConfig(dir, name, role, url, common); err != nil {
		return nil, err
	}
	return n, nil
}

// nodes are the deployment's nodes in start order: the master first, as a
// slave needs its master's sync service.
func (d *deployment) nodes() []*node {
	if d.slave == nil {
		return []*node{d.master}
	}
	return []*node{d.master, d.slave}
}

// up installs and starts every node and waits until they stream.
func (d *deployment) up(ctx context.Context) error {
	for _, n := range d.nodes() {
		if _, err := n.run(ctx, "install"); err != nil {
			return err
		}
	}
	for _, n := range d.nodes() {
		if _, err := n.run(ctx, "start"); err != nil {
			return err
		}
		if err := n.waitStreaming(ctx, time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// down stops the services (slave first, so it does not see its master
// vanish) and uninstalls them: logical uninstall drops the slot, which
// would otherwise keep WAL, and refuses while the service runs. It runs
// after errors and Ctrl-C too, so it has its own context; errors are only
// reported, as down is cleanup.
func (d *deployment) down() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := d.nodes()
	for i := len(nodes) - 1; i >= 0; i-- {
		if _, err := nodes[i].run(ctx, "stop"); err != nil {
			fmt.Fprintln(os.Stderr, "tpsbench:", err)
		}
	}
	for _, n := range nodes {
		if _, err := n.run(ctx, "uninstall"); err != nil {
			fmt.Fprintln(os.Stderr, "tpsbench:", err)
		}
	}
}

// drain waits until the master has captured everything pgbench committed
// (its position has not moved for a second) and a slave has applied it,
// and returns when the master's position last moved. The services are
// stopped right after, so this only tells how far capture trailed; an
// unfinished drain is reported, not fatal.
func (d *deployment) drain(ctx context.Context, limit time.Duration) (time.Time, error) {
	const every, quiet = 200 * time.Millisecond, time.Second
	deadline := time.Now().Add(limit)
	var last uint64
	moved := time.Now()
	for {
		st, err := d.master.status(ctx)
		if err != nil {
			return moved, err
		}
		if st.Position != last {
			last, moved = st.Position, time.Now()
		} else if time.Since(moved) >= quiet {
			break
		}
		if err := sleepUntil(ctx, every, deadline, "the master's position to settle"); err != nil {
			return moved, err
		}
	}
	if d.slave == nil {
		return moved, nil
	}
	for {
		st, err := d.slave.status(ctx)
		if err != nil || st.Position >= last {
			return moved, err
		}
		if err := sleepUntil(ctx, every, deadline, fmt.Sprintf("the slave to apply up to %d (at %d)", last, st.Position)); err != nil {
			return moved, err
		}
	}
}

// sleepUntil sleeps for every, or fails once deadline has passed.
func sleepUntil(ctx context.Context, every time.Duration, deadline time.Time, what string) error {
	if time.Now().After(deadline) {
		return fmt.Errorf("waited in vain for %s", what)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(every):
		return nil
	}
}

// waitStreaming waits until `status --json` says the service runs and
// streams; a state it cannot leave by itself fails at once.
func (n *node) waitStreaming(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := n.status(ctx)
		switch {
		case err != nil:
			return err
		case st.Running && st.State == "streaming":
			return nil
		case !st.Running || st.State == "failed" || st.State == "needs_resync" || st.State == "apply_error":
			return fmt.Errorf("%s: service running=%t, state %s %s; see %s",
				n.name, st.Running, st.State, st.Error, filepath.Join(n.spool, "schedsync.log"))
		}
		what := fmt.Sprintf("%s to stream (state %s %s)", n.name, st.State, st.Error)
		if err := sleepUntil(ctx, 100*time.Millisecond, deadline, what); err != nil {
			return err
		}
	}
}

// status runs `schedsync status --json`. Only stdout is JSON: stderr may
// carry warnings, and exit 1 (running but not answering) still prints the
// object.
func (n *node) status(ctx context.Context) (status, error) {
	cmd := exec.CommandContext(ctx, n.bin, "--config", n.config, "status", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var st status
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		return st, fmt.Errorf("schedsync status --json (%s): %v, cannot read its output: %w\n%s%s",
			n.name, runErr, err, stdout.Bytes(), stderr.Bytes())
	}
	return st, nil
}

// run runs one schedsync command for the node and returns its output.
func (n *node) run(ctx context.Context, args ...string) ([]byte, error) {
	return benchkit.Run(ctx, n.bin, n.config, n.name, args...)
}
