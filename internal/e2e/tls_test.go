package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestTLSInitMakesAMutualTLSPair: the certificates of `schedsync tls init`
// give a working pair with mutual TLS (the master requires the slave's
// certificate, the slave verifies the master's), the pair replicates, and
// a slave whose certificate another CA signed is refused.
func TestTLSInitMakesAMutualTLSPair(t *testing.T) {
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	w := newWorld(t, ctx, "trigger")
	dir := filepath.Join(t.TempDir(), "pki")
	out := w.master.mustRun(t, cmdTimeout, "tls", "init", "--dir", dir, "--node", "master=127.0.0.1", "--node", "slave=127.0.0.1")
	t.Log(out)
	for _, n := range []struct {
		node *node
		name string
	}{{w.master, "master"}, {w.slave, "slave"}} {
		n.node.setKey(t, "tls.cert", filepath.Join(dir, n.name+".crt"))
		n.node.setKey(t, "tls.key", filepath.Join(dir, n.name+".key"))
		n.node.setKey(t, "tls.ca", filepath.Join(dir, "ca.crt"))
	}
	l, ok := w.installAndLoad(t, ctx)
	if !ok {
		return
	}
	if log := w.master.logTail(50); !strings.Contains(log, "tls=true") {
		t.Errorf("the master does not say it serves TLS:\n%s", log)
	}

	t.Run("a certificate of another CA is refused", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		w.slave.mustRun(t, cmdTimeout, "tls", "init", "--dir", other, "--node", "slave=127.0.0.1")
		w.slave.stop(t)
		w.slave.setKey(t, "tls.cert", filepath.Join(other, "slave.crt"))
		w.slave.setKey(t, "tls.key", filepath.Join(other, "slave.key"))
		r, err := w.slave.run(startTimeout, "start", "--wait", "10s")
		if err != nil {
			t.Fatal(err)
		}
		if r.code == 0 {
			t.Fatalf("a slave with a certificate of another CA started:\n%s", r.output())
		}
		t.Logf("refused: %s", strings.TrimSpace(r.output()))
		w.slave.setKey(t, "tls.cert", filepath.Join(dir, "slave.crt"))
		w.slave.setKey(t, "tls.key", filepath.Join(dir, "slave.key"))
		w.slave.start(t)
		w.slave.waitStreaming(t, recoverTimeout)
	})
	w.finish(t, ctx, l)
}
