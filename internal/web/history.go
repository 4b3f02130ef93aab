package web

import (
	"context"
	"sync"
	"time"
)

// History is the lag of the last Window, one sample every Every, in a
// bounded ring: memory stays the same however long the service runs.
type History struct {
	every time.Duration
	mu    sync.Mutex
	ring  [][2]float64
	next  int
	max   int
}

// NewHistory keeps window's worth of samples taken every every.
func NewHistory(window, every time.Duration) *History {
	return &History{every: every, max: max(1, int(window/every))}
}

// Add records lag (seconds) at t.
func (h *History) Add(t time.Time, lag float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := [2]float64{float64(t.UnixMilli()), lag}
	if len(h.ring) < h.max {
		h.ring = append(h.ring, p)
		return
	}
	h.ring[h.next] = p
	h.next = (h.next + 1) % h.max
}

// Points are the samples, oldest first.
func (h *History) Points() [][2]float64 {
	if h == nil {
		return [][2]float64{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([][2]float64, 0, len(h.ring))
	out = append(out, h.ring[h.next:]...)
	return append(out, h.ring[:h.next]...)
}

// Run samples lag() until ctx ends.
func (h *History) Run(ctx context.Context, lag func() float64) {
	h.Add(time.Now(), lag())
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.Add(now, lag())
		}
	}
}
