package capture

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
)

// notifyChannel is the channel capture_statement() notifies.
const notifyChannel = "schedsync_capture"

// TriggerOptions configures a TriggerReader.
type TriggerOptions struct {
	// ConnConfig is the master repository (repository.url).
	ConnConfig *pgx.ConnConfig
	// BatchChanges bounds the changes taken in one poll; whole transactions
	// are taken, so a larger transaction makes a batch of its own.
	BatchChanges int
	// PollInterval is the fallback wake-up when no notification arrives.
	PollInterval time.Duration
	// SequenceSchemas are the schemas whose sequences are sampled and
	// shipped (repository.schemas); none when empty.
	SequenceSchemas []string
	Logger          *slog.Logger
}

// TriggerReader reads the audit table written by the capture triggers.
// Run it from one goroutine.
type TriggerReader struct {
	opts   TriggerOptions
	sink   Sink
	log    *slog.Logger
	conn   *pgx.Conn    // reads and deletes audit rows
	listen *pgx.Conn    // LISTEN schedsync_capture
	polls  atomic.Int64 // Poll calls, for tests
	// shapes are the tables' shapes by audit id (shape.go).
	shapes     map[uint32][]shapeVersion
	haveShapes bool // schedsync.relshape exists
	seqs       *sequenceSampler
	// sampled is when sequences were last sampled.
	sampled time.Time

	// pending is a batch durable in the sink whose audit rows are not yet
	// deleted; it is confirmed before anything else is read.
	pending *confirmation
	// epoch is the capture history, read from capture_state at connect.
	epoch atomic.Uint64

	snaps snapshotQueue
}

// RequestSnapshot asks the capture loop to run fn in the snapshot of its
// next poll that drains the audit table (the request wakes a waiting loop)
// and to report the spool position that snapshot equals, once durable.
func (r *TriggerReader) RequestSnapshot(fn SnapshotFunc) <-chan SnapshotResult {
	return r.snaps.request(fn)
}

// Epoch is the capture history the reader spools into; 0 until connected.
func (r *TriggerReader) Epoch() uint64 { return r.epoch.Load() }

type confirmation struct {
	xids     []string
	position uint64
}

// NewTriggerReader makes a reader; Run connects.
func NewTriggerReader(opts TriggerOptions, sink Sink) *TriggerReader {
	if opts.BatchChanges <= 0 {
		opts.BatchChanges = 10000
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &TriggerReader{opts: opts, sink: sink, log: opts.Logger.With("stage", "capture"), shapes: map[uint32][]shapeVersion{}}
	if len(opts.SequenceSchemas) > 0 {
		r.seqs = newSequenceSampler(opts.SequenceSchemas)
	}
	return r
}

// Run connects and captures until ctx is done or the database fails; the
// caller retries with backoff. It returns nil only when ctx is done.
func (r *TriggerReader) Run(ctx context.Context) error {
	if err := r.Connect(ctx); err != nil {
		return err
	}
	return r.Serve(ctx)
}

// Serve captures on a connected reader until ctx is done (nil) or the
// database fails. It closes the connections when it returns.
func (r *TriggerReader) Serve(ctx context.Context) (err error) {
	defer r.Close()
	defer func() {
		why := err
		if why == nil {
			why = ctx.Err()
		}
		r.snaps.fail(fmt.Errorf("capture stopped: %w", why))
	}()
	for {
		n, err := r.Poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if n > 0 {
			continue // there may be more
		}
		if err := r.wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// Connect opens the connections and recovers from a crash between a sink
// sync and the deletion of the audit rows it covered.
func (r *TriggerReader) Connect(ctx context.Context) error {
	r.Close()
	var err error
	if r.listen, err = pgx.ConnectConfig(ctx, r.opts.ConnConfig); err != nil {
		return fmt.Errorf("connect to master repository: %w", err)
	}
	if _, err = r.listen.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen for changes: %w", err)
	}
	if r.conn, err = pgx.ConnectConfig(ctx, r.opts.ConnConfig); err != nil {
		return fmt.Errorf("connect to master repository: %w", err)
	}
	r.shapes = map[uint32][]shapeVersion{}
	if err := r.conn.QueryRow(ctx, `SELECT to_regclass('schedsync.relshape') IS NOT NULL`).Scan(&r.haveShapes); err != nil {
		return fmt.Errorf("look for schedsync.relshape: %w", err)
	}
	return r.recover(ctx)
}

// Close closes the connections.
func (r *TriggerReader) Close() {
	for _, c := range []*pgx.Conn{r.conn, r.listen} {
		if c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = c.Close(ctx)
			cancel()
		}
	}
	r.conn, r.listen = nil, nil
}

func (r *TriggerReader) recover(ctx context.Context) error {
	if r.pending != nil {
		if err := r.confirm(ctx); err != nil {
			return err
		}
	}
	// A poll that failed after appending some of its transactions left
	// them in the spool, while their audit rows stay: made durable by
	// recoverState, they are found below and their rows deleted, instead
	// of being delivered a second time.
	st, err := recoverState(ctx, r.conn, r.sink)
	if err != nil {
		return err
	}
	r.epoch.Store(st.epoch)
	if err := r.deleteSpooled(ctx, st.position); err != nil {
		return err
	}
	return raisePosition(ctx, r.conn, r.sink.LastPosition(), 0)
}

// deleteSpooled deletes the audit rows of the transactions the spool
// holds after pos: spooled just before a crash, they were not confirmed.
func (r *TriggerReader) deleteSpooled(ctx context.Context, pos uint64) error {
	// Only transactions that still have audit rows matter, so memory is
	// bounded by the audit table, not by the spool after pos (which is
	// large when capture_state was reset by a reinstall).
	rows, err := r.conn.Query(ctx, `SELECT DISTINCT txid::text FROM schedsync.audit`)
	if err != nil {
		return fmt.Errorf("list transactions in schedsync.audit: %w", err)
	}
	pendingTxids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list transactions in schedsync.audit: %w", err)
	}
	if len(pendingTxids) == 0 {
		return nil
	}
	inAudit := make(map[uint64]bool, len(pendingTxids))
	for _, t := range pendingTxids {
		x, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return fmt.Errorf("parse audit txid %q: %w", t, err)
		}
		inAudit[x] = true
	}
	epoch := r.epoch.Load()
	var xids []uint64
	last, err := r.sink.HeadersAfter(ctx, pos, func(_ uint64, h change.TxnHeader) {
		// Audit rows belong to this install's history only.
		if h.Epoch == epoch && inAudit[h.XID] {
			xids = append(xids, h.XID)
		}
	})
	if err != nil {
		return fmt.Errorf("list spooled transactions after position %d: %w", pos, err)
	}
	if len(xids) == 0 {
		return nil
	}
	c := &confirmation{position: last}
	for _, x := range xids {
		c.xids = append(c.xids, strconv.FormatUint(x, 10))
	}
	r.log.Info("deleting audit rows of transactions spooled before a crash", "transactions", len(xids), "position", last)
	r.pending = c
	return r.confirm(ctx)
}

// wait blocks until a notification, a snapshot request or the poll
// interval.
func (r *TriggerReader) wait(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, r.opts.PollInterval)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-r.snaps.woken():
			cancel() // like the poll interval passing: poll now
		case <-stop:
		}
	}()
	_, err := r.listen.WaitForNotification(wctx)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return nil // poll interval passed
	}
	if err != nil {
		return err
	}
	// Every committed transaction notifies, and the notifications of those
	// the last poll already delivered are still queued on the connection:
	// each would wake an empty poll (20,000 of them after a burst, each a
	// scan of the audit table). A round trip on the connection reads every
	// notification sent before it into pgx's buffer, which is then
	// emptied (WaitForNotification returns what it holds before looking
	// at its context). The poll that follows sees the transactions they
	// announced: they committed before.
	if _, err := r.listen.Exec(ctx, "SELECT 1"); err != nil {
		return fmt.Errorf("read the queued notifications: %w", err)
	}
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	for {
		if _, err := r.listen.WaitForNotification(done); err != nil {
			return nil
		}
	}
}

// txnInfo is one committed transaction found in the audit table.
type txnInfo struct {
	xid     string
	changes int64
	last    time.Time
	relids  []uint32
	ddl     bool // it changed the schema: the shapes known may be out of date
}

// Poll delivers one batch of committed transactions to the sink, makes it
// durable and deletes its audit rows. It returns the number of transactions
// delivered.
func (r *TriggerReader) Poll(ctx context.Context) (int, error) {
	r.polls.Add(1)
	if r.pending != nil {
		if err := r.confirm(ctx); err != nil {
			return 0, err
		}
	}
	var conf *confirmation
	var seqs []change.Change
	snaps := r.snaps.take()
	var snapErr error
	err := pgx.BeginTxFunc(ctx, r.conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error {
			batch, complete, err := r.listBatch(ctx, tx, len(snaps) > 0)
			if err != nil {
				return err
			}
			if len(batch) > 0 {
				conf = &confirmation{}
			}
			for _, t := range batch {
				pos, err := r.deliver(ctx, tx, t)
				if err != nil {
					return err
				}
				conf.xids = append(conf.xids, t.xid)
				conf.position = pos
			}
			if !complete {
				r.snaps.requeue(snaps)
				snaps = nil
			}
			// Before sampling: the sequences a snapshot reads are then at
			// or behind what this poll ships.
			for _, sn := range snaps {
				if serr := sn.fn(ctx, tx); serr != nil && snapErr == nil {
					snapErr = serr
				}
			}
			seqs, err = r.sampleSequences(ctx, tx, len(batch) > 0 || len(snaps) > 0)
			return err
		})
	if err != nil {
		r.snaps.requeue(snaps)
		return 0, err
	}
	if conf == nil && seqs == nil && len(snaps) == 0 {
		return 0, nil
	}
	if err := r.sink.Sync(ctx); err != nil {
		r.snaps.requeue(snaps)
		return 0, fmt.Errorf("make captured transactions durable: %w", err)
	}
	if r.seqs != nil {
		r.seqs.shipped(seqs)
	}
	// Snapshot requests are answered once the batch is confirmed, so that
	// capture_state shows it to a snapshot taken next (a backup reads its
	// position there), and in every case: the position is right whether or
	// not the confirm went through.
	last := r.sink.LastPosition()
	defer func() {
		for _, sn := range snaps {
			sn.done <- SnapshotResult{Position: last, SequencesAt: last, Epoch: r.epoch.Load(), Err: snapErr}
		}
	}()
	if conf == nil {
		return 0, nil
	}
	r.pending = conf
	if err := r.confirm(ctx); err != nil {
		return 0, err
	}
	return len(conf.xids), nil
}

// sampleSequences appends the sequences that moved as a transaction of
// their own: always after a batch (so every shipped row's sequence value
// is covered), and at least every poll interval when idle.
func (r *TriggerReader) sampleSequences(ctx context.Context, tx pgx.Tx, delivered bool) ([]change.Change, error) {
	if r.seqs == nil || (!delivered && time.Since(r.sampled) < r.opts.PollInterval) {
		return nil, nil
	}
	r.sampled = time.Now()
	changes, err := r.seqs.sample(ctx, tx)
	if err != nil || len(changes) == 0 {
		return nil, err
	}
	txn := &change.Txn{TxnHeader: change.TxnHeader{CommitTime: r.sampled, Epoch: r.epoch.Load()}, Changes: changes}
	if _, err := r.sink.Append(ctx, txn.Source()); err != nil {
		return nil, fmt.Errorf("spool sequence values: %w", err)
	}
	return changes, nil
}

// listBatch lists committed transactions in delivery order, lowest max(id)
// first, up to the batch size (at least one transaction), or all of them
// when drain is set. complete says nothing visible was left out.
func (r *TriggerReader) listBatch(ctx context.Context, tx pgx.Tx, drain bool) ([]txnInfo, bool, error) {
	limit := int64(r.opts.BatchChanges)
	if drain {
		limit = math.MaxInt64
	}
	rows, err := tx.Query(ctx, `
		SELECT txid::text, count(*), max(at), coalesce(array_agg(DISTINCT relid) FILTER (WHERE op <> 'L'), '{}'), bool_or(op = 'L')
		FROM schedsync.audit GROUP BY txid ORDER BY max(id) LIMIT $1`, limit)
	if err != nil {
		return nil, false, fmt.Errorf("list committed transactions in schedsync.audit: %w", err)
	}
	var batch []txnInfo
	var total int64
	complete := true
	for rows.Next() {
		var t txnInfo
		if err := rows.Scan(&t.xid, &t.changes, &t.last, &t.relids, &t.ddl); err != nil {
			rows.Close()
			return nil, false, fmt.Errorf("read schedsync.audit: %w", err)
		}
		if len(batch) > 0 && total+t.changes > limit {
			complete = false
			break
		}
		total += t.changes
		batch = append(batch, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list committed transactions in schedsync.audit: %w", err)
	}
	if int64(len(batch)) >= limit {
		complete = false
	}
	return batch, complete, nil
}

// deliver streams one transaction's audit rows into the sink.
func (r *TriggerReader) deliver(ctx context.Context, tx pgx.Tx, t txnInfo) (uint64, error) {
	xid, err := strconv.ParseUint(t.xid, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse audit txid %q: %w", t.xid, err)
	}
	// The shapes of the transaction's tables as of its rows are read
	// before its rows: one connection cannot interleave two queries.
	if t.ddl {
		clear(r.shapes)
	}
	if err := r.loadShapes(ctx, tx, t.relids); err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `SELECT id, relid, op, old_row, new_row FROM schedsync.audit
		WHERE txid = $1::text::xid8 ORDER BY id`, t.xid)
	if err != nil {
		return 0, fmt.Errorf("read audit rows of transaction %s: %w", t.xid, err)
	}
	defer rows.Close()
	src := &auditSource{r: r, rows: rows, hdr: change.TxnHeader{XID: xid, CommitTime: t.last, Epoch: r.epoch.Load()}}
	pos, err := r.sink.Append(ctx, src)
	if err != nil {
		return 0, fmt.Errorf("spool transaction %s: %w", t.xid, err)
	}
	if src.n != t.changes {
		// Cannot happen under REPEATABLE READ; refuse rather than ship a
		// transaction that might be incomplete.
		return 0, fmt.Errorf("transaction %s: read %d audit rows, expected %d", t.xid, src.n, t.changes)
	}
	return pos, nil
}

// confirm deletes the audit rows of a durable batch and records its position.
func (r *TriggerReader) confirm(ctx context.Context) error {
	c := r.pending
	err := pgx.BeginFunc(ctx, r.conn, func(tx pgx.Tx) error {
		// Not waiting for this commit to reach disk takes a WAL flush off
		// capture's hot path. If a crash loses it, the audit rows come
		// back, and recovery deletes those of transactions the spool holds.
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		// In chunks: a recovery can confirm many transactions at once.
		for xids := c.xids; len(xids) > 0; {
			n := min(len(xids), 10000)
			if _, err := tx.Exec(ctx, `DELETE FROM schedsync.audit WHERE txid = ANY ($1::text[]::xid8[])`, xids[:n]); err != nil {
				return err
			}
			xids = xids[n:]
		}
		_, err := tx.Exec(ctx, `UPDATE schedsync.capture_state SET position = $1, updated_at = now() WHERE id = 1`, int64(c.position))
		return err
	})
	if err != nil {
		return fmt.Errorf("delete spooled audit rows: %w", err)
	}
	r.pending = nil
	return nil
}

// auditSource turns audit rows into the changes of one transaction, one row
// at a time, so a large transaction is never held whole.
type auditSource struct {
	r    *TriggerReader
	rows pgx.Rows
	hdr  change.TxnHeader
	cur  change.Change
	n    int64
}

func (s *auditSource) Header() change.TxnHeader { return s.hdr }

func (s *auditSource) Next() (*change.Change, error) {
	if !s.rows.Next() {
		if err := s.rows.Err(); err != nil {
			return nil, fmt.Errorf("read audit rows: %w", err)
		}
		return nil, io.EOF
	}
	var (
		id           int64
		relid        uint32
		op           byte
		oldRow, newR *string
	)
	if err := s.rows.Scan(&id, &relid, &op, &oldRow, &newR); err != nil {
		return nil, fmt.Errorf("read audit row: %w", err)
	}
	s.n++
	if change.Op(op) == change.DDL {
		c, err := ddlAuditChange(newR)
		if err != nil {
			return nil, fmt.Errorf("audit row %d: %w", id, err)
		}
		s.cur = c
		return &s.cur, nil
	}
	rel, err := s.r.shapeAt(relid, id)
	if err != nil {
		return nil, err
	}
	c, err := auditChange(rel, change.Op(op), oldRow, newR)
	if err != nil {
		return nil, err
	}
	s.cur = c
	return &s.cur, nil
}

// auditChange decodes one audit row.
func auditChange(rel *relation, op change.Op, oldRow, newRow *string) (change.Change, error) {
	c := change.Change{Op: op, Schema: rel.schema, Table: rel.name}
	if op == change.Insert || op == change.Update {
		if newRow == nil {
			return c, fmt.Errorf("%s audit row of %s has no new row", op, rel)
		}
		fields, err := parseRecord(*newRow)
		if err != nil {
			return c, fmt.Errorf("decode new row of %s: %w", rel, err)
		}
		if c.Columns, c.New, err = rel.rowImage(fields); err != nil {
			return c, err
		}
	}
	switch op {
	case change.Update, change.Delete:
		if oldRow == nil {
			return c, fmt.Errorf("%s audit row of %s has no old row", op, rel)
		}
		fields, err := parseRecord(*oldRow)
		if err != nil {
			return c, fmt.Errorf("decode old row of %s: %w", rel, err)
		}
		if c.KeyColumns, c.OldKey, err = rel.key(fields); err != nil {
			return c, err
		}
	case change.Insert, change.Truncate:
	default:
		return c, fmt.Errorf("audit row of %s has unknown op %q", rel, byte(op))
	}
	return c, nil
}
