package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/fsutil"
)

// NodeState is what a node learned of its place among its peers, kept in
// spool.dir/node.json: node.role in the config file is only the initial
// role, and after a promote, a switchover or a fail-back the persisted
// role and generation win.
//
// The generation orders masters in time: the first master's is 1, and a
// promotion makes the promoted node's one higher than any it has seen. A
// master that learns of a higher generation than its own was replaced and
// is fenced; a node never follows a master of a lower generation than it
// has seen. The generation is also kept in schedsync.state of the node's
// repository, and the higher of the two counts.
type NodeState struct {
	Role       config.Role `json:"role"`
	Generation uint64      `json:"generation"`
	// MasterHost and MasterPort: the master a slave follows, when it
	// learned it from a switchover rather than from master.host/port.
	MasterHost string `json:"master_host,omitempty"`
	MasterPort int    `json:"master_port,omitempty"`
	// Why and Since: the event that set the role (start, promote,
	// switchover, failback) and when.
	Why   string    `json:"why,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

const nodeStateFile = "node.json"

// LoadNodeState reads spool.dir/node.json; ok is false when there is none
// (a node that never ran, or ran before generations).
func LoadNodeState(dir string) (st NodeState, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, nodeStateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return NodeState{}, false, nil
	}
	if err != nil {
		return NodeState{}, false, fmt.Errorf("read the node's persisted role: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return NodeState{}, false, fmt.Errorf("%s is corrupt (%v): it holds this node's role and generation after a failover; restore it, or remove it to start from node.role and the generation kept in the repository",
			filepath.Join(dir, nodeStateFile), err)
	}
	if st.Role != config.RoleMaster && st.Role != config.RoleSlave {
		return NodeState{}, false, fmt.Errorf("%s: role %q is not master or slave", filepath.Join(dir, nodeStateFile), st.Role)
	}
	return st, true, nil
}

// SaveNodeState writes spool.dir/node.json durably.
func SaveNodeState(dir string, st NodeState) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := fsutil.WriteJSONAtomic(filepath.Join(dir, nodeStateFile), st, 0o600); err != nil {
		return fmt.Errorf("save the node's role and generation: %w", err)
	}
	return nil
}

// Effective is cfg with the persisted role, and the master a slave learned
// from a switchover, in place of the config file's: what the node is now.
func Effective(cfg config.Config) (config.Config, NodeState, error) {
	st, ok, err := LoadNodeState(cfg.Spool.Dir)
	if err != nil || !ok {
		return cfg, NodeState{Role: cfg.Node.Role}, err
	}
	cfg.Node.Role = st.Role
	if st.Role == config.RoleSlave && st.MasterHost != "" {
		cfg.Master.Host, cfg.Master.Port = st.MasterHost, st.MasterPort
	}
	return cfg, st, nil
}

// repositoryGeneration reads the generation kept in schedsync.state; ok
// is false when the column is not there (installed by an older schedsync:
// schedsync install adds it).
func repositoryGeneration(ctx context.Context, conn *pgx.Conn) (g uint64, ok bool, err error) {
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = to_regclass('schedsync.state') AND attname = 'generation' AND NOT attisdropped)`).Scan(&ok)
	if err != nil || !ok {
		return 0, false, err
	}
	var v int64
	if err := conn.QueryRow(ctx, `SELECT generation FROM schedsync.state WHERE id = 1`).Scan(&v); err != nil {
		return 0, false, fmt.Errorf("read the generation in schedsync.state: %w", err)
	}
	return uint64(v), true, nil
}

// syncRepositoryGeneration makes the generation in schedsync.state at
// least g and returns the higher of the two: the node's generation.
func syncRepositoryGeneration(ctx context.Context, conn *pgx.Conn, g uint64) (uint64, error) {
	have, ok, err := repositoryGeneration(ctx, conn)
	if err != nil || !ok || have >= g {
		return max(have, g), err
	}
	if _, err := conn.Exec(ctx, `UPDATE schedsync.state SET generation = GREATEST(generation, $1) WHERE id = 1`, int64(g)); err != nil {
		return g, fmt.Errorf("record generation %d in schedsync.state: %w", g, err)
	}
	return g, nil
}
