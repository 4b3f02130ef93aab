package main

import (
	"strings"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/service"
)

func TestFormatStatusMaster(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	st := service.Status{
		Role: "master", ConfigRole: "slave", Generation: 3, Name: "node01", Running: true, PID: 1234, State: service.StateStreaming,
		Position: 981234, LagSeconds: 0.25, BacklogBytes: 3 << 20, UpdatedAt: now.Add(-2 * time.Second),
		Slaves: []service.SlaveStatus{
			{Name: "node02", Connected: true, AppliedPosition: 981200, BacklogBytes: 1500, LastSeen: now.Add(-time.Second)},
			{Name: "dr-site-03", NeedsResync: true, AppliedPosition: 12, BacklogBytes: 5 << 30},
		},
	}
	var b strings.Builder
	formatStatus(&b, st, now)
	want := `role:        master (persisted after a failover; node.role in the config file says slave)
generation:  3
name:        node01
running:     yes (pid 1234)
state:       streaming
position:    981234
lag:         0.2s
backlog:     3MiB
updated:     2s ago
slaves:
  NAME        CONNECTED  APPLIED  BACKLOG  NEEDS RESYNC  LAST SEEN
  node02      yes        981200   1.5KiB   no            1s ago
  dr-site-03  no         12       5GiB     yes           never
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestFormatStatusSlave(t *testing.T) {
	st := service.Status{Role: "slave", Name: "node02", State: service.StateNeedsResync,
		Position: 10, ReceivedPosition: 12, Master: "10.0.0.1:7700", Error: "slave needs a re-sync"}
	var b strings.Builder
	formatStatus(&b, st, time.Now())
	for _, want := range []string{"running:            no\n", "state:              needs_resync\n",
		"error:              slave needs a re-sync\n", "master:             10.0.0.1:7700\n",
		"applied position:   10\n", "received position:  12\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "slaves") {
		t.Errorf("a slave's status shows a slaves table:\n%s", b.String())
	}
}

func TestPromoteSaysWhatSynchronousMeans(t *testing.T) {
	since := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		ms   *service.MasterSync
		want string
	}{
		{nil, ""},
		{&service.MasterSync{State: service.SyncOn, SynchronousSlaves: 1, Slaves: 1}, "nothing acknowledged was lost"},
		{&service.MasterSync{State: service.SyncOn, SynchronousSlaves: 1, Slaves: 2}, "promote the slave with the highest received_position"},
		{&service.MasterSync{State: service.SyncDegraded, DegradedSince: since, SynchronousSlaves: 1, Slaves: 1}, "ASYNCHRONOUS since 2026-12-02T10:00:00Z"},
	}
	for _, c := range cases {
		got := syncLine(service.PromoteResult{MasterSynchronous: c.ms})
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%+v: %q, want it to say %q", c.ms, got, c.want)
		}
	}
}
