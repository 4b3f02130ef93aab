package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/schedsync/schedsync/internal/change"
)

// The backlog is made of what a clustered Quartz scheduler writes to its
// repository (the qrtz_* tables of internal/testkit/quartz): 55 % of transactions
// fire a trigger (qrtz_triggers updated twice, a qrtz_fired_triggers row
// inserted), 35 % complete a job (its JobDataMap rewritten in
// qrtz_job_details, the fired row deleted), 10 % are a scheduler check-in.
// JobDataMaps are Java-serialized, hex-encoded byteas whose class
// descriptors repeat and whose entries vary, some of them random.
//
// A pool of distinct transactions is generated once and cycled, each
// appended copy with a fresh XID and commit time. The spool compresses
// every record (256 KiB of raw changes) on its own, so a pool much larger
// than a record does not make the data more compressible than generating
// every transaction afresh, and it keeps the prefill bound by the spool.

// xidBase keeps the synthetic XIDs far above any xid8 the master
// repository can reach, so the master's capture recovery, which deletes the
// audit rows of spooled XIDs, can never match a real transaction.
const xidBase = 1 << 60

const schedName = "ClusteredScheduler"

var (
	triggerCols = []string{"sched_name", "trigger_name", "trigger_group", "job_name", "job_group", "description",
		"next_fire_time", "prev_fire_time", "priority", "trigger_state", "trigger_type", "start_time", "end_time",
		"calendar_name", "misfire_instr", "job_data"}
	triggerKey = []string{"sched_name", "trigger_name", "trigger_group"}
	firedCols  = []string{"sched_name", "entry_id", "trigger_name", "trigger_group", "instance_name", "fired_time",
		"sched_time", "priority", "state", "job_name", "job_group", "is_nonconcurrent", "requests_recovery"}
	firedKey   = []string{"sched_name", "entry_id"}
	jobCols    = []string{"sched_name", "job_name", "job_group", "description", "job_class_name", "is_durable", "is_nonconcurrent", "is_update_data", "requests_recovery", "job_data"}
	jobKey     = []string{"sched_name", "job_name", "job_group"}
	stateCols  = []string{"sched_name", "instance_name", "last_checkin_time", "checkin_interval"}
	stateKey   = []string{"sched_name", "instance_name"}
	groups     = []string{"DEFAULT", "billing", "reports", "etl", "notifications"}
	dataKeys   = []string{"tenantId", "endpointUrl", "retryCount", "batchSize", "payloadRef", "lastRunMillis", "owner", "timeoutSeconds"}
	jobClasses = []string{"com.example.jobs.InvoiceExportJob", "com.example.jobs.ReportJob", "com.example.jobs.EtlLoadJob", "com.example.jobs.NotifyJob"}
	instances  = []string{"node01.example.internal1700000000123", "node02.example.internal1700000000456"}
)

// generator makes Quartz-like transactions.
type generator struct {
	rng      *rand.Rand
	triggers []trigger
	now      int64 // epoch milliseconds
	entry    int
	noise    int // random bytes added to every JobDataMap, to make the data less compressible
}

type trigger struct {
	name, group, job, class string
	next, prev, period      int64
}

func newGenerator(seed uint64, triggers, noise int) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, 7)), now: 1_700_000_000_000, noise: noise}
	for i := range triggers {
		grp := groups[i%len(groups)]
		g.triggers = append(g.triggers, trigger{
			name: fmt.Sprintf("trg_%s_%05d", grp, i), group: grp, job: fmt.Sprintf("job_%s_%05d", grp, i),
			class: jobClasses[i%len(jobClasses)], period: int64(60_000 * (1 + g.rng.IntN(60))),
			next: g.now + int64(g.rng.IntN(3_600_000)),
		})
	}
	return g
}

// pool returns n distinct transactions and their raw change bytes, as
// change.Size counts them.
func (g *generator) pool(n int) ([]*change.Txn, []int64) {
	txns := make([]*change.Txn, n)
	sizes := make([]int64, n)
	for i := range txns {
		txns[i] = g.next()
		for j := range txns[i].Changes {
			sizes[i] += int64(txns[i].Changes[j].Size())
		}
	}
	return txns, sizes
}

func (g *generator) next() *change.Txn {
	g.now += int64(g.rng.IntN(40))
	txn := &change.Txn{}
	t := &g.triggers[g.rng.IntN(len(g.triggers))]
	inst := instances[g.rng.IntN(len(instances))]
	switch r := g.rng.IntN(100); {
	case r < 55:
		txn.Changes = g.fire(t, inst)
	case r < 90:
		txn.Changes = g.complete(t, inst)
	default:
		txn.Changes = []change.Change{{Op: change.Update, Schema: "public", Table: "qrtz_scheduler_state",
			Columns: stateCols, New: texts(schedName, inst, itoa(g.now), "1000"),
			KeyColumns: stateKey, OldKey: texts(schedName, inst)}}
	}
	return txn
}

// fire is a trigger acquired, fired and rescheduled.
func (g *generator) fire(t *trigger, inst string) []change.Change {
	g.entry++
	entry := inst + strconv.Itoa(g.entry)
	acquired := g.triggerUpdate(t, "ACQUIRED")
	fired := change.Change{Op: change.Insert, Schema: "public", Table: "qrtz_fired_triggers", Columns: firedCols,
		New: texts(schedName, entry, t.name, t.group, inst, itoa(g.now), itoa(t.next), "5", "EXECUTING",
			t.job, t.group, "f", "t")}
	t.prev, t.next = t.next, t.next+t.period
	return []change.Change{acquired, fired, g.triggerUpdate(t, "WAITING")}
}

// complete is a job finishing: its JobDataMap saved, its fired row gone.
func (g *generator) complete(t *trigger, inst string) []change.Change {
	entry := inst + strconv.Itoa(max(1, g.entry-g.rng.IntN(20)))
	job := change.Change{Op: change.Update, Schema: "public", Table: "qrtz_job_details", Columns: jobCols,
		New:        append(texts(schedName, t.job, t.group), change.Null, change.Text(t.class), change.Text("t"), change.Text("f"), change.Text("t"), change.Text("f"), change.Text(g.jobData())),
		KeyColumns: jobKey, OldKey: texts(schedName, t.job, t.group)}
	done := change.Change{Op: change.Delete, Schema: "public", Table: "qrtz_fired_triggers",
		KeyColumns: firedKey, OldKey: texts(schedName, entry)}
	return []change.Change{job, done}
}

func (g *generator) triggerUpdate(t *trigger, state string) change.Change {
	row := texts(schedName, t.name, t.group, t.job, t.group)
	row = append(row, change.Null, change.Text(itoa(t.next)), change.Text(itoa(t.prev)), change.Text("5"),
		change.Text(state), change.Text("SIMPLE"), change.Text(itoa(t.next-86_400_000)), change.Text("0"),
		change.Null, change.Text("0"), change.Text(g.jobData()))
	return change.Change{Op: change.Update, Schema: "public", Table: "qrtz_triggers", Columns: triggerCols,
		New: row, KeyColumns: triggerKey, OldKey: texts(schedName, t.name, t.group)}
}

// jobData is a JobDataMap as Java serializes it, in bytea hex output form.
func (g *generator) jobData() string {
	b := []byte{0xac, 0xed, 0x00, 0x05, 0x73, 0x72}
	for _, cls := range []string{"org.quartz.JobDataMap", "org.quartz.utils.StringKeyDirtyFlagMap", "org.quartz.utils.DirtyFlagMap"} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(cls)))
		b = append(b, cls...)
		b = append(b, 0x9f, 0xb0, 0x83, 0xe8, 0xbf, 0xa9, 0xb0, 0xcb, 0x02, 0x00, 0x00, 0x78, 0x72)
	}
	b = append(b, "\x00\x05Z\x00\x05dirtyL\x00\x03mapt\x00\x0fLjava/util/Map;xp\x00sr\x00\x11java.util.HashMap\x05\x07\xda\xc1\xc3\x16`\xd1\x03\x00\x02F\x00\nloadFactorI\x00\tthresholdxp?@\x00\x00\x00\x00\x00\x0cw\x08\x00\x00\x00\x10"...)
	for _, k := range g.rng.Perm(len(dataKeys))[:2+g.rng.IntN(4)] {
		b = g.appendEntry(b, k)
	}
	if g.noise > 0 {
		b = g.appendBytes(append(b, "t\x00\x05nonce"...), g.noise)
	}
	b = append(b, 'x', 0)
	return `\x` + hex.EncodeToString(b)
}

func (g *generator) appendEntry(b []byte, k int) []byte {
	key := dataKeys[k]
	b = append(b, 't', 0, byte(len(key)))
	b = append(b, key...)
	switch k % 3 {
	case 0: // a java.lang.Long
		b = append(b, "sr\x00\x0ejava.lang.Long;\x8b\xe4\x90\xcc\x8f#\xdf\x02\x00\x01J\x00\x05valuexr\x00\x10java.lang.Number\x86\xac\x95\x1d\x0b\x94\xe0\x8b\x02\x00\x00xp"...)
		return binary.BigEndian.AppendUint64(b, g.rng.Uint64N(1<<40))
	case 1: // a URL with ids in it
		v := fmt.Sprintf("https://api.example.com/v2/tenants/%d/exports/%016x", g.rng.IntN(5000), g.rng.Uint64())
		b = append(b, 't', 0, byte(len(v)))
		return append(b, v...)
	}
	return g.appendBytes(b, 24) // a serialized token
}

// appendBytes appends a byte[] of n random bytes.
func (g *generator) appendBytes(b []byte, n int) []byte {
	b = append(b, 'u', 'r', 0, 2, '[', 'B', 0xac, 0xf3, 0x17, 0xf8, 0x06, 0x08, 0x54, 0xe0, 0x02, 0, 0, 'x', 'p')
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	for range n / 8 {
		b = binary.LittleEndian.AppendUint64(b, g.rng.Uint64())
	}
	for range n % 8 {
		b = append(b, byte(g.rng.Uint32()))
	}
	return b
}

// stamp gives a pooled transaction the header of the i-th appended one.
func stamp(txn *change.Txn, i uint64) {
	txn.XID = xidBase + i
	txn.CommitTime = time.UnixMilli(1_700_000_000_000 + int64(i)).UTC()
}

func texts(vs ...string) []change.Value {
	out := make([]change.Value, len(vs))
	for i, v := range vs {
		out[i] = change.Text(v)
	}
	return out
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
