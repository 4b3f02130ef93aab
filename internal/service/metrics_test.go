package service

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/schedsync/schedsync/internal/metrics"
)

// gather collects a master's and a slave's metrics: the counters and the
// status gauges, with every optional gauge present.
func gather(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	wal := int64(4096)
	out := map[string]*dto.MetricFamily{}
	for _, st := range []Status{
		{Role: "master", Name: "m1", State: StateStreaming, Generation: 3, Position: 42, LagSeconds: 1.5, BacklogBytes: 900,
			CaptureMode: "logical", SlotRetainedWALBytes: &wal, SpoolBytes: 1 << 20, SpoolSegments: 2,
			Slaves: []SlaveStatus{
				{Name: "s1", Connected: true, AppliedPosition: 40, BacklogBytes: 900, LastSeen: time.Unix(1700000000, 0)},
				{Name: "s2", AppliedPosition: 10},
			}},
		{Role: "slave", Name: "s1", State: StateApplyError, Generation: 3, Position: 40, ReceivedPosition: 41},
	} {
		m := metrics.New()
		m.Registry().MustRegister(&statusCollector{status: func() Status { return st }, version: "v-test"})
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			out[st.Role+" "+f.GetName()] = f
			out[f.GetName()] = f
		}
	}
	return out
}

func gaugeOf(t *testing.T, f *dto.MetricFamily, labels map[string]string) float64 {
	t.Helper()
	for _, m := range f.GetMetric() {
		ok := true
		for _, l := range m.GetLabel() {
			if v, want := labels[l.GetName()]; want && v != l.GetValue() {
				ok = false
			}
		}
		if ok {
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s has no sample with labels %v", f.GetName(), labels)
	return 0
}

func TestStatusGauges(t *testing.T) {
	fams := gather(t)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"master schedsync_capture_position", nil, 42},
		{"master schedsync_lag_seconds", nil, 1.5},
		{"master schedsync_connected_slaves", nil, 1},
		{"master schedsync_slave_connected", map[string]string{"slave": "s2"}, 0},
		{"master schedsync_slave_backlog_bytes", map[string]string{"slave": "s1"}, 900},
		{"master schedsync_slave_last_seen_timestamp_seconds", map[string]string{"slave": "s1"}, 1700000000},
		{"master schedsync_slot_retained_wal_bytes", nil, 4096},
		{"master schedsync_spool_segments", nil, 2},
		{"master schedsync_state", map[string]string{"state": "streaming"}, 1},
		{"master schedsync_state", map[string]string{"state": "failed"}, 0},
		{"master schedsync_info", map[string]string{"role": "master", "version": "v-test", "capture_mode": "logical"}, 1},
		{"slave schedsync_applied_position", nil, 40},
		{"slave schedsync_received_position", nil, 41},
		{"slave schedsync_state", map[string]string{"state": "apply_error"}, 1},
		{"slave schedsync_generation", nil, 3},
	} {
		f, ok := fams[c.name]
		if !ok {
			t.Errorf("%s: missing", c.name)
			continue
		}
		if got := gaugeOf(t, f, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := fams["slave schedsync_capture_position"]; ok {
		t.Errorf("a slave reports schedsync_capture_position")
	}
}

// TestDashboardAndAlertsUseRealMetrics: every schedsync_ metric that the
// Grafana dashboard and the alert rules query exists.
func TestDashboardAndAlertsUseRealMetrics(t *testing.T) {
	fams := gather(t)
	name := regexp.MustCompile(`schedsync_[a-z_]+`)
	for _, file := range []string{"../../configs/grafana-dashboard.json", "../../configs/prometheus-alerts.yml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := name.FindAllString(string(data), -1)
		if len(used) < 10 {
			t.Errorf("%s queries only %d schedsync metrics", file, len(used))
		}
		for _, n := range used {
			base := n
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(n, suffix); ok && fams[b] != nil && fams[b].GetType() == dto.MetricType_HISTOGRAM {
					base = b
				}
			}
			if fams[base] == nil {
				t.Errorf("%s uses %s, which schedsync does not export", file, n)
			}
		}
	}
}

// TestAlertsUseRealStates: every state an alert rule matches is one that
// schedsync_state reports; a misspelt one would never fire.
func TestAlertsUseRealStates(t *testing.T) {
	data, err := os.ReadFile("../../configs/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	matchers := regexp.MustCompile(`state=~?"([^"]+)"`).FindAllStringSubmatch(string(data), -1)
	if len(matchers) < 5 {
		t.Fatalf("found only %d state matchers in the alert rules", len(matchers))
	}
	for _, m := range matchers {
		for _, st := range strings.Split(m[1], "|") {
			if !slices.Contains(allStates, st) {
				t.Errorf("an alert matches state %q, which schedsync_state does not report (states: %v)", st, allStates)
			}
		}
	}
}

var _ prometheus.Collector = (*statusCollector)(nil)
