package quartz

import (
	"math/rand/v2"

	"github.com/jackc/pgx/v5"
)

// Trigger types as Quartz writes them into qrtz_triggers.trigger_type.
// CAL_INT and DAILY_I triggers keep their properties in qrtz_simprop_triggers.
const (
	kindSimple = "SIMPLE"
	kindCron   = "CRON"
	kindCalInt = "CAL_INT"
	kindDaily  = "DAILY_I"
	kindBlob   = "BLOB"
)

// jobSpec is a job with its triggers, as inserted by Seed and by Run's
// additions.
type jobSpec struct {
	name, group, class string
	description        *string
	durable            bool
	nonconcurrent      bool
	updateData         bool
	recovery           bool
	data               []byte
	triggers           []triggerSpec
}

type triggerSpec struct {
	name, group string
	description *string
	next, prev  int64
	priority    int32
	state, kind string
	start       int64
	end         *int64
	calendar    *string
	misfire     int16
	data        []byte
	child       []any // the child table's columns after the key
}

// newJob makes a job named name in group with one trigger (in 10% of jobs
// two), all due within their first interval of now.
func newJob(r *rand.Rand, name, group string, now int64) jobSpec {
	j := jobSpec{
		name:          name,
		group:         group,
		class:         jobClasses[r.IntN(len(jobClasses))],
		description:   description(r),
		durable:       r.IntN(4) == 0,
		nonconcurrent: r.IntN(5) == 0,
		updateData:    r.IntN(3) == 0,
		recovery:      r.IntN(2) == 0,
		data:          jobData(r, "seed", 0),
	}
	if r.IntN(10) == 0 {
		j.data = nil
	}
	n := 1
	if r.IntN(10) == 0 {
		n = 2
	}
	for i := range n {
		tname := "trg-" + name
		if i > 0 {
			tname += "-b"
		}
		tgroup := group
		if r.IntN(5) == 0 {
			tgroup = groups[r.IntN(len(groups))]
		}
		j.triggers = append(j.triggers, newTrigger(r, tname, tgroup, now))
	}
	return j
}

// newTrigger makes a WAITING trigger of a random type with its child row.
func newTrigger(r *rand.Rand, name, group string, now int64) triggerSpec {
	t := triggerSpec{
		name:        name,
		group:       group,
		description: description(r),
		prev:        -1, // Quartz writes -1, not NULL, for "never fired"
		priority:    priority(r),
		state:       "WAITING",
		start:       now - r.Int64N(30*86400000),
		data:        triggerData(r),
	}
	end := int64(0) // Quartz writes 0 for "no end time"
	switch r.IntN(20) {
	case 0:
		t.end = nil // as other writers leave it
	case 1:
		end = now + 10*365*86400000
		t.end = &end
	default:
		t.end = &end
	}
	if r.IntN(5) == 0 {
		t.calendar = &calendarNames[r.IntN(len(calendarNames))]
	}
	var interval int64
	switch p := r.IntN(100); {
	case p < 50:
		t.kind = kindSimple
		interval = simpleIntervals[r.IntN(len(simpleIntervals))]
		repeat := int64(-1) // REPEAT_INDEFINITELY
		if r.IntN(3) == 0 {
			repeat = 2 + r.Int64N(20) // completes, and then is deleted
		}
		t.child = []any{repeat, interval, int64(0)}
	case p < 75:
		t.kind = kindCron
		c := cronSchedules[r.IntN(len(cronSchedules))]
		interval = c.period
		var tz *string
		if r.IntN(10) != 0 {
			tz = &timeZones[r.IntN(len(timeZones))]
		}
		t.child = []any{c.expr, tz}
	case p < 90:
		t.kind, t.child, interval = simpropTrigger(r)
	default:
		t.kind = kindBlob
		interval = 500 + r.Int64N(4500)
		t.child = []any{blobData(r, 0)}
	}
	t.misfire = misfireInstruction(r, t.kind)
	t.next = now + r.Int64N(interval+1)
	return t
}

// simpropTrigger returns the qrtz_simprop_triggers columns of a calendar- or
// daily-interval trigger, laid out as Quartz's persistence delegates do:
// str_prop_1 the interval unit, int_prop_1 the interval, int_prop_2 the
// times triggered. The decimal columns Quartz leaves NULL get values now and
// then so that numeric(13,4) is replicated too.
func simpropTrigger(r *rand.Rand) (kind string, child []any, interval int64) {
	unit, n := "SECOND", int32(1+r.IntN(10))
	if r.IntN(5) == 0 {
		unit, n = "MINUTE", 1
	}
	interval = int64(n) * intervalUnits[unit]
	var dec1, dec2 *float64
	if r.IntN(3) == 0 {
		a, b := float64(r.IntN(1e8))/1e4, -float64(r.IntN(1e12))/1e4
		dec1, dec2 = &a, &b
	}
	tz := timeZones[r.IntN(len(timeZones))]
	if r.IntN(2) == 0 {
		// str_prop_2: time zone; bool props: preserveHourOfDay…, skipDay…
		return kindCalInt, []any{unit, &tz, nil, n, int32(0), nil, nil, dec1, dec2, r.IntN(2) == 0, r.IntN(2) == 0}, interval
	}
	// str_prop_2: days of week; str_prop_3: start and end time of day;
	// long_prop_1: repeat count.
	days := "1,2,3,4,5,6,7"
	window := "0,0,0,23,59,59"
	return kindDaily, []any{unit, &days, &window, n, int32(0), int64(-1), nil, dec1, dec2, nil, nil}, interval
}

// Insert statements; onConflict is "" for Run, which must see a duplicate
// as the error it is, and " ON CONFLICT DO NOTHING" for Seed, which may be
// run again on a seeded database.
const (
	insertJob = `INSERT INTO qrtz_job_details (sched_name, job_name, job_group, description, job_class_name,
	is_durable, is_nonconcurrent, is_update_data, requests_recovery, job_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
	insertTrigger = `INSERT INTO qrtz_triggers (sched_name, trigger_name, trigger_group, job_name, job_group, description,
	next_fire_time, prev_fire_time, priority, trigger_state, trigger_type, start_time, end_time, calendar_name,
	misfire_instr, job_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`
	insertSimple = `INSERT INTO qrtz_simple_triggers (sched_name, trigger_name, trigger_group,
	repeat_count, repeat_interval, times_triggered) VALUES ($1, $2, $3, $4, $5, $6)`
	insertCron = `INSERT INTO qrtz_cron_triggers (sched_name, trigger_name, trigger_group,
	cron_expression, time_zone_id) VALUES ($1, $2, $3, $4, $5)`
	insertSimprop = `INSERT INTO qrtz_simprop_triggers (sched_name, trigger_name, trigger_group,
	str_prop_1, str_prop_2, str_prop_3, int_prop_1, int_prop_2, long_prop_1, long_prop_2,
	dec_prop_1, dec_prop_2, bool_prop_1, bool_prop_2) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
	insertBlob = `INSERT INTO qrtz_blob_triggers (sched_name, trigger_name, trigger_group,
	blob_data) VALUES ($1, $2, $3, $4)`
)

var childInserts = map[string]string{
	kindSimple: insertSimple,
	kindCron:   insertCron,
	kindCalInt: insertSimprop,
	kindDaily:  insertSimprop,
	kindBlob:   insertBlob,
}

// queue adds the job's, its triggers' and their child rows' inserts to b, in
// foreign-key order.
func (j *jobSpec) queue(b *pgx.Batch, sched, onConflict string) {
	b.Queue(insertJob+onConflict, sched, j.name, j.group, j.description, j.class,
		j.durable, j.nonconcurrent, j.updateData, j.recovery, j.data)
	for _, t := range j.triggers {
		b.Queue(insertTrigger+onConflict, sched, t.name, t.group, j.name, j.group, t.description,
			t.next, t.prev, t.priority, t.state, t.kind, t.start, t.end, t.calendar, t.misfire, t.data)
		args := append([]any{sched, t.name, t.group}, t.child...)
		b.Queue(childInserts[t.kind]+onConflict, args...)
	}
}
