package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/spool"
)

// ErrRoleChanged is what a node's Run returns once the node took another
// role (persisted in node.json): RunService then starts the node of that
// role in the same process.
var ErrRoleChanged = errors.New("the node changed role")

// PromoteResult is what `schedsync promote` reports.
type PromoteResult struct {
	Name string `json:"name"`
	// Generation is the node's generation as master.
	Generation uint64 `json:"generation"`
	// AlreadyMaster: the node was master already; nothing was done.
	AlreadyMaster bool `json:"already_master,omitempty"`
	// AppliedPosition is the last position applied from the old master,
	// and AppliedAt when that was: the master's commit time of it when the
	// node applied it while running, or the time the slave applied it.
	AppliedPosition uint64    `json:"applied_position"`
	AppliedAt       time.Time `json:"applied_at,omitzero"`
	// Dropped is how many received transactions were not applied (only
	// with --force, when apply could not apply them); they are kept in
	// DroppedDir.
	Dropped    uint64 `json:"dropped,omitempty"`
	DroppedDir string `json:"dropped_dir,omitempty"`
	// CaptureEpoch is the new capture history (hex); it forks from the
	// old master's at AppliedPosition.
	CaptureEpoch    string  `json:"capture_epoch"`
	SequencesRaised int     `json:"sequences_raised"`
	Listen          string  `json:"listen"`
	TookSeconds     float64 `json:"took_seconds"`
	// HookError: the node is master, but failover.promote_command failed.
	HookError string `json:"hook_error,omitempty"`
	// MasterSynchronous is the old master's failover.synchronous state as
	// this slave last heard it; nil if it was not synchronous.
	MasterSynchronous *MasterSync `json:"master_synchronous,omitempty"`
}

// promoter turns a slave whose receiving and applying have stopped into a
// master: it applies what the spool holds, installs capture with a history
// that forks at the applied position, raises the sequences, and records
// the next generation, in the repository and in node.json.
type promoter struct {
	cfg     config.Config
	log     *slog.Logger
	connCfg *pgx.ConnConfig
	// sp is the slave's open spool; promote closes it.
	sp         *spool.Spool
	generation uint64    // the highest generation the node has seen
	lastCommit time.Time // master commit time of the last transaction applied, if known
	force      bool
}

// promoteTimeout bounds applying what was received, on top of the rest.
const promoteApplyTimeout = 5 * time.Minute

func (p *promoter) run(ctx context.Context) (PromoteResult, error) {
	start := time.Now()
	res := PromoteResult{Name: p.cfg.Node.Name, Listen: p.cfg.Sync.Listen}
	// Before anything changes: the promoted node installs capture.
	if err := checkGrants(ctx, p.connCfg, grantsFor(p.cfg, true, false), "promote"); err != nil {
		p.sp.Close()
		return res, err
	}
	ms, err := LoadMasterSync(p.cfg.Spool.Dir)
	if err != nil {
		p.log.Warn("could not read the old master's synchronous state", "err", err)
	}
	res.MasterSynchronous = ms
	target := p.sp.DurablePosition()
	applied, err := p.drain(ctx, target)
	res.AppliedPosition = applied
	if err != nil && !p.force {
		p.sp.Close()
		return res, fmt.Errorf("apply stopped at position %d, before the %d received (%w); fix that and run promote again, or run promote --force to promote without the %d transactions not applied (they are kept in spool.dir)",
			applied, target, err, target-applied)
	}
	if err := p.sp.Close(); err != nil {
		return res, fmt.Errorf("close the spool: %w", err)
	}
	if applied < target {
		// --force: the spool's tail was never applied. The new master's
		// spool must not serve it, so it is set aside whole.
		res.Dropped = target - applied
		res.DroppedDir = filepath.Join(p.cfg.Spool.Dir, fmt.Sprintf("unapplied-%s", time.Now().UTC().Format("20060102T150405Z")))
		if err := os.Rename(filepath.Join(p.cfg.Spool.Dir, "spool"), res.DroppedDir); err != nil {
			return res, fmt.Errorf("set the unapplied spool aside: %w", err)
		}
		p.log.Warn("promote --force: transactions received but not applied were set aside", "count", res.Dropped, "dir", res.DroppedDir)
	}

	conn, err := pgx.ConnectConfig(ctx, p.connCfg)
	if err != nil {
		return res, fmt.Errorf("connect to the repository: %w", err)
	}
	defer conn.Close(context.Background())
	var epoch int64
	var at time.Time
	if err := conn.QueryRow(ctx, `SELECT capture_epoch, updated_at FROM schedsync.state WHERE id = 1`).Scan(&epoch, &at); err != nil {
		return res, fmt.Errorf("read schedsync.state: %w", err)
	}
	res.AppliedAt = at
	// A master demoted by a switchover left its repository read only
	// for the scheduler's sessions.
	if err := setReadOnly(ctx, conn, false); err != nil {
		return res, err
	}
	if !p.lastCommit.IsZero() {
		res.AppliedAt = p.lastCommit
	}
	newEpoch, err := capture.Promote(ctx, conn, capture.InstallOptions{
		Schemas: p.cfg.Repository.Schemas, Tables: p.cfg.Repository.Tables, AllowNoPK: p.cfg.Capture.AllowNoPK,
		Role: config.RoleMaster, Mode: p.cfg.Capture.Mode, DDL: p.cfg.DDL.Replicate,
	}, capture.Fork{Parent: uint64(epoch), Position: applied})
	if err != nil {
		return res, fmt.Errorf("install capture: %w", err)
	}
	res.CaptureEpoch = epochText(newEpoch)
	if res.SequencesRaised, err = capture.CatchUpSequences(ctx, conn, p.cfg.Repository.Schemas, p.log); err != nil {
		return res, err
	}
	have, _, err := repositoryGeneration(ctx, conn)
	if err != nil {
		return res, err
	}
	res.Generation = max(have, p.generation) + 1
	if _, err := syncRepositoryGeneration(ctx, conn, res.Generation); err != nil {
		return res, err
	}
	if err := SaveNodeState(p.cfg.Spool.Dir, NodeState{
		Role: config.RoleMaster, Generation: res.Generation, Why: "promote", Since: time.Now().UTC(),
	}); err != nil {
		return res, err
	}
	p.log.Warn("promoted to master", "generation", res.Generation, "applied_position", applied,
		"capture_epoch", res.CaptureEpoch, "parent_capture_epoch", epochText(uint64(epoch)))
	if err := RunHook(ctx, p.cfg, p.log, HookPromote, config.RoleMaster, res.Generation); err != nil {
		res.HookError = err.Error()
	}
	res.TookSeconds = time.Since(start).Seconds()
	return res, nil
}

// drain applies the spool up to target, and returns the applied position.
func (p *promoter) drain(ctx context.Context, target uint64) (uint64, error) {
	conn, err := pgx.ConnectConfig(ctx, p.connCfg)
	if err != nil {
		return 0, fmt.Errorf("connect to the repository: %w", err)
	}
	applied, err := apply.ReadApplied(ctx, conn)
	conn.Close(context.Background())
	if err != nil || applied >= target {
		return applied, err
	}
	ctx, cancel := context.WithTimeout(ctx, promoteApplyTimeout)
	defer cancel()
	var last time.Time
	a := apply.New(apply.Options{
		ConnConfig: p.connCfg, BatchMaxBytes: int(p.cfg.Apply.BatchMaxBytes), Logger: p.log,
		OnApplied: func(pos uint64, commit time.Time) {
			if !commit.IsZero() {
				last = commit
			}
			if pos >= target {
				cancel()
			}
		},
	}, apply.SpoolLog(p.sp))
	err = a.Run(ctx)
	if !last.IsZero() {
		p.lastCommit = last
	}
	if a.Applied() >= target {
		return a.Applied(), nil
	}
	if err == nil {
		err = fmt.Errorf("applying took longer than %s", promoteApplyTimeout)
	}
	return a.Applied(), err
}

// PromoteStopped promotes a slave whose service is not running: the
// caller holds the pid lock, so no service reads the spool meanwhile.
func PromoteStopped(ctx context.Context, cfg config.Config, log *slog.Logger, force bool) (PromoteResult, error) {
	connCfg, err := RepositoryConnConfig(cfg.Repository.URL, "promote")
	if err != nil {
		return PromoteResult{}, err
	}
	st, _, err := LoadNodeState(cfg.Spool.Dir)
	if err != nil {
		return PromoteResult{}, err
	}
	sp, err := spool.Open(spoolOptions(cfg, filepath.Join(cfg.Spool.Dir, "spool"), log))
	if err != nil {
		return PromoteResult{}, fmt.Errorf("open spool: %w", err)
	}
	p := &promoter{cfg: cfg, log: log, connCfg: connCfg, sp: sp, generation: st.Generation, force: force}
	return p.run(ctx)
}
