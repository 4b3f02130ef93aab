package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
)

// printStatus writes the status as an aligned block for people; scripts
// use --json. now is taken here so "ago" columns agree with each other.
func printStatus(w io.Writer, st service.Status) {
	formatStatus(w, st, time.Now())
}

func formatStatus(w io.Writer, st service.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	role := st.Role
	if st.ConfigRole != "" {
		role += fmt.Sprintf(" (persisted after a failover; node.role in the config file says %s)", st.ConfigRole)
	}
	row("role", role)
	row("generation", strconv.FormatUint(st.Generation, 10))
	row("name", st.Name)
	running := "no"
	if st.Running {
		running = "yes"
		if st.PID > 0 {
			running += fmt.Sprintf(" (pid %d)", st.PID)
		}
	}
	row("running", running)
	row("state", st.State)
	if st.Error != "" {
		row("error", st.Error)
	}
	if st.AutoFailoverHeld != "" {
		row("auto failover held", st.AutoFailoverHeld)
	}
	for _, w := range st.Warnings {
		row("warning", w)
	}
	if st.Role == string(config.RoleSlave) {
		if st.Master != "" {
			row("master", st.Master)
		}
		row("applied position", pos(st.Position))
		row("received position", pos(st.ReceivedPosition))
		if st.CaptureEpoch != "" {
			row("capture history", st.CaptureEpoch)
		}
	} else {
		row("position", pos(st.Position))
		if st.CaptureMode != "" {
			row("capture", st.CaptureMode)
		}
		if st.CaptureEpoch != "" {
			row("capture history", st.CaptureEpoch)
		}
		if st.Slot != "" {
			slot := st.Slot + " (missing)"
			if st.SlotRetainedWALBytes != nil {
				slot = fmt.Sprintf("%s, retains %s of WAL", st.Slot, humanBytes(*st.SlotRetainedWALBytes))
			}
			row("replication slot", slot)
		}
	}
	switch st.Synchronous {
	case service.SyncOn:
		row("synchronous", "on: commits wait until a slave holds them")
	case service.SyncDegraded:
		row("synchronous", "degraded: asynchronous since "+st.SynchronousSince.Local().Format(time.RFC3339)+"; synchronous again once a slave has caught up")
	}
	row("lag", fmt.Sprintf("%.1fs", st.LagSeconds))
	row("backlog", humanBytes(st.BacklogBytes))
	if !st.StartedAt.IsZero() {
		row("started", st.StartedAt.Local().Format(time.RFC3339))
	}
	if !st.UpdatedAt.IsZero() {
		row("updated", ago(now, st.UpdatedAt))
	}
	tw.Flush()
	if st.Role != string(config.RoleMaster) {
		return
	}
	if len(st.Slaves) == 0 {
		fmt.Fprintln(w, "slaves: none")
		return
	}
	fmt.Fprintln(w, "slaves:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tCONNECTED\tAPPLIED\tBACKLOG\tNEEDS RESYNC\tLAST SEEN")
	for _, s := range st.Slaves {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", s.Name, yesNo(s.Connected), pos(s.AppliedPosition),
			humanBytes(s.BacklogBytes), yesNo(s.NeedsResync), ago(now, s.LastSeen))
	}
	tw.Flush()
}

func pos(p uint64) string { return strconv.FormatUint(p, 10) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanBytes is a size for people: 1.2GiB, 300KiB, 17B.
func humanBytes(n int64) string { return config.Size(n).Approx() }

// ago is how long before now t was, to the second, or "never".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}
