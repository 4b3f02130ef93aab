// Package metrics holds the counters of one schedsync service process,
// registered in its own Prometheus registry, and the last problems the
// service logged. The components count through small methods that are
// no-ops on a nil *Metrics, so code and tests that run a component alone
// need none.
//
// Gauges that mirror the node's status (positions, lag, state) are not
// kept here: the service computes them from its status at scrape time
// (internal/service), from memory only, so that a scrape never costs the
// repository a round trip.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "schedsync"

// Metrics are one service process's counters. A process keeps one for its
// whole life, across role changes (promote, switchover), so that counters
// never go back.
type Metrics struct {
	reg *prometheus.Registry

	txnsCaptured, changesCaptured prometheus.Counter
	txnsShipped, bytesShipped     prometheus.Counter
	txnsApplied, changesApplied   prometheus.Counter
	reconnects                    prometheus.Counter
	errors                        *prometheus.CounterVec
	applyBatch                    prometheus.Histogram

	events *Events
}

// New makes the counters in a registry of their own, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), events: NewEvents(eventsKept)}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	}
	m.txnsCaptured = counter("transactions_captured_total", "Transactions captured into the master's spool.")
	m.changesCaptured = counter("changes_captured_total", "Row changes captured into the master's spool.")
	m.txnsShipped = counter("transactions_shipped_total", "Transactions sent to slaves, counted once per slave.")
	m.bytesShipped = counter("shipped_bytes_total", "Spool bytes sent to slaves.")
	m.txnsApplied = counter("transactions_applied_total", "Transactions applied in the slave repository.")
	m.changesApplied = counter("changes_applied_total", "Row changes applied in the slave repository.")
	m.reconnects = counter("reconnects_total", "Connections of a slave to its master after the first one.")
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "errors_total",
		Help: "Errors and warnings the service logged, by the stage that logged them."}, []string{"kind"})
	m.applyBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "apply_batch_duration_seconds",
		Help: "Time of one apply group (one slave transaction), from reading its first transaction to its commit.",
		// 0.5 ms to about 16 s.
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.reg.MustRegister(m.txnsCaptured, m.changesCaptured, m.txnsShipped, m.bytesShipped,
		m.txnsApplied, m.changesApplied, m.reconnects, m.errors, m.applyBatch,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, k := range Kinds {
		m.errors.WithLabelValues(k) // every kind shows, at 0, from the start
	}
	return m
}

// Registry is where the counters are, for /metrics; the service registers
// its status collector in it too.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Events are the last problems logged.
func (m *Metrics) Events() *Events {
	if m == nil {
		return nil
	}
	return m.events
}

// Captured counts one transaction of changes row changes spooled on the
// master.
func (m *Metrics) Captured(changes int) {
	if m == nil {
		return
	}
	m.txnsCaptured.Inc()
	m.changesCaptured.Add(float64(changes))
}

// Shipped counts txns transactions in bytes spool bytes sent to a slave.
func (m *Metrics) Shipped(txns uint64, bytes int) {
	if m == nil {
		return
	}
	m.txnsShipped.Add(float64(txns))
	m.bytesShipped.Add(float64(bytes))
}

// Applied counts one committed apply group of txns transactions and
// changes row changes, which took took from its first read to its commit.
func (m *Metrics) Applied(txns, changes int, took time.Duration) {
	if m == nil {
		return
	}
	m.txnsApplied.Add(float64(txns))
	m.changesApplied.Add(float64(changes))
	m.applyBatch.Observe(took.Seconds())
}

// Reconnected counts a slave's connection to its master after the first.
func (m *Metrics) Reconnected() {
	if m == nil {
		return
	}
	m.reconnects.Inc()
}

// Kinds are the values of errors_total's kind label: the stage that
// logged the problem (the "stage" attribute of the components' loggers),
// and "service" for the rest.
var Kinds = []string{"capture", "spool", "ship", "apply", "backup", "restore", "service"}

// kindOf maps a stage attribute to a kind.
func kindOf(stage string) string {
	for _, k := range Kinds {
		if k == stage {
			return k
		}
	}
	return "service"
}

// problem counts one logged problem of stage.
func (m *Metrics) problem(stage string) string {
	k := kindOf(stage)
	m.errors.WithLabelValues(k).Inc()
	return k
}
