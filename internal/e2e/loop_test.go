package e2e

import (
	"context"
	"sync"
)

// loop is a goroutine that runs until stopped: the test's writers and
// hammering clients.
type loop struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startLoop runs fn on a goroutine of its own until stop.
func startLoop(fn func(ctx context.Context)) *loop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		fn(ctx)
	}()
	return l
}

// stop ends the loop and waits for it; calling it again does nothing.
func (l *loop) stop() {
	l.once.Do(func() {
		l.cancel()
		<-l.done
	})
}
