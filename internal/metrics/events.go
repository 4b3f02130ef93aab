package metrics

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/schedsync/schedsync/internal/config"
)

// eventsKept is how many problems Events keeps.
const eventsKept = 50

// Event is one problem the service logged.
type Event struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
	// Error is the record's "err" attribute, if any.
	Error string `json:"error,omitempty"`
}

// Events keeps the last problems (warnings and errors) logged, oldest
// first, in a bounded ring.
type Events struct {
	mu   sync.Mutex
	max  int
	ring []Event
	next int
}

// NewEvents keeps the last max events.
func NewEvents(max int) *Events { return &Events{max: max} }

func (e *Events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.ring) < e.max {
		e.ring = append(e.ring, ev)
		return
	}
	e.ring[e.next] = ev
	e.next = (e.next + 1) % e.max
}

// Last returns the events kept, newest first.
func (e *Events) Last() []Event {
	if e == nil {
		return []Event{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Event, 0, len(e.ring))
	for i := len(e.ring) - 1; i >= 0; i-- {
		out = append(out, e.ring[(e.next+i)%len(e.ring)])
	}
	return out
}

// LogHandler wraps the service's log handler: every warning and error
// also counts in errors_total (by the logger's "stage") and is kept in
// Events, with secrets masked (the values given, and passwords in
// connection strings), whatever the handler's own level.
func (m *Metrics) LogHandler(next slog.Handler, secrets ...string) slog.Handler {
	var s []string
	for _, v := range secrets {
		if v != "" {
			s = append(s, v)
		}
	}
	return &logHandler{next: next, m: m, secrets: s}
}

type logHandler struct {
	next    slog.Handler
	m       *Metrics
	stage   string
	group   bool // attributes now go into a group: a "stage" there is not ours
	secrets []string
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		stage, errText := h.stage, ""
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "stage":
				if !h.group {
					stage = a.Value.String()
				}
			case "err", "error":
				errText = a.Value.String()
			}
			return true
		})
		kind := h.m.problem(stage)
		h.m.events.add(Event{Time: r.Time.UTC(), Level: strings.ToLower(r.Level.String()), Kind: kind,
			Message: h.mask(r.Message), Error: h.mask(errText)})
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// mask hides secrets in s.
func (h *logHandler) mask(s string) string {
	for _, v := range h.secrets {
		s = strings.ReplaceAll(s, v, config.Mask)
	}
	return config.RedactSecrets(s)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	if !h.group {
		for _, a := range attrs {
			if a.Key == "stage" {
				c.stage = a.Value.String()
			}
		}
	}
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	c.group = true
	return &c
}
