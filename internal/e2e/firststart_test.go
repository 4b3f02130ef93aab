package e2e

import (
	"context"
	"strings"
	"testing"
)

// TestMasterFirstStartWithoutItsRepository: a master whose repository is
// down still starts (it survives an outage and retries), but says plainly
// that the repository is unreachable and why; with --wait it waits for the
// repository and fails if it does not answer in time.
func TestMasterFirstStartWithoutItsRepository(t *testing.T) {
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, "trigger")
	w.install(t)
	if err := w.masterDB.StopImmediate(); err != nil {
		t.Fatal(err)
	}

	r, err := w.master.run(startTimeout, "start", "--wait", "2s")
	if err != nil {
		t.Fatal(err)
	}
	if r.code == 0 || !strings.Contains(r.output(), "cannot connect to the master repository") || !strings.Contains(r.output(), "--wait 2s") {
		t.Fatalf("start --wait 2s with the repository down: exit %d\n%s", r.code, r.output())
	}
	if st := w.master.mustStatus(t); st.Running {
		t.Fatalf("a start that failed left the service running: %s", st)
	}

	r, err = w.master.run(startTimeout, "start")
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 || !strings.Contains(r.stdout, "warning: the master repository is unreachable:") || !strings.Contains(r.stdout, "connection refused") {
		t.Fatalf("start without --wait with the repository down: exit %d\n%s", r.code, r.output())
	}
	if st := w.master.mustStatus(t); !st.Running || st.State != "master_unavailable" || !strings.Contains(st.Error, "master repository") {
		t.Errorf("status of a master without its repository: %s", st)
	}

	if err := w.masterDB.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	w.master.waitStreaming(t, recoverTimeout)
	w.master.stop(t)
	if out := w.master.mustRun(t, startTimeout, "start", "--wait", "30s"); strings.Contains(out, "warning") {
		t.Errorf("start with the repository up warns: %s", out)
	}
	w.master.waitStreaming(t, recoverTimeout)
}
