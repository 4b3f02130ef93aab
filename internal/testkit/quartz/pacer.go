package quartz

import (
	"context"
	"sync"
	"time"
)

// pacer spaces firings evenly across all instances to reach Options.Rate on
// average. Unused time is not saved up: after an idle spell (a restarting
// server) the workload resumes at the rate rather than in a burst.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration // per firing
	next     time.Time     // when the next reservation may fire
}

func newPacer(rate int) *pacer {
	return &pacer{interval: time.Second / time.Duration(rate)}
}

// wait reserves n firings and sleeps until they may happen; false means ctx
// ended first.
func (p *pacer) wait(ctx context.Context, n int) bool {
	if p == nil || n == 0 {
		return true
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(time.Duration(n) * p.interval)
	p.mu.Unlock()
	return sleep(ctx, time.Until(at))
}
