package service

import (
	"context"
	"log/slog"
	"time"
)

// backoff is a capped exponential delay that also keeps a retry loop from
// spamming the log: the first failure and every change of error are logged
// at WARN, repeats at most once a minute.
type backoff struct {
	min, max, cur time.Duration
	lastMsg       string
	lastLog       time.Time
	failures      int
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) reset() { b.cur, b.failures, b.lastMsg = b.min, 0, "" }

// atLeast makes the next delay at least d (within max): for a failure that
// retrying soon cannot fix, but that an operator may fix.
func (b *backoff) atLeast(d time.Duration) { b.cur = min(max(b.cur, d), b.max) }

// toMax makes the next delay the longest: for a failure that comes back
// until something else changes.
func (b *backoff) toMax() { b.cur = b.max }

// wait logs err (if worth it) and sleeps the current delay, then doubles it.
func (b *backoff) wait(ctx context.Context, log *slog.Logger, msg string, err error) {
	b.failures++
	text := ""
	if err != nil {
		text = err.Error()
	}
	if text != b.lastMsg || time.Since(b.lastLog) > time.Minute {
		log.Warn(msg, "err", text, "failures", b.failures, "retry_in", b.cur)
		b.lastMsg, b.lastLog = text, time.Now()
	}
	t := time.NewTimer(b.cur)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.cur = min(b.cur*2, b.max)
}
