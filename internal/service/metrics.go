package service

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/schedsync/schedsync/internal/metrics"
)

// allStates are the values of schedsync_state's label: every state a
// node reports, so that a dashboard sees each one at 0 or 1.
var allStates = []string{StateStarting, StateConnecting, StateStreaming, StateNeedsResync, StateMasterUnavailable,
	StateApplyError, StateRepositoryUnavailable, StateFailed, StatePromoting, StateFenced, StateStopped, StateDiskFull, StateSpoolError}

// statusCollector turns the node's status into gauges at scrape time.
// Status is built from memory (positions, the registry, the slot's
// retained WAL that capture reads every few seconds), so a scrape never
// waits for the repository.
type statusCollector struct {
	status  func() Status
	version string
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(metrics.Namespace+"_"+name, help, labels, nil)
}

var (
	descUp         = desc("up", "1 while the sync service runs.")
	descInfo       = desc("info", "Always 1; the labels describe the node.", "role", "name", "version", "capture_mode")
	descState      = desc("state", "1 for the node's current state, 0 for the others.", "state")
	descGeneration = desc("generation", "The node's generation, raised by every promote.")
	descCapture    = desc("capture_position", "Master: last position captured into the spool.")
	descApplied    = desc("applied_position", "Slave: last position applied (committed) in the slave repository.")
	descReceived   = desc("received_position", "Slave: last position durable in the slave's spool.")
	descLag        = desc("lag_seconds", "Slave: how far the applied state trails the master; master: the largest lag of its slaves.")
	descBacklog    = desc("backlog_bytes", "Slave: spool bytes received and not applied; master: the largest backlog of its slaves.")
	descConnected  = desc("connected_slaves", "Master: slaves connected now.")
	descSlaveConn  = desc("slave_connected", "Master: 1 if the slave is connected.", "slave")
	descSlaveBack  = desc("slave_backlog_bytes", "Master: spool bytes the slave has not applied yet.", "slave")
	descSlaveAppl  = desc("slave_applied_position", "Master: the slave's applied position.", "slave")
	descSlaveSeen  = desc("slave_last_seen_timestamp_seconds", "Master: when the master last heard from the slave (unix time).", "slave")
	descSpoolBytes = desc("spool_bytes", "Bytes in spool.dir's segment files.")
	descSpoolSegs  = desc("spool_segments", "Segment files in spool.dir.")
	descSlotWAL    = desc("slot_retained_wal_bytes", "Master, logical capture: WAL the replication slot keeps on the master.")
	descSync       = desc("synchronous", "failover.synchronous: 1 for the current state (on: commits wait for slaves; degraded: asynchronous for now), 0 for the other; on a slave, what its master said.", "state")
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descUp, 1)
	gauge(descInfo, 1, st.Role, st.Name, c.version, st.CaptureMode)
	for _, s := range allStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		gauge(descState, v, s)
	}
	gauge(descGeneration, float64(st.Generation))
	gauge(descLag, st.LagSeconds)
	gauge(descBacklog, float64(st.BacklogBytes))
	if st.Role == "master" {
		gauge(descCapture, float64(st.Position))
		connected := 0
		for _, s := range st.Slaves {
			v := 0.0
			if s.Connected {
				v = 1
				connected++
			}
			gauge(descSlaveConn, v, s.Name)
			gauge(descSlaveBack, float64(s.BacklogBytes), s.Name)
			gauge(descSlaveAppl, float64(s.AppliedPosition), s.Name)
			if !s.LastSeen.IsZero() {
				gauge(descSlaveSeen, float64(s.LastSeen.UnixMilli())/1000, s.Name)
			}
		}
		gauge(descConnected, float64(connected))
		if st.SlotRetainedWALBytes != nil {
			gauge(descSlotWAL, float64(*st.SlotRetainedWALBytes))
		}
	} else {
		gauge(descApplied, float64(st.Position))
		gauge(descReceived, float64(st.ReceivedPosition))
	}
	gauge(descSpoolBytes, float64(st.SpoolBytes))
	gauge(descSpoolSegs, float64(st.SpoolSegments))
	if st.Synchronous != "" {
		for _, s := range []string{SyncOn, SyncDegraded} {
			v := 0.0
			if s == st.Synchronous {
				v = 1
			}
			gauge(descSync, v, s)
		}
	}
}
