package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/schedsync/schedsync/internal/metrics"
)

const token = "s3cret-http-token"

// newTestHandler serves a registry whose log handler saw a problem
// quoting both secrets, the way a careless error message might.
func newTestHandler(t *testing.T, tok string) http.Handler {
	t.Helper()
	m := metrics.New()
	log := slog.New(m.LogHandler(slog.DiscardHandler, token, "sync-token-value"))
	log.With("stage", "ship").Error("handshake failed", "err", errors.New("token sync-token-value refused; dial postgres://u:pw-in-url@h/db"))
	m.Captured(3)
	h := NewHistory(time.Hour, time.Second)
	h.Add(time.Now(), 0.5)
	return Handler(Options{Token: tok, Registry: m.Registry(), Events: m.Events(), History: h,
		Status: func() any { return map[string]any{"role": "master", "state": "streaming", "name": "node-7f3a"} }})
}

func get(t *testing.T, h http.Handler, method, path, auth string) (int, string) {
	t.Helper()
	r := httptest.NewRequestWithContext(context.Background(), method, path, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body)
}

func TestTokenIsRequiredWhenSet(t *testing.T) {
	h := newTestHandler(t, token)
	for _, path := range []string{"/metrics", "/api/status", "/api/history"} {
		if code, body := get(t, h, "GET", path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d %q, want 401", path, code, body)
		}
		if code, _ := get(t, h, "GET", path, "Bearer wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", path, code)
		}
		if code, body := get(t, h, "GET", path, "Bearer "+token); code != http.StatusOK {
			t.Errorf("%s with the token: %d %q, want 200", path, code, body)
		}
	}
	// The page answers 401 with its shell only, so a browser can ask for
	// the token: it must hold no data.
	code, body := get(t, h, "GET", "/", "")
	if code != http.StatusUnauthorized || !strings.Contains(body, "<html") {
		t.Errorf("page without a token: %d, want 401 with the page shell", code)
	}
	if strings.Contains(body, "node-7f3a") {
		t.Errorf("the page shell served without a token holds status data")
	}
}

func TestOpenWithoutToken(t *testing.T) {
	h := newTestHandler(t, "")
	for _, path := range []string{"/", "/metrics", "/api/status", "/api/history"} {
		if code, _ := get(t, h, "GET", path, ""); code != http.StatusOK {
			t.Errorf("%s: %d, want 200", path, code)
		}
	}
	if code, _ := get(t, h, "GET", "/nothing", ""); code != http.StatusNotFound {
		t.Errorf("/nothing: %d, want 404", code)
	}
}

func TestReadOnly(t *testing.T) {
	h := newTestHandler(t, "")
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if code, _ := get(t, h, m, "/api/status", ""); code != http.StatusMethodNotAllowed {
			t.Errorf("%s /api/status: %d, want 405", m, code)
		}
	}
}

// TestNoSecretServed: no path shows a token or a password, even when a
// logged error quoted them.
func TestNoSecretServed(t *testing.T) {
	h := newTestHandler(t, token)
	seen := false
	for _, path := range []string{"/", "/metrics", "/api/status", "/api/history"} {
		_, body := get(t, h, "GET", path, "Bearer "+token)
		for _, secret := range []string{token, "sync-token-value", "pw-in-url"} {
			if strings.Contains(body, secret) {
				t.Errorf("%s shows the secret %q:\n%s", path, secret, body)
			}
		}
		if path == "/api/history" {
			seen = strings.Contains(body, "handshake failed") && strings.Contains(body, `"kind": "ship"`)
		}
	}
	if !seen {
		t.Errorf("/api/history does not list the logged problem (so the redaction check saw nothing)")
	}
}

func TestMetricsParse(t *testing.T) {
	h := newTestHandler(t, "")
	_, body := get(t, h, "GET", "/metrics", "")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	want := map[string]float64{"schedsync_transactions_captured_total": 1, "schedsync_changes_captured_total": 3}
	for name, v := range want {
		f := families[name]
		if f == nil || len(f.Metric) != 1 || f.Metric[0].GetCounter().GetValue() != v {
			t.Errorf("%s: %v, want one counter at %v", name, f, v)
		}
	}
	errs := families["schedsync_errors_total"]
	found := false
	for _, m := range errs.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "kind" && l.GetValue() == "ship" && m.GetCounter().GetValue() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("schedsync_errors_total{kind=\"ship\"} is not 1: %v", errs)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	h := NewHistory(10*time.Second, time.Second)
	t0 := time.Unix(1000, 0)
	for i := range 25 {
		h.Add(t0.Add(time.Duration(i)*time.Second), float64(i))
	}
	p := h.Points()
	if len(p) != 10 || p[0][1] != 15 || p[9][1] != 24 {
		t.Fatalf("points %v, want the last 10 (15..24), oldest first", p)
	}
}
