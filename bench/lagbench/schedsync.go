package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/schedsync/schedsync/internal/service"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// schedsync is the system under test: a master and a slave sync service,
// driven through the binary as an operator would.
type schedsync struct {
	w             *world
	opts          options
	capture       string // capture.mode: trigger or logical
	master, slave *node
}

// node is one schedsync service.
type node struct {
	bin    string
	name   string
	config string // the .properties file
	spool  string // spool.dir
}

func (s *schedsync) setup(ctx context.Context) error {
	port, err := benchkit.FreePort()
	if err != nil {
		return err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	common := []string{
		"sync.token=" + hex.EncodeToString(tok),
		"sync.listen=127.0.0.1:" + strconv.Itoa(port),
		"master.host=127.0.0.1",
		"master.port=" + strconv.Itoa(port),
		"capture.allow_no_pk=true", // pgbench_history has no primary key
		// In both files for simplicity: the slave ignores it, and the
		// master's install creates the publication and slot of logical mode.
		"capture.mode=" + s.capture,
		"log.level=" + s.opts.logLevel,
	}
	common = append(common, s.opts.set...)
	if s.master, err = s.newNode("lag-master", "master", s.w.masterURL(), common); err != nil {
		return err
	}
	if s.slave, err = s.newNode("lag-slave", "slave", s.w.slaveURL(), common); err != nil {
		return err
	}
	if _, err := s.master.run(ctx, "start"); err != nil {
		return err
	}
	_, err = s.slave.run(ctx, "start")
	return err
}

// newNode writes a node's config and runs `schedsync install` for it.
func (s *schedsync) newNode(name, role, url string, common []string) (*node, error) {
	n := &node{bin: s.opts.bin, name: name}
	var err error
	if n.config, n.spool, err = benchkit.WriteNodeConfig(s.w.dir, name, role, url, common); err != nil {
		return nil, err
	}
	if _, err := n.run(context.Background(), "install"); err != nil {
		return nil, err
	}
	return n, nil
}

func (s *schedsync) procs(ctx context.Context) ([]proc, error) {
	var out []proc
	for _, n := range []*node{s.master, s.slave} {
		st, err := service.QueryStatus(ctx, n.spool)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.name, err)
		}
		out = append(out, proc{Label: n.name + " service", PID: st.PID, Repl: true})
	}
	return out, nil
}

func (s *schedsync) stopSlave(ctx context.Context) error {
	_, err := s.slave.run(ctx, "stop")
	return err
}

func (s *schedsync) startSlave(ctx context.Context) error {
	_, err := s.slave.run(ctx, "start")
	return err
}

// captureLimit is how long the master may take to capture a backlog.
const captureLimit = 10 * time.Minute

func (s *schedsync) waitCaptured(ctx context.Context) error {
	if s.capture == "logical" {
		return s.waitSlotConfirmed(ctx)
	}
	return s.waitAuditEmpty(ctx)
}

// waitAuditEmpty waits until the audit table is empty: trigger capture
// deletes audit rows only once their transactions are durable in the spool.
func (s *schedsync) waitAuditEmpty(ctx context.Context) error {
	return poll(ctx, 20*time.Millisecond, captureLimit, "capture the backlog", func() (bool, error) {
		n, err := queryInt(ctx, s.w.masterURL(), `SELECT count(*) FROM schedsync.audit`)
		return n == 0, err
	})
}

// waitSlotConfirmed waits until the master service has confirmed its slot
// past the WAL flushed when called: logical capture confirms an LSN only
// once every transaction committed before it is durable in the spool. The
// flush position, read after the caller's last commit returned, is at or
// past that commit's end, and the walsender sends up to it, so the
// service's keepalive-driven confirmations reach it even with nothing
// published after the marker. The master's status position, the catch-up
// target, is final only then: in logical mode it grows as the walsender
// decodes the backlog from the WAL, not when pgbench commits.
func (s *schedsync) waitSlotConfirmed(ctx context.Context) error {
	mst, err := service.QueryStatus(ctx, s.master.spool)
	if err != nil {
		return fmt.Errorf("master status: %w", err)
	}
	if mst.Slot == "" {
		return fmt.Errorf("master status names no replication slot (capture mode %q)", mst.CaptureMode)
	}
	target, err := queryInt(ctx, s.w.masterURL(), `SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint`)
	if err != nil {
		return fmt.Errorf("master WAL position: %w", err)
	}
	return poll(ctx, 20*time.Millisecond, captureLimit, "capture the backlog", func() (bool, error) {
		n, err := queryInt(ctx, s.w.masterURL(), `SELECT coalesce(pg_wal_lsn_diff(confirmed_flush_lsn, '0/0'), 0)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, mst.Slot)
		return n >= target, err
	})
}

// catchUpWatch reads the slave's received and applied positions from its
// control socket (what `status --json` prints) against the master's last
// position.
func (s *schedsync) catchUpWatch(ctx context.Context) (func(context.Context) (catchUpState, error), error) {
	mst, err := service.QueryStatus(ctx, s.master.spool)
	if err != nil {
		return nil, fmt.Errorf("master status: %w", err)
	}
	from, err := queryInt(ctx, s.w.slaveURL(), `SELECT applied_position FROM schedsync.state WHERE id = 1`)
	if err != nil {
		return nil, fmt.Errorf("slave applied position: %w", err)
	}
	target := mst.Position
	return func(ctx context.Context) (catchUpState, error) {
		st, err := service.QueryStatus(ctx, s.slave.spool)
		if err != nil {
			return catchUpState{}, fmt.Errorf("slave status: %w", err)
		}
		return catchUpState{From: uint64(from), Received: st.ReceivedPosition, Applied: st.Position, Target: target}, nil
	}, nil
}

// close stops both services; errors are only reported.
func (s *schedsync) close() {
	for _, n := range []*node{s.slave, s.master} {
		if n == nil {
			continue
		}
		if _, err := n.run(context.Background(), "stop"); err != nil {
			fmt.Fprintln(os.Stderr, "lagbench:", err)
		}
	}
}

// run runs one schedsync command for the node and returns its output.
func (n *node) run(ctx context.Context, args ...string) ([]byte, error) {
	return benchkit.Run(ctx, n.bin, n.config, n.name, args...)
}
