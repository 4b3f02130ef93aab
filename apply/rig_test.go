package apply_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/pipetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newRig is the pipeline with the same schema on both sides.
func newRig(t testing.TB, schema string, allowNoPK bool) *pipetest.Pipeline {
	t.Helper()
	return pipetest.New(t, schema, schema, allowNoPK)
}

// runUntilError runs an applier that must fail, and returns its error.
func runUntilError(t *testing.T, p *pipetest.Pipeline) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.Applier(nil).Run(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply did not fail: %v", err)
	}
	return err
}
