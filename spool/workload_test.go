package spool

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/schedsync/schedsync/internal/change"
)

// A Quartz-like workload for benchmarks: what a clustered Quartz scheduler
// with a few thousand triggers writes to its repository as triggers fire and
// jobs complete, plus a job history table with a jsonb payload column.

type workload struct {
	rng      *rand.Rand
	triggers []trigger
	now      int64 // epoch milliseconds
	entry    int
	xid      uint64
}

type trigger struct {
	name, group, job string
	jobData          string // bytea in hex output form: \x...
	next, prev       int64
	priority         int
	period           int64
}

var (
	triggerCols = []string{"sched_name", "trigger_name", "trigger_group", "job_name", "job_group", "description",
		"next_fire_time", "prev_fire_time", "priority", "trigger_state", "trigger_type", "start_time", "end_time",
		"calendar_name", "misfire_instr", "job_data"}
	triggerKey = []string{"sched_name", "trigger_name", "trigger_group"}
	firedCols  = []string{"sched_name", "entry_id", "trigger_name", "trigger_group", "instance_name", "fired_time",
		"sched_time", "priority", "state", "job_name", "job_group", "is_nonconcurrent", "requests_recovery"}
	firedKey     = []string{"sched_name", "entry_id"}
	stateCols    = []string{"sched_name", "instance_name", "last_checkin_time", "checkin_interval"}
	stateKey     = []string{"sched_name", "instance_name"}
	historyCols  = []string{"id", "job_name", "job_group", "started_at", "finished_at", "status", "payload"}
	groups       = []string{"DEFAULT", "billing", "reports", "etl", "notifications"}
	jobDataKeys  = []string{"tenantId", "endpointUrl", "retryCount", "batchSize", "payloadRef", "lastRunMillis", "owner", "timeoutSeconds"}
	regions      = []string{"eu-west-1", "us-east-1", "ap-south-1"}
	statuses     = []string{"SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED", "RETRYING"}
	instanceName = "node01.example.internal1700000000123"
)

func newWorkload(seed uint64, triggers int) *workload {
	w := &workload{rng: rand.New(rand.NewPCG(seed, 42)), now: 1_700_000_000_000, xid: 100_000}
	for i := range triggers {
		g := groups[i%len(groups)]
		w.triggers = append(w.triggers, trigger{
			name: fmt.Sprintf("trg_%s_%05d", g, i), group: g, job: fmt.Sprintf("job_%s_%05d", g, i),
			jobData: w.jobData(), priority: 5, period: int64(60_000 * (1 + w.rng.IntN(60))),
			next: w.now + int64(w.rng.IntN(3_600_000)),
		})
	}
	return w
}

// jobData is a hex bytea of a Java-serialized JobDataMap: the class
// descriptors repeat in every one, the entries vary.
func (w *workload) jobData() string {
	b := []byte{0xac, 0xed, 0x00, 0x05, 0x73, 0x72}
	for _, cls := range []string{"org.quartz.JobDataMap", "org.quartz.utils.StringKeyDirtyFlagMap", "org.quartz.utils.DirtyFlagMap"} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(cls)))
		b = append(b, cls...)
		b = append(b, 0x9f, 0xb0, 0x83, 0xe8, 0xbf, 0xa9, 0xb0, 0xcb, 0x02, 0x00, 0x00, 0x78, 0x72)
	}
	b = append(b, "\x00\x05Z\x00\x05dirtyL\x00\x03mapt\x00\x0fLjava/util/Map;xp\x00sr\x00\x11java.util.HashMap\x05\x07\xda\xc1\xc3\x16`\xd1\x03\x00\x02F\x00\nloadFactorI\x00\tthresholdxp?@\x00\x00\x00\x00\x00\x0cw\x08\x00\x00\x00\x10"...)
	n := 2 + w.rng.IntN(4)
	for _, k := range w.rng.Perm(len(jobDataKeys))[:n] {
		key := jobDataKeys[k]
		b = append(b, 't', 0, byte(len(key)))
		b = append(b, key...)
		switch k % 3 {
		case 0: // a java.lang.Long
			b = append(b, "sr\x00\x0ejava.lang.Long;\x8b\xe4\x90\xcc\x8f#\xdf\x02\x00\x01J\x00\x05valuexr\x00\x10java.lang.Number\x86\xac\x95\x1d\x0b\x94\xe0\x8b\x02\x00\x00xp"...)
			b = binary.BigEndian.AppendUint64(b, w.rng.Uint64N(1<<40))
		case 1: // a string with an id in it
			v := fmt.Sprintf("https://api.example.com/v2/tenants/%d/exports/%016x", w.rng.IntN(5000), w.rng.Uint64())
			b = append(b, 't', 0, byte(len(v)))
			b = append(b, v...)
		default: // a few random bytes (a serialized token)
			b = append(b, 'u', 'r', 0, 2, '[', 'B', 0xac, 0xf3, 0x17, 0xf8, 0x06, 0x08, 0x54, 0xe0, 0x02, 0, 0, 'x', 'p', 0, 0, 0, 24)
			for range 3 {
				b = binary.LittleEndian.AppendUint64(b, w.rng.Uint64())
			}
		}
	}
	b = append(b, 'x', 0)
	return `\x` + hex.EncodeToString(b)
}

func i64(v int64) change.Value { return change.Text(strconv.FormatInt(v, 10)) }

func (w *workload) triggerRow(t *trigger, state string) []change.Value {
	return []change.Value{change.Text("ClusteredScheduler"), change.Text(t.name), change.Text(t.group), change.Text(t.job),
		change.Text(t.group), change.Null, i64(t.next), i64(t.prev), i64(int64(t.priority)), change.Text(state),
		change.Text("SIMPLE"), i64(t.next - 86_400_000), i64(0), change.Null, i64(0), change.Text(t.jobData)}
}

func (w *workload) triggerUpdate(t *trigger, state string) change.Change {
	return change.Change{Op: change.Update, Schema: "public", Table: "qrtz_triggers", Columns: triggerCols,
		New: w.triggerRow(t, state), KeyColumns: triggerKey,
		OldKey: []change.Value{change.Text("ClusteredScheduler"), change.Text(t.name), change.Text(t.group)}}
}

// next returns the next transaction of the workload.
func (w *workload) next() *change.Txn {
	w.now += int64(w.rng.IntN(40))
	w.xid++
	txn := &change.Txn{TxnHeader: change.TxnHeader{XID: w.xid, CommitTime: time.UnixMilli(w.now).UTC()}}
	t := &w.triggers[w.rng.IntN(len(w.triggers))]
	switch r := w.rng.IntN(100); {
	case r < 55: // a trigger fires: acquired, fired, rescheduled
		w.entry++
		entry := fmt.Sprintf("%s%d", instanceName, w.entry)
		txn.Changes = append(txn.Changes, w.triggerUpdate(t, "ACQUIRED"),
			change.Change{Op: change.Insert, Schema: "public", Table: "qrtz_fired_triggers", Columns: firedCols,
				New: []change.Value{change.Text("ClusteredScheduler"), change.Text(entry), change.Text(t.name),
					change.Text(t.group), change.Text(instanceName), i64(w.now), i64(t.next), i64(5), change.Text("EXECUTING"),
					change.Text(t.job), change.Text(t.group), change.Text("f"), change.Text("t")}})
		t.prev, t.next = t.next, t.next+t.period
		txn.Changes = append(txn.Changes, w.triggerUpdate(t, "WAITING"))
	case r < 90: // a job completes: fired entry gone, history row written
		entry := fmt.Sprintf("%s%d", instanceName, max(1, w.entry-w.rng.IntN(20)))
		txn.Changes = append(txn.Changes,
			change.Change{Op: change.Delete, Schema: "public", Table: "qrtz_fired_triggers", KeyColumns: firedKey,
				OldKey: []change.Value{change.Text("ClusteredScheduler"), change.Text(entry)}},
			change.Change{Op: change.Insert, Schema: "public", Table: "job_history", Columns: historyCols,
				New: []change.Value{i64(int64(w.xid)), change.Text(t.job), change.Text(t.group),
					change.Text(time.UnixMilli(w.now - 5000).UTC().Format("2006-01-02 15:04:05.999999+00")),
					change.Text(time.UnixMilli(w.now).UTC().Format("2006-01-02 15:04:05.999999+00")),
					change.Text(statuses[w.rng.IntN(len(statuses))]), change.Text(w.payload(t))}})
	default: // the scheduler instance checks in
		txn.Changes = append(txn.Changes, change.Change{Op: change.Update, Schema: "public", Table: "qrtz_scheduler_state",
			Columns: stateCols, New: []change.Value{change.Text("ClusteredScheduler"), change.Text(instanceName), i64(w.now), i64(7500)},
			KeyColumns: stateKey, OldKey: []change.Value{change.Text("ClusteredScheduler"), change.Text(instanceName)}})
	}
	return txn
}

// payload is a jsonb column value as PostgreSQL prints it.
func (w *workload) payload(t *trigger) string {
	ids := make([]string, 1+w.rng.IntN(6))
	for i := range ids {
		ids[i] = strconv.Itoa(100000 + w.rng.IntN(900000))
	}
	return fmt.Sprintf(`{"args": {"region": %q, "priority": "normal", "tenant_id": %d, "invoice_ids": [%s]}, "errors": [], "attempt": %d, "metadata": {"job": %q, "node": "node01", "trace_id": "%016x%016x", "duration_ms": %d}}`,
		regions[w.rng.IntN(len(regions))], w.rng.IntN(5000), strings.Join(ids, ", "), 1+w.rng.IntN(3), t.job,
		w.rng.Uint64(), w.rng.Uint64(), w.rng.IntN(120000))
}

// rawSize is the raw change bytes of a transaction, as change.Size counts
// them: the denominator of throughput and compression figures.
func rawSize(t *change.Txn) int64 {
	var n int64
	for i := range t.Changes {
		n += int64(t.Changes[i].Size())
	}
	return n
}
