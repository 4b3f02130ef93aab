// Package web is a node's read-only HTTP endpoint (http.listen): the
// Prometheus metrics at /metrics, the status as JSON at /api/status, the
// lag history and last problems at /api/history, and a status page at /.
// The page is one HTML file with its script and style inline, embedded in
// the binary: it needs nothing from the internet.
package web

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/schedsync/schedsync/internal/metrics"
)

//go:embed assets/index.html
var indexHTML []byte

// Options are what the endpoint serves.
type Options struct {
	// Listen is host:port.
	Listen string
	// Token, if set, must come with every request as
	// "Authorization: Bearer <token>".
	Token string
	// TLS, if set, makes the endpoint HTTPS.
	TLS *tls.Config
	// Status is the node's status, served as JSON; it must not hold a
	// secret (the service's Status holds none).
	Status func() any
	// Registry holds the metrics; Events the last problems.
	Registry *prometheus.Registry
	Events   *metrics.Events
	// History is the lag history the page charts.
	History *History
	Log     *slog.Logger
}

// Server is a running endpoint.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// Start listens on o.Listen and serves in the background until Close.
func Start(o Options) (*Server, error) {
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w (choose a free port, or leave http.listen empty to serve no HTTP)", o.Listen, err)
	}
	if o.TLS != nil {
		ln = tls.NewListener(ln, o.TLS)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{ln: ln, done: make(chan error, 1), srv: &http.Server{
		Handler:           Handler(o),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
	}}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the endpoint, giving requests in progress a second.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// Handler serves the endpoint's paths.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, o.Status()) })
	mux.HandleFunc("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, history{Lag: o.History.Points(), Events: o.Events.Last()})
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { page(w, http.StatusOK) })
	return guard(o.Token, mux)
}

// history is /api/history's answer.
type history struct {
	// Lag is [unix milliseconds, lag seconds] pairs, oldest first.
	Lag    [][2]float64    `json:"lag"`
	Events []metrics.Event `json:"events"`
}

// guard lets only GET and HEAD through, and with a token only requests
// that carry it. The page itself answers 401 with its shell (which holds
// no data), so that a browser can ask for the token and send it with the
// page's own requests.
func guard(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read only: use GET", http.StatusMethodNotAllowed)
			return
		}
		if token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="schedsync"`)
			if r.URL.Path == "/" {
				page(w, http.StatusUnauthorized)
				return
			}
			http.Error(w, "unauthorized: send Authorization: Bearer <http.token>", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func page(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	w.WriteHeader(code)
	_, _ = w.Write(indexHTML)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, strings.TrimSpace(err.Error()), http.StatusInternalServerError)
	}
}
