package capture

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Exact snapshots in logical mode
//
// A temporary replication slot created with an exported snapshot gives a
// snapshot and an LSN, its consistent point CP, such that the snapshot
// holds exactly the transactions whose commit record is before CP: the
// server builds both from the WAL. Our own slot delivers transactions in
// commit-LSN order, so the spool position the snapshot equals is X, the
// last spooled transaction whose commit LSN is below CP, known once the
// stream has gone past CP (a transaction committing at or after CP, or a
// keepalive whose send position is at or after CP).
//
// Sequences are not transactional: the function reads current values,
// which may be ahead of what was sampled by X. Once the function is done
// the reader samples them again and reports that sample's position as
// SequencesAt, after X: a slave compares its sequences once applied there.

// snapshotSlotTimeout bounds the creation of the temporary slot, which
// waits for the transactions running at that moment to end.
const snapshotSlotTimeout = 2 * time.Minute

var snapshotSeq atomic.Uint64

// logicalSnapshot is one snapshot in progress, serving a batch of requests.
type logicalSnapshot struct {
	reqs []snapshotRequest
	// base is the last spool position before the snapshot was started:
	// every transaction at or before it commits before CP.
	base uint64
	// track lists the transactions appended since, with their commit LSN.
	track []posLSN
	cpCh  chan pglogrepl.LSN
	cp    pglogrepl.LSN // 0 until known
	// maxSeen is the highest commit LSN or send position seen since.
	maxSeen pglogrepl.LSN
	doneCh  chan error
	fnDone  bool
	fnErr   error
	asked   time.Time // last keepalive request while waiting for past
	cancel  context.CancelFunc
}

type posLSN struct {
	pos uint64
	lsn pglogrepl.LSN
}

func (s *logicalSnapshot) consistentAt(cp pglogrepl.LSN) { s.cp = cp }

// sawLSN notes a commit LSN or a send position seen in the stream.
func (s *logicalSnapshot) sawLSN(lsn pglogrepl.LSN) { s.maxSeen = max(s.maxSeen, lsn) }

// past says the stream has gone past CP: every transaction committed
// before it has been received.
func (s *logicalSnapshot) past() bool { return s.cp != 0 && s.maxSeen >= s.cp }

func (s *logicalSnapshot) appended(pos uint64, lsn pglogrepl.LSN) {
	s.track = append(s.track, posLSN{pos, lsn})
}

func (s *logicalSnapshot) fnFinished(err error) { s.fnDone, s.fnErr = true, err }

// position is X: the last transaction committed before CP.
func (s *logicalSnapshot) position() uint64 {
	x := s.base
	for _, t := range s.track {
		if t.lsn >= s.cp {
			break
		}
		x = t.pos
	}
	return x
}

// abandon answers the requests with err and stops the snapshot's work.
func (s *logicalSnapshot) abandon(err error) {
	s.cancel()
	for _, q := range s.reqs {
		q.done <- SnapshotResult{Err: err}
	}
}

// snapshots starts a snapshot for waiting requests, and finishes the one
// in progress once its function is done and the stream is past CP.
func (r *LogicalReader) snapshots(ctx context.Context) error {
	s := r.snap
	if s == nil {
		reqs := r.snaps.take()
		if len(reqs) == 0 {
			return nil
		}
		sctx, cancel := context.WithCancel(ctx)
		s = &logicalSnapshot{reqs: reqs, base: r.sink.LastPosition(), cpCh: make(chan pglogrepl.LSN, 1),
			doneCh: make(chan error, 1), cancel: cancel}
		r.snap = s
		go r.takeSnapshot(sctx, reqs, s.cpCh, s.doneCh)
		return nil
	}
	select {
	case cp := <-s.cpCh:
		s.consistentAt(cp)
	default:
	}
	select {
	case err := <-s.doneCh:
		s.fnFinished(err)
	default:
	}
	if s.fnDone && s.fnErr != nil && s.cp == 0 {
		// The snapshot could not be taken at all.
		r.snap = nil
		s.abandon(s.fnErr)
		return nil
	}
	if s.cp != 0 && !s.past() && time.Since(s.asked) > 20*time.Millisecond {
		// The server answers with a keepalive carrying its send position.
		s.asked = time.Now()
		if err := r.sendStatus(ctx, true); err != nil {
			return err
		}
	}
	if !s.fnDone || !s.past() {
		return nil
	}
	return r.finishSnapshot(ctx, s)
}

// finishSnapshot makes X durable, samples the sequences after the
// function read them, and answers the requests.
func (r *LogicalReader) finishSnapshot(ctx context.Context, s *logicalSnapshot) error {
	r.snap = nil
	defer s.cancel()
	if err := r.flush(ctx); err != nil {
		return err
	}
	r.sampled = time.Time{}
	if err := r.sampleSequences(ctx, false); err != nil {
		return err
	}
	res := SnapshotResult{Position: s.position(), SequencesAt: r.sink.LastPosition(), Epoch: r.epoch.Load(), Err: s.fnErr}
	if err := r.writeState(ctx, true); err != nil {
		return err
	}
	for _, q := range s.reqs {
		q.done <- res
	}
	return nil
}

// takeSnapshot creates a temporary slot with an exported snapshot, reports
// its consistent point, and runs the requests' functions in the snapshot.
func (r *LogicalReader) takeSnapshot(ctx context.Context, reqs []snapshotRequest, cpCh chan<- pglogrepl.LSN, done chan<- error) {
	done <- r.runSnapshot(ctx, reqs, cpCh)
}

func (r *LogicalReader) runSnapshot(ctx context.Context, reqs []snapshotRequest, cpCh chan<- pglogrepl.LSN) error {
	rc, err := pgconn.ConnectConfig(ctx, replicationConfig(r.opts.ConnConfig))
	if err != nil {
		return fmt.Errorf("open a replication connection for a snapshot: %w", err)
	}
	defer rc.Close(context.Background())
	name := fmt.Sprintf("schedsync_snap_%d_%d", os.Getpid(), snapshotSeq.Add(1))
	cctx, cancel := context.WithTimeout(ctx, snapshotSlotTimeout)
	res, err := pglogrepl.CreateReplicationSlot(cctx, rc, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("create a temporary replication slot for an exact snapshot (it waits for the transactions running now to end, at most %s): %w", snapshotSlotTimeout, err)
	}
	cp, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return fmt.Errorf("parse the consistent point %q: %w", res.ConsistentPoint, err)
	}
	conn, err := pgx.ConnectConfig(ctx, r.opts.ConnConfig)
	if err != nil {
		return fmt.Errorf("connect for a snapshot: %w", err)
	}
	defer conn.Close(context.Background())
	tx, err := BeginInSnapshot(ctx, conn, res.SnapshotName)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	// Imported: the temporary slot may go (closing its connection drops it).
	_ = rc.Close(ctx)
	cpCh <- cp
	for _, q := range reqs {
		if err := q.fn(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

// writeState records in capture_state a position P whose transactions are
// all visible to this transaction's snapshot, and so to every snapshot that
// sees the update (backup reads P in its snapshot). A transaction is
// delivered once its commit is in the WAL, which can be a moment before it
// is visible; P stops before the first one this snapshot does not see.
func (r *LogicalReader) writeState(ctx context.Context, force bool) error {
	if len(r.recent) == 0 || (!force && time.Since(r.stateWritten) < stateInterval) {
		return nil
	}
	r.stateWritten = time.Now()
	last := r.sink.LastPosition()
	return pgx.BeginFunc(ctx, r.conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		var text string
		if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&text); err != nil {
			return fmt.Errorf("read the current snapshot: %w", err)
		}
		snap, err := parseSnapshot(text)
		if err != nil {
			return err
		}
		p, keep := last, len(r.recent)
		var lsn pglogrepl.LSN
		for i, t := range r.recent {
			if !snap.visible(t.xid) {
				p, keep = t.pos-1, i
				break
			}
			lsn = t.lsn
		}
		if _, err := tx.Exec(ctx, `UPDATE schedsync.capture_state SET position = $1, lsn = greatest(lsn, $2), updated_at = now()
			WHERE id = 1 AND position < $1`, int64(p), int64(lsn)); err != nil {
			return fmt.Errorf("update schedsync.capture_state: %w", err)
		}
		r.recent = append(r.recent[:0], r.recent[keep:]...)
		return nil
	})
}

// pgSnapshot is pg_current_snapshot(): transactions below xmin are done,
// those at or above xmax had not started, those in xip were running.
type pgSnapshot struct {
	xmin, xmax uint64
	xip        map[uint64]bool
}

func parseSnapshot(s string) (pgSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return pgSnapshot{}, fmt.Errorf("unexpected snapshot %q", s)
	}
	var snap pgSnapshot
	var err error
	if snap.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return snap, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if snap.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return snap, fmt.Errorf("snapshot %q: %w", s, err)
	}
	snap.xip = map[uint64]bool{}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return snap, fmt.Errorf("snapshot %q: %w", s, err)
			}
			snap.xip[v] = true
		}
	}
	return snap, nil
}

// visible says whether the committed transaction with 32-bit id xid is
// visible: its full id is the one nearest xmax with those low bits.
func (s pgSnapshot) visible(xid uint32) bool {
	full := s.xmax&^0xffffffff | uint64(xid)
	switch {
	case full > s.xmax+1<<31 && full >= 1<<32:
		full -= 1 << 32
	case full+1<<31 < s.xmax:
		full += 1 << 32
	}
	return full < s.xmin || (full < s.xmax && !s.xip[full])
}
