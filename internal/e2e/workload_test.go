package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

// extraSchema is a table outside Quartz whose key comes from a sequence
// (bigserial), and a sequence used by no column, so that sequence
// replication is exercised both ways.
const extraSchema = `
CREATE TABLE job_history (
	id       bigserial PRIMARY KEY,
	fired_at bigint NOT NULL,
	payload  jsonb
);
CREATE SEQUENCE ticket_seq;
`

// quartzOptions is the Quartz workload of the test: about 250 firings a
// second across 4 clustered instances.
var quartzOptions = quartz.Options{Instances: 4, Rate: 250, Seed: 5}

// sideWriterEvery is the side writer's pace: about 200 transactions a
// second.
const sideWriterEvery = 5 * time.Millisecond

// load is the workload that runs on the master for the whole scenario.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	quartzStats quartz.Stats
	quartzErr   error
	side        sideWriter
}

// startLoad starts the Quartz workload and the side writer on pool.
func startLoad(pool *pgxpool.Pool) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.quartzStats, l.quartzErr = quartz.Run(ctx, pool, quartzOptions)
	}()
	go func() {
		defer l.wg.Done()
		l.side.run(ctx, pool)
	}()
	return l
}

// stop ends the workload and waits for it; it may be called again.
func (l *load) stop() {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
}

// sideWriter inserts, updates and deletes rows of job_history in short
// transactions, and rolls some back after they consumed sequence values.
type sideWriter struct {
	inserts, updates, deletes, rollbacks, errors atomic.Int64
	lastErr                                      atomic.Pointer[error]
}

func (w *sideWriter) String() string {
	return fmt.Sprintf("inserts=%d updates=%d deletes=%d rollbacks=%d errors=%d",
		w.inserts.Load(), w.updates.Load(), w.deletes.Load(), w.rollbacks.Load(), w.errors.Load())
}

func (w *sideWriter) run(ctx context.Context, pool *pgxpool.Pool) {
	tick := time.NewTicker(sideWriterEvery)
	defer tick.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			// A rolled-back nextval moves a sequence without a change to
			// capture; end with a commit so that the sequences' final
			// values are shipped with it.
			w.step(context.Background(), pool, 1)
			return
		case <-tick.C:
		}
		w.step(ctx, pool, i)
	}
}

// step runs the i-th transaction of the side writer.
func (w *sideWriter) step(ctx context.Context, pool *pgxpool.Pool, i int) {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO job_history (fired_at, payload)
			VALUES ((extract(epoch FROM clock_timestamp()) * 1000)::bigint,
				jsonb_build_object('ticket', nextval('ticket_seq'), 'step', $1::int, 'note', $2::text))`,
			i, fmt.Sprintf("fired ✓ #%d", i))
		if err != nil {
			return err
		}
		switch {
		case i%13 == 0:
			return errRollback
		case i%5 == 0:
			_, err = tx.Exec(ctx, `UPDATE job_history SET payload = payload || jsonb_build_object('retries', $1::int)
				WHERE id = (SELECT max(id) - 7 FROM job_history)`, i)
			w.updates.Add(1)
		case i%9 == 0:
			_, err = tx.Exec(ctx, `DELETE FROM job_history WHERE id = (SELECT min(id) FROM job_history)`)
			w.deletes.Add(1)
		}
		return err
	})
	switch {
	case errors.Is(err, errRollback):
		w.rollbacks.Add(1)
	case err != nil && ctx.Err() == nil:
		w.errors.Add(1)
		w.lastErr.Store(&err) // errors of different types: atomic.Value would panic
	case err == nil:
		w.inserts.Add(1)
	}
}

var errRollback = errors.New("rolled back on purpose")

// newPool returns a pool on the master repository with enough connections
// for the Quartz instances (two each) and the side writer.
func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := quartz.OpenPool(context.Background(), url, quartzOptions, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// report logs what the workload did and fails the test if it did nothing
// or failed.
func (l *load) report(t *testing.T) {
	t.Helper()
	st := l.quartzStats
	t.Logf("quartz workload: firings=%d txns=%d jobs_added=%d jobs_removed=%d checkins=%d errors=%d",
		st.Firings, st.Txns, st.JobsAdded, st.JobsRemoved, st.CheckIns, st.Errors)
	t.Logf("side writer: %s", &l.side)
	if l.quartzErr != nil {
		t.Errorf("quartz workload failed: %v", l.quartzErr)
	}
	if p := l.side.lastErr.Load(); p != nil {
		err := *p
		t.Errorf("side writer: %d errors on a master repository that never went down; last: %v", l.side.errors.Load(), err)
	}
	if st.Firings == 0 || l.side.inserts.Load() == 0 {
		t.Errorf("the workload did nothing: %d firings, %d job_history inserts", st.Firings, l.side.inserts.Load())
	}
}
