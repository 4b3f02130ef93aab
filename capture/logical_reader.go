package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/config"
)

// LogicalOptions configures a LogicalReader.
type LogicalOptions struct {
	// ConnConfig is the master repository (repository.url).
	ConnConfig *pgx.ConnConfig
	// PollInterval is how often sequences are sampled while no change
	// arrives (capture.poll_interval).
	PollInterval time.Duration
	// SequenceSchemas are the schemas whose sequences are sampled and
	// shipped (repository.schemas); none when empty.
	SequenceSchemas []string
	Logger          *slog.Logger
	// Gate, if set, holds back how far the server is told its WAL is
	// flushed (failover.synchronous).
	Gate FlushGate
}

// FlushGate holds back how far capture tells the server that its changes
// are flushed: with synchronous_standby_names naming capture, the server
// then holds each commit until the gate lets its spool position through
// (failover.synchronous: once slaves have it durably).
type FlushGate interface {
	// Allowed is the highest spool position, at most want, that may be
	// reported flushed now, and a channel closed when that may change.
	Allowed(want uint64) (uint64, <-chan struct{})
}

const (
	// statusInterval is how often the reader tells the server how far it
	// has made changes durable, so the slot lets go of WAL soon.
	statusInterval = time.Second
	// maxUnsyncedFor bounds how long appended transactions wait for a sync
	// while changes keep arriving without a pause.
	maxUnsyncedFor = 20 * time.Millisecond
	// minSyncGap spaces spool syncs under load: when the queue runs dry
	// less than this after the last sync, the reader lingers for more
	// transactions until the gap has passed. A sync (with its sequence
	// sample and status message) per transaction would cost the master
	// more CPU than the transactions themselves; at light load the gap
	// has passed already and nothing waits. Measured with lagbench at
	// 1,000 tx/s on 2 CPUs (p50 / p99 lag): 0 ms 8.4 / 62 ms (the machine
	// saturates), 2 ms 9.4 / 61 ms, 3 ms 5.0 / 17 ms, 5 ms 7.8 / 24 ms,
	// 10 ms 9.8 / 18 ms.
	minSyncGap = 3 * time.Millisecond
	// gateRecheck is how often held positions are put to the gate again
	// without an ack, so that it can time out (failover.synchronous).
	gateRecheck = 100 * time.Millisecond
	// stateInterval is how often capture_state is written while changes
	// arrive; slotCheckInterval how often the slot's retained WAL is read.
	stateInterval     = time.Second
	slotCheckInterval = 5 * time.Second
	// receiveQueue bounds the messages read ahead of the spool: each holds
	// one row, so memory stays bounded whatever the transaction's size
	// (16 rows of 1 MB values hold 32 MB of hex text at most).
	receiveQueue = 16
)

// LogicalReader captures from a pgoutput replication slot. Run it from one
// goroutine; RequestSnapshot and SlotRetainedWAL may be called from any.
type LogicalReader struct {
	opts LogicalOptions
	sink Sink
	log  *slog.Logger

	slot string
	repl *pgconn.PgConn // the replication stream
	conn *pgx.Conn      // sequences, capture_state, slot figures
	msgs chan received
	stop context.CancelFunc
	done chan struct{} // closed when the receive goroutine has returned

	rels    map[uint32]*logicalRelation
	seqs    *sequenceSampler
	sampled time.Time

	// lastLSN is the commit LSN of the last transaction spooled (or found
	// in the spool at start): transactions at or before it are skipped,
	// since the slot may send again what was spooled but not confirmed.
	lastLSN pglogrepl.LSN
	// upTo: every transaction that commits before it has been received.
	// confirmed is what the server was last told is durable.
	upTo, confirmed pglogrepl.LSN
	lastStatus      time.Time
	// unsynced counts transactions appended since the last sync, the first
	// of them at unsyncedSince.
	unsynced      int
	unsyncedSince time.Time
	lastSync      time.Time

	// recent are durable transactions not yet counted in capture_state,
	// pending the ones appended since the last sync.
	recent, pending []recentTxn
	stateWritten    time.Time

	snaps snapshotQueue
	snap  *logicalSnapshot

	slotWAL     atomic.Int64
	slotChecked time.Time

	// epoch is the capture history, read from capture_state at connect.
	epoch atomic.Uint64

	// Schema changes (ddl_counter): the highest number decoded, and the
	// highest the spool holds durably (recorded in capture_state.ddl_seen
	// before the slot may forget it). hasDDL: the repository has them.
	ddlDecoded, ddlDurable int64
	hasDDL                 bool

	// held are durable spool positions and the LSN each lets the server
	// count as flushed, that the gate has not let through yet.
	held      []heldLSN
	gateCh    <-chan struct{} // from the gate's last answer
	gateAsked time.Time
}

type heldLSN struct {
	pos uint64
	lsn pglogrepl.LSN
}

// received is one message of the replication stream, or its end.
type received struct {
	data []byte
	err  error
}

type recentTxn struct {
	pos uint64
	xid uint32
	lsn pglogrepl.LSN
}

// NewLogicalReader makes a reader; Connect starts it.
func NewLogicalReader(opts LogicalOptions, sink Sink) *LogicalReader {
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &LogicalReader{opts: opts, sink: sink, log: opts.Logger.With("stage", "capture", "mode", config.CaptureLogical)}
	if len(opts.SequenceSchemas) > 0 {
		r.seqs = newSequenceSampler(opts.SequenceSchemas)
	}
	r.slotWAL.Store(-1)
	return r
}

// SlotRetainedWAL is the WAL the slot keeps on the master, in bytes, as
// last read; -1 when unknown.
func (r *LogicalReader) SlotRetainedWAL() int64 { return r.slotWAL.Load() }

// Epoch is the capture history the reader spools into; 0 until connected.
func (r *LogicalReader) Epoch() uint64 { return r.epoch.Load() }

// Slot is the replication slot's name, once connected.
func (r *LogicalReader) Slot() string { return r.slot }

// RequestSnapshot asks the reader to run fn in a snapshot that equals a
// spool position exactly, and to report that position once durable.
func (r *LogicalReader) RequestSnapshot(fn SnapshotFunc) <-chan SnapshotResult {
	return r.snaps.request(fn)
}

// replicationConfig is the repository's connection made a logical
// replication connection with pinned output settings.
func replicationConfig(base *pgx.ConnConfig) *pgconn.Config {
	cfg := base.Config.Copy()
	cfg.RuntimeParams["replication"] = "database"
	// What synchronous_standby_names names (failover.synchronous).
	cfg.RuntimeParams["application_name"] = ApplicationName
	// The walsender's output functions write the text forms trigger
	// capture and apply use.
	for k, v := range change.RuntimeParams() {
		cfg.RuntimeParams[k] = v
	}
	return cfg
}

// Connect checks what install created, finds where the spool ends and
// starts streaming from the slot.
func (r *LogicalReader) Connect(ctx context.Context) error {
	r.Close()
	var err error
	if r.conn, err = pgx.ConnectConfig(ctx, r.opts.ConnConfig); err != nil {
		return fmt.Errorf("connect to master repository: %w", err)
	}
	if r.slot, err = installedSlot(ctx, r.conn); err != nil {
		return err
	}
	if err := r.recover(ctx); err != nil {
		return err
	}
	if r.repl, err = pgconn.ConnectConfig(ctx, replicationConfig(r.opts.ConnConfig)); err != nil {
		return fmt.Errorf("open a replication connection to the master repository: %w", err)
	}
	err = pglogrepl.StartReplication(ctx, r.repl, r.slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + PublicationName + "'", "messages 'true'"},
	})
	if err != nil {
		return fmt.Errorf("start replication from slot %s: %w", r.slot, err)
	}
	r.rels = map[uint32]*logicalRelation{}
	r.upTo, r.confirmed, r.unsynced = 0, 0, 0
	r.recent, r.pending, r.held = nil, nil, nil
	rctx, stop := context.WithCancel(context.Background())
	r.stop, r.msgs, r.done = stop, make(chan received, receiveQueue), make(chan struct{})
	go r.receive(rctx, r.repl, r.msgs, r.done)
	r.log.Info("streaming from the replication slot", "slot", r.slot, "after_lsn", r.lastLSN)
	return nil
}

// installedSlot reads the slot install recorded, and checks it exists.
func installedSlot(ctx context.Context, conn *pgx.Conn) (string, error) {
	var mode, slot *string
	err := conn.QueryRow(ctx, `SELECT max(value) FILTER (WHERE key = 'capture_mode'), max(value) FILTER (WHERE key = 'slot')
		FROM schedsync.meta`).Scan(&mode, &slot)
	if err != nil {
		return "", fmt.Errorf("read schedsync.meta (run schedsync install on the master with capture.mode = logical): %w", err)
	}
	if mode == nil || config.CaptureMode(*mode) != config.CaptureLogical || slot == nil {
		have := config.CaptureTrigger
		if mode != nil {
			have = config.CaptureMode(*mode)
		}
		return "", &ModeConflictError{Installed: have, Wanted: config.CaptureLogical}
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, *slot).Scan(&exists); err != nil {
		return "", fmt.Errorf("look for replication slot %s: %w", *slot, err)
	}
	if !exists {
		return "", fmt.Errorf("replication slot %s is missing, so changes made since it was dropped are lost to capture: run schedsync install on the master, then schedsync resync --force on every slave", *slot)
	}
	return *slot, nil
}

// recover finds the commit LSN of the last transaction in the spool: the
// one capture_state recorded for its position, or a later one the spool
// holds after it. The slot may send again what was spooled but not
// confirmed (the server keeps its confirmed position in memory until a
// checkpoint, so even a confirmed one after a server crash); those
// transactions are skipped by LSN.
func (r *LogicalReader) recover(ctx context.Context) error {
	// Transactions appended before a failure are made durable by
	// recoverState, so that they are found below and skipped when the
	// slot sends them again.
	st, err := recoverState(ctx, r.conn, r.sink)
	if err != nil {
		return err
	}
	epoch := st.epoch
	r.epoch.Store(epoch)
	if err := r.conn.QueryRow(ctx, `SELECT to_regclass('schedsync.ddl_counter') IS NOT NULL`).Scan(&r.hasDDL); err != nil {
		return fmt.Errorf("look for schedsync.ddl_counter: %w", err)
	}
	if r.hasDDL {
		if err := r.conn.QueryRow(ctx, `SELECT ddl_seen FROM schedsync.capture_state WHERE id = 1`).Scan(&r.ddlDurable); err != nil {
			return fmt.Errorf("read schedsync.capture_state: %w", err)
		}
		r.ddlDecoded = r.ddlDurable
	}
	r.lastLSN = 0
	last, err := r.sink.HeadersAfter(ctx, st.position, func(_ uint64, h change.TxnHeader) {
		// LSNs of another history are another slot's.
		if h.Epoch == epoch {
			r.lastLSN = max(r.lastLSN, pglogrepl.LSN(h.LSN))
		}
	})
	if err != nil {
		return fmt.Errorf("find the last spooled transaction after position %d: %w", st.position, err)
	}
	if st.position <= last {
		// The spool holds position pos and what capture_state says of it.
		// (A spool replaced by an empty one does not: its slaves need a
		// re-sync anyway, and whatever the slot sends is kept.)
		r.lastLSN = max(r.lastLSN, pglogrepl.LSN(st.lsn))
	}
	return raisePosition(ctx, r.conn, r.sink.LastPosition(), uint64(r.lastLSN))
}

// receive reads the replication stream into out until it fails or ctx ends.
func (r *LogicalReader) receive(ctx context.Context, repl *pgconn.PgConn, out chan<- received, done chan<- struct{}) {
	defer close(done)
	send := func(m received) bool {
		select {
		case out <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		msg, err := repl.ReceiveMessage(ctx)
		if err != nil {
			send(received{err: fmt.Errorf("read the replication stream: %w", err)})
			return
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if !send(received{data: bytes.Clone(m.Data)}) {
				return
			}
		case *pgproto3.ErrorResponse:
			send(received{err: fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))})
			return
		case *pgproto3.CopyDone:
			send(received{err: errors.New("the server ended the replication stream")})
			return
		}
	}
}

// Close stops the stream and closes the connections.
func (r *LogicalReader) Close() {
	if r.stop != nil {
		r.stop()
	}
	// The receive goroutine reads r.repl until its context ends; a
	// connection is not for two goroutines, so it is closed only after.
	if r.done != nil {
		<-r.done
	}
	if r.repl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = r.repl.Close(ctx)
		cancel()
	}
	if r.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = r.conn.Close(ctx)
		cancel()
	}
	r.repl, r.conn, r.stop, r.done = nil, nil, nil, nil
}

// Serve captures until ctx is done (nil) or the stream or the database
// fails. It closes the connections when it returns.
func (r *LogicalReader) Serve(ctx context.Context) (err error) {
	defer r.Close()
	defer func() {
		why := err
		if why == nil {
			why = ctx.Err()
		}
		stopErr := fmt.Errorf("capture stopped: %w", why)
		if r.snap != nil {
			r.snap.abandon(stopErr)
			r.snap = nil
		}
		r.snaps.fail(stopErr)
	}()
	idle := time.NewTicker(50 * time.Millisecond)
	defer idle.Stop()
	for {
		if err := r.housekeeping(ctx); err != nil {
			return r.stopped(ctx, err)
		}
		m, ok, err := r.next(ctx, noWait)
		if err != nil {
			return r.stopped(ctx, err)
		}
		// Lingering batches syncs at a cost in latency; with a gate the
		// commits themselves wait for the flush, and batch by waiting.
		if !ok && r.unsynced > 0 && r.opts.Gate == nil {
			if m, ok, err = r.linger(ctx); err != nil {
				return r.stopped(ctx, err)
			}
		}
		if !ok {
			// Nothing waiting: make what arrived durable and tell the
			// server, then wait for more.
			if err := r.flush(ctx); err != nil {
				return r.stopped(ctx, err)
			}
			if m, ok, err = r.wait(ctx, idle.C); err != nil {
				return r.stopped(ctx, err)
			}
			if !ok {
				continue
			}
		}
		if err := r.handle(ctx, m); err != nil {
			return r.stopped(ctx, err)
		}
		if r.unsynced > 0 && time.Since(r.unsyncedSince) > maxUnsyncedFor {
			if err := r.flush(ctx); err != nil {
				return r.stopped(ctx, err)
			}
		}
	}
}

func (r *LogicalReader) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// next returns the next pgoutput message, answering keepalives on the way.
// It gives up (ok = false) once no message is waiting and until fires: a
// nil until waits for a message, noWait does not wait at all.
func (r *LogicalReader) next(ctx context.Context, until <-chan time.Time) (pglogrepl.Message, bool, error) {
	for {
		var m received
		select {
		case m = <-r.msgs:
		default:
			select {
			case m = <-r.msgs:
			case <-until:
				return nil, false, nil
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		msg, err := r.decode(ctx, m)
		if err != nil || msg != nil {
			return msg, err == nil, err
		}
	}
}

// noWait makes next return at once when no message is waiting.
var noWait = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// linger waits for a message until minSyncGap has passed since the last
// sync.
func (r *LogicalReader) linger(ctx context.Context) (pglogrepl.Message, bool, error) {
	gap := minSyncGap - time.Since(r.lastSync)
	if gap <= 0 {
		return nil, false, nil
	}
	t := time.NewTimer(gap)
	defer t.Stop()
	return r.next(ctx, t.C)
}

// wait blocks until a message, a snapshot request or a tick.
func (r *LogicalReader) wait(ctx context.Context, tick <-chan time.Time) (pglogrepl.Message, bool, error) {
	var cp <-chan pglogrepl.LSN
	var fnDone <-chan error
	if r.snap != nil {
		cp, fnDone = r.snap.cpCh, r.snap.doneCh
	}
	var gate <-chan struct{}
	if len(r.held) > 0 {
		gate = r.gateCh
	}
	select {
	case <-gate:
	case m := <-r.msgs:
		msg, err := r.decode(ctx, m)
		return msg, err == nil && msg != nil, err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	case <-r.snaps.woken():
	case <-tick:
	case lsn := <-cp:
		r.snap.consistentAt(lsn)
	case err := <-fnDone:
		r.snap.fnFinished(err)
	}
	return nil, false, nil
}

// decode handles one stream message: keepalives here, XLogData decoded
// into a pgoutput message.
func (r *LogicalReader) decode(ctx context.Context, m received) (pglogrepl.Message, error) {
	if m.err != nil {
		return nil, m.err
	}
	if len(m.data) == 0 {
		return nil, errors.New("empty message in the replication stream")
	}
	switch m.data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.data[1:])
		if err != nil {
			return nil, fmt.Errorf("parse keepalive: %w", err)
		}
		// Every transaction that commits before the server's send position
		// has been sent, and so received, before this message.
		r.upTo = max(r.upTo, ka.ServerWALEnd)
		if r.snap != nil {
			r.snap.sawLSN(ka.ServerWALEnd)
		}
		if ka.ReplyRequested {
			return nil, r.sendStatus(ctx, false)
		}
		return nil, nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(m.data[1:])
		if err != nil {
			return nil, fmt.Errorf("parse XLogData: %w", err)
		}
		msg, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			return nil, fmt.Errorf("decode pgoutput message at %s: %w", xld.WALStart, err)
		}
		return msg, nil
	}
	return nil, fmt.Errorf("unknown replication message type %q", m.data[0])
}

// sendStatus tells the server what is durable; reply asks it to answer
// with a keepalive at once.
func (r *LogicalReader) sendStatus(ctx context.Context, reply bool) error {
	r.lastStatus = time.Now()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: r.confirmed, ReplyRequested: reply,
	})
	if err != nil {
		return fmt.Errorf("send replication status: %w", err)
	}
	return nil
}

// handle processes a message outside a transaction.
func (r *LogicalReader) handle(ctx context.Context, msg pglogrepl.Message) error {
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		r.rels[m.RelationID] = newLogicalRelation(m)
	case *pglogrepl.BeginMessage:
		return r.deliver(ctx, m)
	case *pglogrepl.TypeMessage, *pglogrepl.OriginMessage, *pglogrepl.LogicalDecodingMessage:
	default:
		return fmt.Errorf("pgoutput sent a %s message outside a transaction", msg.Type())
	}
	return nil
}

// deliver spools the transaction that begins with b, streaming its
// changes from the replication stream into the sink.
func (r *LogicalReader) deliver(ctx context.Context, b *pglogrepl.BeginMessage) error {
	if r.snap != nil {
		r.snap.sawLSN(b.FinalLSN)
	}
	src := &logicalSource{r: r, ctx: ctx, hdr: change.TxnHeader{XID: uint64(b.Xid), CommitTime: b.CommitTime, LSN: uint64(b.FinalLSN),
		Epoch: r.epoch.Load()}}
	if b.FinalLSN <= r.lastLSN {
		// Spooled before a restart, not yet confirmed: skip it.
		return src.skip()
	}
	// A transaction with no change to a published table (a server before
	// 15 sends those) is not spooled.
	first, err := src.Next()
	if err == io.EOF {
		r.lastLSN = b.FinalLSN
		r.upTo = max(r.upTo, src.end)
		return nil
	}
	if err != nil {
		return err
	}
	src.first = first
	pos, err := r.sink.Append(ctx, src)
	if err != nil {
		return fmt.Errorf("spool transaction %d (commit %s): %w", b.Xid, b.FinalLSN, err)
	}
	if !src.done {
		return fmt.Errorf("transaction %d (commit %s) was spooled before its end", b.Xid, b.FinalLSN)
	}
	r.lastLSN = b.FinalLSN
	r.upTo = max(r.upTo, src.end)
	if r.unsynced == 0 {
		r.unsyncedSince = time.Now()
	}
	r.unsynced++
	r.pending = append(r.pending, recentTxn{pos: pos, xid: b.Xid, lsn: b.FinalLSN})
	if r.snap != nil {
		r.snap.appended(pos, b.FinalLSN)
	}
	return nil
}

// flush makes the appended transactions durable, with the sequence values
// that cover them, and tells the server.
func (r *LogicalReader) flush(ctx context.Context) error {
	if r.unsynced > 0 {
		if err := r.sampleSequences(ctx, true); err != nil {
			return err
		}
		if err := r.sink.Sync(ctx); err != nil {
			return fmt.Errorf("make captured transactions durable: %w", err)
		}
		r.lastSync = time.Now()
		r.unsynced = 0
		r.recent = append(r.recent, r.pending...)
		r.pending = r.pending[:0]
	}
	if r.ddlDecoded > r.ddlDurable {
		// Before the slot may forget the schema change: a restart must
		// know it was decoded (sampleSequences waits for the changes
		// not decoded yet).
		if _, err := r.conn.Exec(ctx, `UPDATE schedsync.capture_state SET ddl_seen = greatest(ddl_seen, $1) WHERE id = 1`, r.ddlDecoded); err != nil {
			return fmt.Errorf("record the schema changes spooled: %w", err)
		}
		r.ddlDurable = r.ddlDecoded
	}
	return r.confirm(ctx)
}

// confirm tells the server how far its WAL counts as flushed, and so may
// be forgotten by the slot: up to upTo, everything before which is durable
// in the spool (nothing appended is unsynced when it runs), or with a gate
// only as far as the gate lets the spool positions through.
func (r *LogicalReader) confirm(ctx context.Context) error {
	if r.opts.Gate == nil {
		return r.confirmTo(ctx, r.upTo)
	}
	pos := r.sink.LastPosition()
	if n := len(r.held); n > 0 && r.held[n-1].pos == pos {
		r.held[n-1].lsn = max(r.held[n-1].lsn, r.upTo)
	} else {
		r.held = append(r.held, heldLSN{pos: pos, lsn: r.upTo})
	}
	return r.release(ctx)
}

// release confirms what the gate lets through of the held positions.
func (r *LogicalReader) release(ctx context.Context) error {
	allowed, ch := r.opts.Gate.Allowed(r.held[len(r.held)-1].pos)
	r.gateCh, r.gateAsked = ch, time.Now()
	target := r.confirmed
	i := 0
	for ; i < len(r.held) && r.held[i].pos <= allowed; i++ {
		target = max(target, r.held[i].lsn)
	}
	r.held = r.held[i:]
	return r.confirmTo(ctx, target)
}

func (r *LogicalReader) confirmTo(ctx context.Context, target pglogrepl.LSN) error {
	if target > r.confirmed {
		r.confirmed = target
		return r.sendStatus(ctx, false)
	}
	return nil
}

// gateMoved reports whether the gate may let more through than when it
// was last asked.
func (r *LogicalReader) gateMoved() bool {
	select {
	case <-r.gateCh:
		return true
	default:
		return false
	}
}

// sampleSequences appends the sequences that moved as a transaction of
// their own: after every batch (values read after a transaction committed
// cover every value it drew) and every poll interval when idle.
func (r *LogicalReader) sampleSequences(ctx context.Context, delivered bool) error {
	if r.seqs == nil || (!delivered && time.Since(r.sampled) < r.opts.PollInterval) {
		return nil
	}
	r.sampled = time.Now()
	var changes []change.Change
	var err error
	if r.hasDDL {
		// The catalog may hold a sequence whose CREATE is committed and
		// not decoded yet: its value would reach the slave before it.
		var committed int64
		changes, committed, err = r.seqs.sampleAfterDDL(ctx, r.conn)
		if err == nil && committed > r.ddlDecoded {
			return nil // sampled again once the schema change is in
		}
	} else {
		changes, err = r.seqs.sample(ctx, r.conn)
	}
	if err != nil || len(changes) == 0 {
		return err
	}
	txn := &change.Txn{TxnHeader: change.TxnHeader{CommitTime: r.sampled, Epoch: r.epoch.Load()}, Changes: changes}
	if _, err := r.sink.Append(ctx, txn.Source()); err != nil {
		return fmt.Errorf("spool sequence values: %w", err)
	}
	if r.unsynced == 0 {
		if err := r.sink.Sync(ctx); err != nil {
			return fmt.Errorf("make sequence values durable: %w", err)
		}
	}
	r.seqs.shipped(changes)
	return nil
}

// housekeeping does what is due between transactions: the periodic status
// and sequence sample, capture_state, the slot's figures and snapshot
// requests.
func (r *LogicalReader) housekeeping(ctx context.Context) error {
	if time.Since(r.lastStatus) >= statusInterval {
		if err := r.sendStatus(ctx, false); err != nil {
			return err
		}
	}
	// Under load as well as idle: a commit waits on this (failover.synchronous).
	if r.opts.Gate != nil && len(r.held) > 0 && (r.gateMoved() || time.Since(r.gateAsked) >= gateRecheck) {
		if err := r.release(ctx); err != nil {
			return err
		}
	}
	if r.unsynced == 0 {
		if err := r.sampleSequences(ctx, false); err != nil {
			return err
		}
		if err := r.writeState(ctx, false); err != nil {
			return err
		}
	}
	if time.Since(r.slotChecked) >= slotCheckInterval {
		r.slotChecked = time.Now()
		retained, err := slotRetainedWAL(ctx, r.conn, r.slot)
		if err != nil {
			return err
		}
		if retained != nil {
			r.slotWAL.Store(*retained)
		}
	}
	return r.snapshots(ctx)
}

// logicalSource streams one transaction's changes from the replication
// stream, one row at a time.
type logicalSource struct {
	r     *LogicalReader
	ctx   context.Context
	hdr   change.TxnHeader
	first *change.Change
	queue []change.Change // the tables of a TRUNCATE
	cur   change.Change
	end   pglogrepl.LSN // the transaction's end, from its Commit
	done  bool
}

func (s *logicalSource) Header() change.TxnHeader { return s.hdr }

func (s *logicalSource) Next() (*change.Change, error) {
	if s.first != nil {
		c := s.first
		s.first = nil
		return c, nil
	}
	for {
		if len(s.queue) > 0 {
			s.cur, s.queue = s.queue[0], s.queue[1:]
			return &s.cur, nil
		}
		if s.done {
			return nil, io.EOF
		}
		msg, _, err := s.r.next(s.ctx, nil)
		if err != nil {
			return nil, err
		}
		c, err := s.change(msg)
		if err != nil {
			return nil, err
		}
		if c != nil {
			s.cur = *c
			return &s.cur, nil
		}
	}
}

// skip reads through the transaction without spooling it.
func (s *logicalSource) skip() error {
	for {
		_, err := s.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ddlMessagePrefix is the prefix of the logical decoding messages that
// carry schema changes.
const ddlMessagePrefix = "schedsync.ddl"

// change decodes a message inside the transaction; nil for messages that
// carry no row change.
func (s *logicalSource) change(msg pglogrepl.Message) (*change.Change, error) {
	rel := func(id uint32) (*logicalRelation, error) {
		if r := s.r.rels[id]; r != nil {
			return r, nil
		}
		return nil, fmt.Errorf("pgoutput sent a change for relation %d before describing it", id)
	}
	var (
		c   change.Change
		r   *logicalRelation
		err error
	)
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		s.r.rels[m.RelationID] = newLogicalRelation(m)
		return nil, nil
	case *pglogrepl.LogicalDecodingMessage:
		// A schema change, recorded by the event trigger at its place
		// among the transaction's rows (sql/ddl.sql).
		if m.Prefix != ddlMessagePrefix || !m.Transactional {
			return nil, nil
		}
		c, seq, err := ddlChangeSeq(m.Content)
		if err != nil {
			return nil, fmt.Errorf("transaction %d: %w", s.hdr.XID, err)
		}
		s.r.ddlDecoded = max(s.r.ddlDecoded, seq)
		return &c, nil
	case *pglogrepl.TypeMessage, *pglogrepl.OriginMessage:
		return nil, nil
	case *pglogrepl.CommitMessage:
		s.end, s.done = m.TransactionEndLSN, true
		return nil, nil
	case *pglogrepl.InsertMessage:
		if r, err = rel(m.RelationID); err == nil {
			c, err = r.insertChange(m)
		}
	case *pglogrepl.UpdateMessage:
		if r, err = rel(m.RelationID); err == nil {
			c, err = r.updateChange(m)
		}
	case *pglogrepl.DeleteMessage:
		if r, err = rel(m.RelationID); err == nil {
			c, err = r.deleteChange(m)
		}
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if r, err = rel(id); err != nil {
				return nil, err
			}
			s.queue = append(s.queue, change.Change{Op: change.Truncate, Schema: r.schema, Table: r.name})
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("pgoutput sent a %s message inside transaction %d", msg.Type(), s.hdr.XID)
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}
