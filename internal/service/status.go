package service

import (
	"encoding/json"
	"fmt"
	"time"
)

// States of a node, as `status` reports them (docs/DESIGN.md lists the contract
// ones; more may be added).
const (
	StateStopped           = "stopped"
	StateStarting          = "starting"
	StateConnecting        = "connecting"   // slave: dialling or handshaking with the master
	StateStreaming         = "streaming"    // master: capturing; slave: receiving and applying
	StateNeedsResync       = "needs_resync" // slave refused for its backlog
	StateMasterUnavailable = "master_unavailable"
	StateApplyError        = "apply_error" // slave: apply stopped on an error it cannot get past
	// StateRepositoryUnavailable: a slave's own repository is unreachable;
	// it keeps receiving and retries apply with backoff.
	StateRepositoryUnavailable = "repository_unavailable"
	StateFailed                = "failed"
	// StatePromoting: a slave is being promoted to master.
	StatePromoting = "promoting"
	// StateFenced: a master learned of a higher generation than its own
	// (it was replaced by a promotion) and no longer serves.
	StateFenced = "fenced"
	// StateDiskFull: a slave could not write its spool for lack of space
	// (or quota); receiving is paused, apply goes on, and receiving
	// resumes by itself once the spool directory can be written.
	StateDiskFull = "disk_full"
	// StateSpoolError: the same after another write error (EIO, ...).
	StateSpoolError = "spool_error"
)

// epochText is a capture epoch as status shows it; "" when unknown.
func epochText(e uint64) string {
	if e == 0 {
		return ""
	}
	return fmt.Sprintf("%016x", e)
}

// Status is what `status --json` prints. The fields named in docs/DESIGN.md are
// contract: role, running, state, position, received_position (slave),
// lag_seconds, backlog_bytes and, on a master, slaves.
type Status struct {
	Role string `json:"role"`
	// ConfigRole is node.role in the config file, shown when the role the
	// node persisted after a promote, switchover or fail-back differs.
	ConfigRole string `json:"config_role,omitempty"`
	// Generation is the node's generation (see NodeState).
	Generation uint64 `json:"generation"`
	Name       string `json:"name"`
	Running    bool   `json:"running"`
	State      string `json:"state"`
	// Position is the master's last captured position, or the slave's
	// last applied one.
	Position uint64 `json:"position"`
	// ReceivedPosition is the last position durable in a slave's spool.
	ReceivedPosition uint64 `json:"received_position"`
	// LagSeconds: on a slave, how far the applied state trails the master
	// (commit time of the newest change received but not applied, or 0 when
	// caught up); on a master, the largest lag of its connected slaves.
	LagSeconds float64 `json:"lag_seconds"`
	// BacklogBytes: on a slave, spool bytes received but not applied; on a
	// master, the largest backlog of the slaves that still count.
	BacklogBytes int64         `json:"backlog_bytes"`
	Slaves       []SlaveStatus `json:"slaves"`
	// SpoolBytes and SpoolSegments are the size of the node's spool:
	// bytes in its segment files and their number.
	SpoolBytes    int64 `json:"spool_bytes"`
	SpoolSegments int   `json:"spool_segments"`
	// Synchronous is failover.synchronous on a master: "on" (commits wait
	// for slaves) or "degraded" (asynchronous since SynchronousSince);
	// empty when off. On a slave, what its master last said.
	Synchronous      string    `json:"synchronous,omitempty"`
	SynchronousSince time.Time `json:"synchronous_degraded_since,omitzero"`
	// CaptureMode is the master's capture.mode; in logical mode Slot is
	// its replication slot and SlotRetainedWALBytes the WAL the slot keeps
	// on the master (an orphaned or stuck slot makes it grow).
	CaptureMode string `json:"capture_mode,omitempty"`
	// CaptureEpoch names the capture history (hex): on a master, the one
	// capture spools into; on a slave, the one its data belongs to. A
	// slave applies only changes of its own history.
	CaptureEpoch         string `json:"capture_epoch,omitempty"`
	Slot                 string `json:"slot,omitempty"`
	SlotRetainedWALBytes *int64 `json:"slot_retained_wal_bytes,omitempty"`
	// AutoFailoverHeld (slave, failover.auto) says why the slave does not
	// promote itself although its master is unreachable.
	AutoFailoverHeld string `json:"auto_failover_held,omitempty"`
	// Warnings (master) are the last tables that schema changes created
	// and capture could not take (no primary key, unlogged).
	Warnings []string `json:"warnings,omitempty"`
	// Master is the master's sync address (slave only).
	Master    string    `json:"master,omitempty"`
	Error     string    `json:"error,omitempty"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// SlaveStatus is one slave as its master sees it.
type SlaveStatus struct {
	Name             string    `json:"name"`
	Connected        bool      `json:"connected"`
	AppliedPosition  uint64    `json:"applied_position"`
	ReceivedPosition uint64    `json:"received_position"`
	BacklogBytes     int64     `json:"backlog_bytes"`
	NeedsResync      bool      `json:"needs_resync"`
	LastSeen         time.Time `json:"last_seen,omitzero"`
	Address          string    `json:"address,omitempty"`
}

// MarshalJSON leaves slaves out on a slave and prints an empty list, not
// null, on a master without slaves.
func (s Status) MarshalJSON() ([]byte, error) {
	type plain Status
	if s.Role != "master" {
		return json.Marshal(struct {
			plain
			Slaves []SlaveStatus `json:"slaves,omitempty"`
		}{plain: plain(s)})
	}
	if s.Slaves == nil {
		s.Slaves = []SlaveStatus{}
	}
	return json.Marshal(plain(s))
}
