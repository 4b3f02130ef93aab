package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestResyncWaitsForABusyMastersSnapshot: the master's backup snapshot
// waits for the transactions running when it is taken (logical capture
// creates a slot that exports it). A transaction left open for longer than
// two heartbeats must not make the slave take its master for dead: the
// resync goes through once the transaction ends.
func TestResyncWaitsForABusyMastersSnapshot(t *testing.T) {
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, "logical")
	l, ok := w.installAndLoad(t, ctx)
	if !ok {
		return
	}
	l.stop()
	open := connect(t, ctx, w.master.repo)
	tx, err := open.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO job_history (fired_at, payload) VALUES (1, '{"held":"open"}')`); err != nil {
		t.Fatal(err)
	}
	cmd := w.slave.command(context.Background(), "resync", "--force")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("resync ended while the master's snapshot had to wait (%v):\n%s", err, out.String())
	case <-time.After(5 * time.Second): // sync.heartbeat is 1s: 5 of them
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("resync after the wait: %v\n%s", err, out.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("resync did not finish")
	}
	t.Log(out.String())
	w.slave.waitStreaming(t, recoverTimeout)
	t.Run("catch up", w.waitCaughtUp)
	t.Run("rows equal", func(t *testing.T) { w.requireSameRows(t, ctx) })
}
