package quartz

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/testkit/eventually"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newSchemaDB returns a fresh database with the Quartz schema and a
// connection to it.
func newSchemaDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.NewDB(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after NewDB's cleanup, so it runs before the drop.
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if err := CreateSchema(ctx, conn); err != nil {
		t.Fatal(err)
	}
	return url, conn
}

func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestCreateSchema(t *testing.T) {
	_, conn := newSchemaDB(t)
	rows, err := conn.Query(context.Background(), `SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = current_schema() ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, Tables()) {
		t.Errorf("tables %v, want %v", got, Tables())
	}
}

func TestSeed(t *testing.T) {
	url, conn := newSchemaDB(t)
	ctx := context.Background()
	db := newTestPool(t, url, 2)
	opts := Options{Jobs: 300, Seed: 7}
	if err := Seed(ctx, db, opts); err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, `SELECT count(*) FROM qrtz_job_details`); n != 300 {
		t.Errorf("%d jobs, want 300", n)
	}
	for _, c := range []struct{ what, sql string }{
		{"locks", `SELECT count(*) FROM qrtz_locks WHERE lock_name IN ('TRIGGER_ACCESS', 'STATE_ACCESS')`},
		{"calendars", `SELECT count(*) FROM qrtz_calendars WHERE substr(calendar, 1, 4) = '\xaced0005'`},
		{"scheduler states", `SELECT count(*) FROM qrtz_scheduler_state`},
		{"paused groups", `SELECT count(*) FROM qrtz_paused_trigger_grps`},
		{"paused triggers", `SELECT count(*) FROM qrtz_triggers WHERE trigger_state = 'PAUSED'`},
		{"simple triggers", `SELECT count(*) FROM qrtz_simple_triggers`},
		{"cron triggers", `SELECT count(*) FROM qrtz_cron_triggers`},
		{"calendar interval triggers", `SELECT count(*) FROM qrtz_triggers WHERE trigger_type = 'CAL_INT'`},
		{"daily interval triggers", `SELECT count(*) FROM qrtz_triggers WHERE trigger_type = 'DAILY_I'`},
		{"blob triggers", `SELECT count(*) FROM qrtz_blob_triggers`},
		{"jobs with two triggers", `SELECT count(*) FROM (SELECT 1 FROM qrtz_triggers GROUP BY job_name, job_group HAVING count(*) > 1) s`},
		{"NULL descriptions", `SELECT count(*) FROM qrtz_triggers WHERE description IS NULL`},
		{"empty descriptions", `SELECT count(*) FROM qrtz_triggers WHERE description = ''`},
		{"multi-byte descriptions", `SELECT count(*) FROM qrtz_triggers WHERE octet_length(description) > length(description)`},
		{"TOASTed trigger data", `SELECT count(*) FROM qrtz_triggers WHERE octet_length(job_data) > 2500`},
		{"serialized job data", `SELECT count(*) FROM qrtz_job_details WHERE position('org.quartz.JobDataMap'::bytea IN job_data) > 0`},
	} {
		if count(t, conn, c.sql) == 0 {
			t.Errorf("no %s after Seed", c.what)
		}
	}

	// Seeding again changes nothing.
	before, err := Fingerprint(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := Seed(ctx, db, opts); err != nil {
		t.Fatalf("second Seed: %v", err)
	}
	after, err := Fingerprint(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, after) {
		t.Errorf("second Seed changed the tables:\n%v\n%v", before, after)
	}
}

func TestRun(t *testing.T) {
	url, conn := newSchemaDB(t)
	opts := Options{Instances: 4, Jobs: 200, Seed: 1, Logger: testLogger(t)}
	db := newTestPool(t, url, 2*opts.Instances)
	if err := Seed(context.Background(), db, opts); err != nil {
		t.Fatal(err)
	}
	jobsBefore := count(t, conn, `SELECT count(*) FROM qrtz_job_details`)
	// Triggers two hours late, as after a long outage, are for the
	// misfire handler: acquisition skips them.
	runStart := time.Now().UnixMilli()
	if _, err := conn.Exec(context.Background(), `UPDATE qrtz_triggers SET next_fire_time = $1, misfire_instr = 1
		WHERE (trigger_name, trigger_group) IN (SELECT trigger_name, trigger_group FROM qrtz_triggers
		WHERE trigger_state = 'WAITING' ORDER BY trigger_name LIMIT 10)`, runStart-7200_000); err != nil {
		t.Fatal(err)
	}

	// Runs of 2 s until every part of the workload has run, so that a
	// slow or busy machine only makes the test longer.
	var st Stats
	for round := 1; ; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		s, err := Run(ctx, db, opts)
		elapsed := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("Run: %v (stats %+v)", err, s)
		}
		t.Logf("%+v in %v: %.0f txns/s, %.0f firings/s", s, elapsed.Round(time.Millisecond),
			float64(s.Txns)/elapsed.Seconds(), float64(s.Firings)/elapsed.Seconds())
		st = addStats(st, s)
		checkInvariants(t, conn, opts)
		if st.Firings > 0 && st.CheckIns > 0 && st.JobsAdded > 0 && st.JobsRemoved > 0 && st.DataRewrites > 0 {
			break
		}
		if round == 5 {
			t.Fatalf("a part of the workload did not run in %d rounds: %+v", round, st)
		}
	}
	// Not all ten: one may have been paused before the handler ran.
	if n := count(t, conn, `SELECT count(*) FROM qrtz_triggers WHERE next_fire_time = $1`, runStart-7200_000); n >= 10 {
		t.Errorf("the misfire handler moved none of the %d misfired triggers", n)
	}
	// Nothing fails against a healthy server: every retry would be a bug.
	if st.Errors != 0 {
		t.Errorf("%d errors against a healthy server", st.Errors)
	}
	if got, want := count(t, conn, `SELECT count(*) FROM qrtz_job_details`), jobsBefore+st.JobsAdded-st.JobsRemoved; got != want {
		t.Errorf("%d jobs, want %d seeded + %d added - %d removed", got, jobsBefore, st.JobsAdded, st.JobsRemoved)
	}
}

func addStats(a, b Stats) Stats {
	return Stats{
		Firings:      a.Firings + b.Firings,
		JobsAdded:    a.JobsAdded + b.JobsAdded,
		JobsRemoved:  a.JobsRemoved + b.JobsRemoved,
		CheckIns:     a.CheckIns + b.CheckIns,
		DataRewrites: a.DataRewrites + b.DataRewrites,
		Errors:       a.Errors + b.Errors,
		Txns:         a.Txns + b.Txns,
	}
}

// TestRunSurvivesTerminatedBackends ends every connection of the workload
// halfway, as a server restart does: Run counts and retries, and all
// instances go on. Halfway is when every instance has checked in, and the
// run ends when every one has checked in again after its connections were
// ended, so that a slow machine only makes the test longer.
func TestRunSurvivesTerminatedBackends(t *testing.T) {
	t.Parallel()
	url, conn := newSchemaDB(t)
	opts := Options{Instances: 3, Jobs: 50, Seed: 2, Logger: testLogger(t)}
	db := newTestPool(t, url, 2*opts.Instances)
	if err := Seed(context.Background(), db, opts); err != nil {
		t.Fatal(err)
	}
	checkedInAfter := func(what string, since int64) {
		t.Helper()
		eventually.True(t, what, time.Minute, func() (bool, string) {
			n := count(t, conn, `SELECT count(*) FROM qrtz_scheduler_state WHERE last_checkin_time > $1`, since)
			return n == int64(opts.Instances), fmt.Sprintf("%d of %d instances", n, opts.Instances)
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	started := time.Now().UnixMilli()
	go func() {
		st, err := Run(ctx, db, opts)
		done <- result{st, err}
	}()
	checkedInAfter("every instance to check in", started)
	killedAt := time.Now().UnixMilli()
	if _, err := conn.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatalf("terminate backends: %v", err)
	}
	checkedInAfter("every instance to check in after its connections were ended", killedAt)
	cancel()
	res := <-done
	if res.err != nil {
		t.Fatalf("Run: %v (stats %+v)", res.err, res.st)
	}
	t.Logf("%+v", res.st)
	if res.st.Firings == 0 {
		t.Error("no firings")
	}
	if n := count(t, conn, `SELECT count(*) FROM qrtz_scheduler_state WHERE last_checkin_time > $1`, killedAt); n != int64(opts.Instances) {
		t.Errorf("%d of %d instances checked in after their connections were ended", n, opts.Instances)
	}
	checkInvariants(t, conn, opts)
}

func TestRunRespectsRate(t *testing.T) {
	t.Parallel()
	url, _ := newSchemaDB(t)
	opts := Options{Instances: 2, Jobs: 50, Rate: 100, Seed: 3}
	db := newTestPool(t, url, 2*opts.Instances)
	if err := Seed(context.Background(), db, opts); err != nil {
		t.Fatal(err)
	}
	// Runs of a second until one fires something, so that a slow or busy
	// machine only makes the test longer.
	for round := 1; ; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		st, err := Run(ctx, db, opts)
		elapsed := time.Since(start)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// The pacer hands out no more than Rate slots a second, plus the
		// batch reserved at the very end: an upper bound that holds
		// however slow the machine.
		if limit := int64(float64(opts.Rate)*elapsed.Seconds()) + maxBatch; st.Firings > limit {
			t.Errorf("%d firings in %v at rate %d, want at most %d", st.Firings, elapsed, opts.Rate, limit)
		}
		if st.Firings > 0 {
			break
		}
		if round == 30 {
			t.Fatalf("nothing fired in %d runs of a second", round)
		}
	}
}

// checkInvariants checks what must hold between transactions, whatever
// the interleaving of the instances.
func checkInvariants(t *testing.T, conn *pgx.Conn, opts Options) {
	t.Helper()
	for _, c := range []struct{ what, sql string }{
		{"triggers without a job", `SELECT count(*) FROM qrtz_triggers t WHERE NOT EXISTS (SELECT 1 FROM qrtz_job_details j
			WHERE j.sched_name = t.sched_name AND j.job_name = t.job_name AND j.job_group = t.job_group)`},
		{"simple rows without a trigger", orphanChild("qrtz_simple_triggers")},
		{"cron rows without a trigger", orphanChild("qrtz_cron_triggers")},
		{"simprop rows without a trigger", orphanChild("qrtz_simprop_triggers")},
		{"blob rows without a trigger", orphanChild("qrtz_blob_triggers")},
		{"triggers without their child row", `SELECT count(*) FROM qrtz_triggers t WHERE NOT EXISTS (
			SELECT 1 FROM qrtz_simple_triggers s WHERE (s.sched_name, s.trigger_name, s.trigger_group) = (t.sched_name, t.trigger_name, t.trigger_group)
			UNION ALL SELECT 1 FROM qrtz_cron_triggers s WHERE (s.sched_name, s.trigger_name, s.trigger_group) = (t.sched_name, t.trigger_name, t.trigger_group)
			UNION ALL SELECT 1 FROM qrtz_simprop_triggers s WHERE (s.sched_name, s.trigger_name, s.trigger_group) = (t.sched_name, t.trigger_name, t.trigger_group)
			UNION ALL SELECT 1 FROM qrtz_blob_triggers s WHERE (s.sched_name, s.trigger_name, s.trigger_group) = (t.sched_name, t.trigger_name, t.trigger_group))`},
		{"ACQUIRED or COMPLETE triggers without a fired-trigger record", `SELECT count(*) FROM qrtz_triggers t
			WHERE t.trigger_state IN ('ACQUIRED', 'COMPLETE') AND NOT EXISTS (SELECT 1 FROM qrtz_fired_triggers f
			WHERE f.sched_name = t.sched_name AND f.trigger_name = t.trigger_name AND f.trigger_group = t.trigger_group)`},
		{"BLOCKED triggers without an execution of their job", `SELECT count(*) FROM qrtz_triggers t
			WHERE t.trigger_state IN ('BLOCKED', 'PAUSED_BLOCKED') AND NOT EXISTS (SELECT 1 FROM qrtz_fired_triggers f
			WHERE f.sched_name = t.sched_name AND f.job_name = t.job_name AND f.job_group = t.job_group AND f.state = 'EXECUTING')`},
	} {
		if n := count(t, conn, c.sql); n != 0 {
			t.Errorf("%d %s", n, c.what)
		}
	}
	// Records are deleted at completion: only the cycles cut short by
	// the end of the run leave some.
	if n := count(t, conn, `SELECT count(*) FROM qrtz_fired_triggers`); n > int64(opts.Instances*maxBatch) {
		t.Errorf("%d fired-trigger records left, want at most %d", n, opts.Instances*maxBatch)
	}
	if n := count(t, conn, `SELECT count(*) FROM qrtz_paused_trigger_grps`); n > maxPausedGroups {
		t.Errorf("%d paused groups, want at most %d", n, maxPausedGroups)
	}
}

func orphanChild(table string) string {
	return `SELECT count(*) FROM ` + table + ` c WHERE NOT EXISTS (SELECT 1 FROM qrtz_triggers t
		WHERE t.sched_name = c.sched_name AND t.trigger_name = c.trigger_name AND t.trigger_group = c.trigger_group)`
}

func TestFingerprint(t *testing.T) {
	url, conn := newSchemaDB(t)
	ctx := context.Background()
	if err := Seed(ctx, newTestPool(t, url, 1), Options{Jobs: 50}); err != nil {
		t.Fatal(err)
	}
	fp := func() map[string]string {
		t.Helper()
		m, err := Fingerprint(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a := fp()
	if got := slices.Sorted(maps.Keys(a)); !slices.Equal(got, Tables()) {
		t.Fatalf("fingerprinted %v, want %v", got, Tables())
	}
	if a["qrtz_job_details"] == "50:" || a["qrtz_job_details"][:3] != "50:" {
		t.Errorf("qrtz_job_details: %q, want 50 rows and a checksum", a["qrtz_job_details"])
	}
	if a["qrtz_fired_triggers"] != "0:" {
		t.Errorf("empty table: %q, want \"0:\"", a["qrtz_fired_triggers"])
	}

	// Same rows in another physical order, and another bytea_output.
	for _, sql := range []string{
		`UPDATE qrtz_job_details SET job_data = job_data WHERE job_name < 'job-00025'`,
		`UPDATE qrtz_calendars SET calendar = calendar WHERE calendar_name = 'holidays'`,
		`SET bytea_output = 'escape'`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if b := fp(); !maps.Equal(a, b) {
		t.Errorf("fingerprint changed with row order:\n%v\n%v", a, b)
	}

	// One byte of one row.
	if _, err := conn.Exec(ctx, `UPDATE qrtz_calendars SET calendar = calendar || '\x00'::bytea WHERE calendar_name = 'weekdays'`); err != nil {
		t.Fatal(err)
	}
	b := fp()
	for _, table := range Tables() {
		if changed := a[table] != b[table]; changed != (table == "qrtz_calendars") {
			t.Errorf("%s: %q then %q", table, a[table], b[table])
		}
	}
}
