package apply_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/internal/change"
)

// Where a run of the applier is killed, once it has committed the groups
// it must commit first. A kill point is chosen by what the applier has
// done, never by how long it has run, so that every run makes progress
// however slow the machine.
const (
	// atCommit: as a group's commit returns, between groups.
	atCommit = iota
	// midGroup: as the next group(s) read their n-th transaction, before
	// any of the group is sent.
	midGroup
	// halfSent: the connection dies with half of the next group sent and
	// its COMMIT not: the server rolls back an open transaction.
	halfSent
	// commitSent: the connection dies once the next group, COMMIT
	// included, is sent: the server commits, and the applier never learns.
	commitSent
	killPoints
)

var killPointNames = [killPoints]string{"at a commit", "mid-group", "with half a group sent", "with the COMMIT sent"}

// killPlan cancels one run of the applier at a kill point. Its hooks are
// called from the applier's goroutine only.
type killPlan struct {
	cancel  context.CancelFunc
	end     uint64 // the spool's end: a run that gets there is stopped
	commits int    // groups to commit before the kill point counts
	point   int
	nth     int // midGroup: the transaction to kill at

	read        int // transactions read since the plan was armed
	armed       bool
	commitBatch bool   // a batch that ends in COMMIT is being sent
	committed   uint64 // the last position whose commit the applier saw
}

func newKillPlan(rng *rand.Rand, cancel context.CancelFunc, end uint64) *killPlan {
	return &killPlan{cancel: cancel, end: end, commits: 1 + rng.Intn(2), point: rng.Intn(killPoints), nth: 1 + rng.Intn(6)}
}

func (p *killPlan) String() string {
	if p.point == midGroup {
		return fmt.Sprintf("%s (transaction %d)", killPointNames[p.point], p.nth)
	}
	return killPointNames[p.point]
}

// applier makes the applier that p kills, with groups of at most
// batchBytes of changes. Groups are bounded by size only, not by time, so
// that they are the same on any machine.
func (p *killPlan) applier(slaveURL, appName string, log apply.Log, batchBytes int) (*apply.Applier, error) {
	cfg, err := pgx.ParseConfig(slaveURL)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = appName
	cfg.Tracer = commitTracer{p}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &killConn{Conn: c, plan: p}, nil
	}
	return apply.New(apply.Options{ConnConfig: cfg, BatchMaxBytes: batchBytes, BatchMaxDelay: time.Hour, OnApplied: p.applied},
		countingLog{Log: log, read: p.readOne}), nil
}

func (p *killPlan) applied(pos uint64, _ time.Time) {
	p.committed = pos
	if pos == p.end {
		p.cancel()
		return
	}
	if p.commits--; p.commits > 0 {
		return
	}
	p.armed = true
	if p.point == atCommit {
		p.cancel()
	}
}

func (p *killPlan) readOne() {
	if p.armed && p.point == midGroup {
		if p.read++; p.read == p.nth {
			p.cancel()
		}
	}
}

// countingLog is the spool whose readers call read as they hand the
// applier each transaction.
type countingLog struct {
	apply.Log
	read func()
}

func (l countingLog) NewReader(after uint64) (apply.Reader, error) {
	r, err := l.Log.NewReader(after)
	if err != nil {
		return nil, err
	}
	return countingReader{Reader: r, read: l.read}, nil
}

type countingReader struct {
	apply.Reader
	read func()
}

func (r countingReader) Next(ctx context.Context) (uint64, change.TxnSource, error) {
	pos, src, err := r.Reader.Next(ctx)
	if err == nil {
		r.read()
	}
	return pos, src, err
}

// commitTracer tells the plan while a batch that ends in COMMIT (a group)
// is being sent.
type commitTracer struct{ p *killPlan }

func (commitTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (commitTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c commitTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	q := data.Batch.QueuedQueries
	c.p.commitBatch = len(q) > 0 && q[len(q)-1].SQL == "COMMIT"
	return ctx
}
func (c commitTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.p.commitBatch = false // the batch has been sent
}
func (c commitTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {
	c.p.commitBatch = false
}

// errKilled is what the applier's connection says once the plan killed it.
var errKilled = errors.New("killed by the test")

// killConn is the applier's connection to the slave; it dies at the plan's
// halfSent and commitSent points, when the group's statements are written
// (pgx writes a pipeline's Bind and Execute messages, after any Parse
// round trip, in one write).
type killConn struct {
	net.Conn
	plan *killPlan
}

func (c *killConn) Write(b []byte) (int, error) {
	p := c.plan
	if !p.armed || !p.commitBatch || (p.point != halfSent && p.point != commitSent) || !executes(b) {
		return c.Conn.Write(b)
	}
	if p.point == halfSent {
		b = b[:len(b)/2]
	}
	n, err := c.Conn.Write(b)
	p.cancel()
	c.Conn.Close() // no result comes back: the applier is gone
	if err == nil {
		err = errKilled
	}
	return n, err
}

// executes reports whether b is whole frontend messages of which one is an
// Execute.
func executes(b []byte) bool {
	found := false
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if n < 4 || n+1 > len(b) {
			return false
		}
		found = found || b[0] == 'E'
		b = b[1+n:]
	}
	return found && len(b) == 0
}
