package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// dbschedSchema is a second scheduler's repository, in the shape of
// db-scheduler's: tasks keyed by (name, instance), the task's data as
// bytea, a version column for optimistic locking, and 'infinity' for a
// paused task. It lives in schema dbsched, next to Quartz in public.
const dbschedSchema = `CREATE SCHEMA dbsched;
CREATE TABLE dbsched.scheduled_tasks (
	task_name text NOT NULL,
	task_instance text NOT NULL,
	task_data bytea,
	execution_time timestamptz NOT NULL,
	picked boolean NOT NULL DEFAULT false,
	picked_by text,
	last_success timestamptz,
	last_failure timestamptz,
	consecutive_failures int NOT NULL DEFAULT 0,
	last_heartbeat timestamptz,
	version bigint NOT NULL DEFAULT 1,
	priority smallint,
	PRIMARY KEY (task_name, task_instance)
);
CREATE INDEX scheduled_tasks_due ON dbsched.scheduled_tasks (execution_time) WHERE NOT picked;`

// dbschedLoad runs tasks the way db-scheduler's pollers do: one-time
// tasks are added, due tasks are picked (version bumped), then completed
// (deleted, or rescheduled if recurring) or failed; now and then a task
// is paused (execution time infinity) or renamed (its key updated).
type dbschedLoad struct {
	*loop
	txns   atomic.Int64
	errors atomic.Int64
}

func startDBSchedLoad(pool *pgxpool.Pool) *dbschedLoad {
	l := &dbschedLoad{}
	l.loop = startLoop(func(ctx context.Context) {
		rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
		for i := 0; i < 20; i++ { // the recurring tasks
			l.exec(ctx, pool, `INSERT INTO dbsched.scheduled_tasks (task_name, task_instance, task_data, execution_time)
				VALUES ('recurring', $1, $2, now()) ON CONFLICT DO NOTHING`, fmt.Sprintf("r%02d", i), randBytes(rng.IntN(64)))
		}
		for n := 0; ctx.Err() == nil; n++ {
			switch k := rng.IntN(20); {
			case k < 6:
				l.exec(ctx, pool, `INSERT INTO dbsched.scheduled_tasks (task_name, task_instance, task_data, execution_time, priority)
					VALUES ('onetime', $1, $2, now() + $3 * interval '1 millisecond', $4)`,
					fmt.Sprintf("o%d-%d", time.Now().UnixNano(), n), randBytes(rng.IntN(2048)), rng.IntN(500), rng.IntN(10))
			case k < 12:
				l.exec(ctx, pool, `UPDATE dbsched.scheduled_tasks SET picked = true, picked_by = 'soak', version = version + 1, last_heartbeat = now()
					WHERE (task_name, task_instance) IN (SELECT task_name, task_instance FROM dbsched.scheduled_tasks
						WHERE NOT picked AND execution_time <= now() ORDER BY execution_time LIMIT 5 FOR UPDATE SKIP LOCKED)`)
			case k < 16:
				l.exec(ctx, pool, `WITH done AS (DELETE FROM dbsched.scheduled_tasks WHERE picked AND task_name = 'onetime' RETURNING 1)
					UPDATE dbsched.scheduled_tasks SET picked = false, picked_by = NULL, execution_time = now() + interval '200 milliseconds',
						last_success = now(), consecutive_failures = 0, version = version + 1 WHERE picked AND task_name = 'recurring'`)
			case k < 18:
				l.exec(ctx, pool, `UPDATE dbsched.scheduled_tasks SET picked = false, last_failure = now(),
					consecutive_failures = consecutive_failures + 1, execution_time = now() + interval '100 milliseconds', version = version + 1
					WHERE ctid IN (SELECT ctid FROM dbsched.scheduled_tasks WHERE picked LIMIT 2)`)
			case k < 19:
				l.exec(ctx, pool, `UPDATE dbsched.scheduled_tasks SET execution_time = CASE WHEN execution_time = 'infinity' THEN now() ELSE 'infinity' END
					WHERE task_name = 'recurring' AND task_instance = $1`, fmt.Sprintf("r%02d", rng.IntN(20)))
			default: // a key update: the instance renamed
				l.exec(ctx, pool, `UPDATE dbsched.scheduled_tasks SET task_instance = task_instance || 'x'
					WHERE ctid IN (SELECT ctid FROM dbsched.scheduled_tasks WHERE task_name = 'onetime' AND NOT picked LIMIT 1)`)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return l
}

func (l *dbschedLoad) exec(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) {
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		if ctx.Err() == nil {
			l.errors.Add(1)
			time.Sleep(50 * time.Millisecond) // the master's database may be down
		}
		return
	}
	l.txns.Add(1)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
