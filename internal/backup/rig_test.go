package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/pipetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childRestore())
	}
	pgtest.Main(m)
}

// rig is the capture → spool → apply pipeline shared with apply's tests.
type rig = pipetest.Pipeline

func newRig(t *testing.T, masterSchema, slaveSchema string) *rig {
	t.Helper()
	return pipetest.New(t, masterSchema, slaveSchema, false)
}

// requireUnchanged compares a database with a snapshot of its contents.
func requireUnchanged(t *testing.T, url string, before map[string]string, beforeSeqs map[string]int64) {
	t.Helper()
	after, afterSeqs := pipetest.Contents(t, url)
	if fmt.Sprint(after) != fmt.Sprint(before) || fmt.Sprint(afterSeqs) != fmt.Sprint(beforeSeqs) {
		t.Errorf("the slave changed:\nbefore %v %v\nafter  %v %v", before, beforeSeqs, after, afterSeqs)
	}
}

// backupFile writes a backup of the master into a file and returns its path.
func backupFile(r *rig, opts Options) (string, Manifest) {
	r.T.Helper()
	path := filepath.Join(r.T.TempDir(), "backup.ssbak")
	f, err := os.Create(path)
	if err != nil {
		r.T.Fatal(err)
	}
	defer f.Close()
	tx, at := r.Snapshot(r.Conn(r.MasterURL))
	defer tx.Rollback(context.Background())
	m, err := Write(context.Background(), tx, f, At{Position: at.Position, Epoch: at.Epoch, CaptureMode: "trigger"}, opts)
	if err != nil {
		r.T.Fatalf("backup: %v", err)
	}
	return path, m
}

func openFile(path string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}
