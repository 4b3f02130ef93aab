package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
)

// TestObservability is issue 15's end-to-end check: a master and a slave,
// each serving http.listen (the slave with http.token), under a Quartz
// workload. /metrics must parse with Prometheus' own text parser and its
// position and throughput counters must grow; /api/status must be
// status --json; no secret may show; and the master's status page, loaded
// in a real headless Chromium, must show the slave, its state and a lag
// chart with points, and follow when the slave goes away.
func TestObservability(t *testing.T) {
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	mport, sport := freePort(t), freePort(t)
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	httpToken := "http-" + hex.EncodeToString(tok)
	w := newWorldWith(t, ctx, "logical",
		[]string{"http.listen=127.0.0.1:" + strconv.Itoa(mport)},
		[]string{"http.listen=127.0.0.1:" + strconv.Itoa(sport), "http.token=" + httpToken})
	l, ok := w.installAndLoad(t, ctx)
	if !ok {
		return
	}
	master := scraper{base: fmt.Sprintf("http://127.0.0.1:%d", mport)}
	slave := scraper{base: fmt.Sprintf("http://127.0.0.1:%d", sport), token: httpToken}
	secrets := []string{httpToken, syncToken(t, w.master)}

	t.Run("metrics grow", func(t *testing.T) {
		m0, s0 := master.metrics(t), slave.metrics(t)
		grow := func(who string, sc scraper, before map[string]*dto.MetricFamily, names ...string) {
			eventually.True(t, who+" counters to grow", 30*time.Second, func() (bool, string) {
				now := sc.metrics(t)
				for _, n := range names {
					if value(now, n) <= value(before, n) {
						return false, fmt.Sprintf("%s: %v, was %v", n, value(now, n), value(before, n))
					}
				}
				return true, ""
			})
		}
		grow("the master's", master, m0, "schedsync_capture_position", "schedsync_transactions_captured_total",
			"schedsync_changes_captured_total", "schedsync_transactions_shipped_total", "schedsync_shipped_bytes_total")
		grow("the slave's", slave, s0, "schedsync_applied_position", "schedsync_received_position",
			"schedsync_transactions_applied_total", "schedsync_changes_applied_total", "schedsync_apply_batch_duration_seconds")
		m := master.metrics(t)
		for name, want := range map[string]float64{"schedsync_connected_slaves": 1, "schedsync_up": 1, "schedsync_generation": 1} {
			if got := value(m, name); got != want {
				t.Errorf("master %s = %v, want %v", name, got, want)
			}
		}
		if got := labelled(m, "schedsync_state", "state", "streaming"); got != 1 {
			t.Errorf("master schedsync_state{state=\"streaming\"} = %v, want 1", got)
		}
		if got := labelled(m, "schedsync_slave_connected", "slave", w.slave.name); got != 1 {
			t.Errorf("master schedsync_slave_connected{slave=%q} = %v, want 1", w.slave.name, got)
		}
		if value(m, "schedsync_spool_bytes") <= 0 || value(m, "schedsync_spool_segments") < 1 {
			t.Errorf("master spool gauges: %v bytes, %v segments", value(m, "schedsync_spool_bytes"), value(m, "schedsync_spool_segments"))
		}
		if _, ok := m["schedsync_slot_retained_wal_bytes"]; !ok {
			t.Errorf("a logical master has no schedsync_slot_retained_wal_bytes")
		}
	})

	t.Run("token and secrets", func(t *testing.T) {
		if code, _ := get(t, slave.base+"/metrics", ""); code != http.StatusUnauthorized {
			t.Errorf("slave /metrics without the token: HTTP %d, want 401", code)
		}
		for _, sc := range []scraper{master, slave} {
			for _, path := range []string{"/", "/metrics", "/api/status", "/api/history"} {
				code, body := get(t, sc.base+path, sc.token)
				if code != http.StatusOK {
					t.Errorf("%s%s: HTTP %d", sc.base, path, code)
				}
				for _, s := range secrets {
					if strings.Contains(body, s) {
						t.Errorf("%s%s shows a secret", sc.base, path)
					}
				}
			}
		}
		// /api/status is status --json's object.
		_, body := get(t, master.base+"/api/status", "")
		for _, field := range []string{`"role": "master"`, `"state": "streaming"`, `"slaves": [`, `"name": "` + w.slave.name + `"`} {
			if !strings.Contains(body, field) {
				t.Errorf("/api/status lacks %s:\n%s", field, body)
			}
		}
	})

	t.Run("page in a browser", func(t *testing.T) { w.checkPage(t, master.base) })
	l.stop()
}

// checkPage loads the master's status page in headless Chromium and reads
// the rendered DOM: the slave's row and state, and the lag chart. Then
// the slave stops while the workload goes on, and the page must show it
// disconnected and the lag rising, without a reload.
func (w *world) checkPage(t *testing.T, base string) {
	browser := chromium(t)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless, chromedp.WindowSize(420, 900))...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first Run starts the browser, whose life is its context's: no
	// timeout on that one (chromedp.Run's rule); later steps have their own.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	step := func(d time.Duration) (context.Context, context.CancelFunc) { return context.WithTimeout(bctx, d) }
	text := func(sel string) (string, error) {
		c, cancel := step(10 * time.Second)
		defer cancel()
		return chromedp.Run(c, chromedp.Text(chromedp.CSS(sel)))
	}
	row := fmt.Sprintf(`tr[data-slave=%q]`, w.slave.name)
	c, stop := step(time.Minute)
	err := chromedp.Do(c, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(row+` span.pill.ok`)))
	stop()
	if err != nil {
		t.Fatalf("the page does not show the slave as connected: %v", err)
	}
	slaveRow, err1 := text(row)
	state, err2 := text("#state")
	if err1 != nil || err2 != nil || !strings.Contains(slaveRow, "connected") || state != "streaming" {
		t.Errorf("slave row %q (%v), state %q (%v); want the slave connected and the master streaming", slaveRow, err1, state, err2)
	}
	// The history samples every 2 s: wait for a line of several points.
	eventually.True(t, "the lag chart to have points", 30*time.Second, func() (bool, string) {
		points, err := text("#lagpoints")
		c, cancel := step(10 * time.Second)
		defer cancel()
		line, lerr := chromedp.Run(c, chromedp.AttributeValue(chromedp.CSS("#lagline"), "points"))
		n, _ := strconv.Atoi(points)
		return err == nil && lerr == nil && n >= 3 && strings.Count(line.Value, ",") >= 3,
			fmt.Sprintf("%s points, polyline %q, err %v %v", points, line.Value, err, lerr)
	})
	w.screenshot(t, bctx, "status-page-streaming.png")

	// The slave goes away while the workload runs: the page must follow.
	w.slave.stop(t)
	c, stop = step(time.Minute)
	err = chromedp.Do(c, chromedp.WaitVisible(chromedp.CSS(row+` span.pill.warn`)))
	stop()
	if err != nil {
		t.Fatalf("the page does not show the stopped slave as disconnected: %v", err)
	}
	eventually.True(t, "the page to show the lag rising", 60*time.Second, func() (bool, string) {
		lag, err := text("#lag")
		return err == nil && strings.HasSuffix(lag, " s") && lag != "0.0 s", fmt.Sprintf("lag %q (err %v)", lag, err)
	})
	// The chart follows: its maximum is the lag in seconds too.
	if lagmax, err := text("#lagmax"); err != nil || !strings.HasSuffix(lagmax, " s") {
		t.Errorf("the chart's maximum is %q (err %v) after the lag rose to seconds", lagmax, err)
	}
	w.screenshot(t, bctx, "status-page-slave-stopped.png")
	w.slave.start(t)
	w.slave.waitStreaming(t, recoverTimeout)
}

// screenshot saves the page as a test artifact: in $SCHEDSYNC_ARTIFACTS
// when set (CI keeps it), else in the test's temporary directory.
func (w *world) screenshot(t *testing.T, ctx context.Context, name string) {
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	dir := os.Getenv("SCHEDSYNC_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// chromium finds the headless browser (Debian's chromium package); in CI
// a missing browser fails the test rather than skipping it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium in PATH: install it (apt-get install -y chromium; make deps does)")
	}
	t.Skip("no chromium in PATH (apt-get install -y chromium)")
	return ""
}

// scraper reads one node's HTTP endpoint.
type scraper struct{ base, token string }

func (s scraper) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, s.base+"/metrics", s.token)
	if code != http.StatusOK {
		t.Fatalf("%s/metrics: HTTP %d: %s", s.base, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s/metrics does not parse as the Prometheus text format: %v", s.base, err)
	}
	return fams
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// value is the sum of a family's samples: a gauge's or counter's value, a
// histogram's count; -1 when absent.
func value(fams map[string]*dto.MetricFamily, name string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		switch {
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// labelled is the gauge of name whose label has value v; -1 when absent.
func labelled(fams map[string]*dto.MetricFamily, name, label, v string) float64 {
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == v {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// syncToken reads sync.token from a node's config file.
func syncToken(t *testing.T, n *node) string {
	data, err := os.ReadFile(n.config)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "sync.token="); ok {
			return v
		}
	}
	t.Fatal("no sync.token in " + n.config)
	return ""
}
