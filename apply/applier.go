package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/metrics"
)

// Log is the slave spool as apply reads it.
type Log interface {
	NewReader(after uint64) (Reader, error)
	DurablePosition() uint64
}

// Reader streams the transactions after a position; Next blocks until one
// is durable.
type Reader interface {
	Next(ctx context.Context) (uint64, change.TxnSource, error)
	Close() error
}

// Options configures an Applier.
type Options struct {
	// ConnConfig is the slave repository.
	ConnConfig *pgx.ConnConfig
	// BatchMaxBytes bounds the raw change bytes grouped into one slave
	// transaction; BatchMaxDelay how long a group may stay open. Transactions
	// are grouped only while more are already waiting in the spool, so
	// grouping never delays a lone transaction.
	BatchMaxBytes int
	BatchMaxDelay time.Duration
	Logger        *slog.Logger
	// OnApplied is called after each commit with the applied position and
	// the master commit time of the last transaction applied.
	OnApplied func(pos uint64, commitTime time.Time)
	// Metrics counts what is applied; nil counts nothing.
	Metrics *metrics.Metrics
}

// pipelineDepth is how many statements are sent in one round trip.
const pipelineDepth = 512

// sessionSetup makes replicated rows bypass the slave's triggers and
// foreign keys, and pins the settings capture used, so that text values are
// read, and compared, exactly as they were written.
var sessionSetup = "SET session_replication_role = replica;\n" + change.SetSQL(false)

// Applier replays the slave spool into the slave repository.
type Applier struct {
	opts    Options
	log     Log
	logger  *slog.Logger
	applied atomic.Uint64
	// epoch is the capture history of the slave's data, as committed with
	// applied (schedsync.state.capture_epoch).
	epoch atomic.Uint64

	holdMu sync.Mutex
	holdAt uint64        // apply stops after this position while holdCh is open
	holdCh chan struct{} // closed when the hold is released
}

// New makes an applier; Run starts it.
func New(opts Options, log Log) *Applier {
	if opts.BatchMaxBytes <= 0 {
		opts.BatchMaxBytes = 8 << 20
	}
	if opts.BatchMaxDelay <= 0 {
		opts.BatchMaxDelay = 10 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.OnApplied == nil {
		opts.OnApplied = func(uint64, time.Time) {}
	}
	return &Applier{opts: opts, log: log, logger: opts.Logger.With("stage", "apply")}
}

// Applied is the last position committed in the slave repository.
func (a *Applier) Applied() uint64 { return a.applied.Load() }

// Epoch is the capture history of the slave's data, once Run has read it
// (0 before, and for a slave that started empty until it applies its
// first transaction).
func (a *Applier) Epoch() uint64 { return a.epoch.Load() }

// ErrHistory: a transaction in the spool belongs to another capture
// history than the slave's data; only a re-sync brings the slave back.
var ErrHistory = errors.New("the slave needs a re-sync")

// ErrRestoreInterrupted: the slave repository is marked needs_resync by a
// restore that did not finish, so its data is not consistent; apply
// refuses to run on it.
var ErrRestoreInterrupted = errors.New("the slave repository is marked needs_resync (an interrupted restore); run schedsync resync")

// ReadApplied reads the applied position stored in the slave repository.
func ReadApplied(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (uint64, error) {
	var pos int64
	if err := q.QueryRow(ctx, `SELECT applied_position FROM schedsync.state WHERE id = 1`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read schedsync.state (run schedsync install on the slave): %w", err)
	}
	return uint64(pos), nil
}

// Run applies until ctx is done (nil) or an error; the caller retries
// database errors with backoff and shows ErrSchema errors to the operator.
func (a *Applier) Run(ctx context.Context) (err error) {
	defer func() {
		if ctx.Err() != nil {
			err = nil // stopped, not failed
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, a.opts.ConnConfig)
	if err != nil {
		return fmt.Errorf("connect to the slave repository: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sessionSetup); err != nil {
		return fmt.Errorf("set up the apply session: %w", err)
	}
	s := &session{a: a, conn: conn, tables: tables{}, seqs: map[string]bool{}}
	if err := s.load(ctx); err != nil {
		return err
	}
	for {
		err := s.run(ctx)
		if isUniqueViolation(err) || isCardinalityViolation(err) {
			// A row the master's state did not hold at this point (see the
			// package doc), or an order inside a set-based statement that
			// the master never had (net.go); apply the stuck group change
			// by change, clearing the way.
			a.logger.Info("conflict in grouped apply; applying change by change", "after", a.applied.Load(), "err", err)
			err = s.careful(ctx)
		}
		switch {
		case errors.Is(err, errMoved):
			a.logger.Info("another apply session committed meanwhile; reading the applied position again", "err", err)
			if err := s.load(ctx); err != nil {
				return err
			}
			a.opts.OnApplied(a.applied.Load(), time.Time{})
		case err != nil:
			return err
		}
	}
}

// load reads where the slave is: its applied position and capture
// history, and whether an interrupted restore left it marked.
func (s *session) load(ctx context.Context) error {
	var applied, epoch int64
	var marked bool
	err := s.conn.QueryRow(ctx, `SELECT applied_position, capture_epoch, needs_resync FROM schedsync.state WHERE id = 1`).
		Scan(&applied, &epoch, &marked)
	if err != nil {
		return fmt.Errorf("read schedsync.state (run schedsync install on the slave): %w", err)
	}
	if marked {
		return ErrRestoreInterrupted
	}
	s.a.epoch.Store(uint64(epoch))
	s.a.applied.Store(uint64(applied))
	return nil
}

// session is one connection's apply state.
type session struct {
	a      *Applier
	conn   *pgx.Conn
	tables tables
	seqs   map[string]bool // sequences known to exist on the slave
	// failedAt is the last position read by the group that failed.
	failedAt uint64
	// epoch is the capture history of the group being applied: the
	// committed one, or the one a slave that started empty takes from its
	// first transaction. It is committed with the applied position.
	epoch uint64
	// queued is the position the last group sent ends at: applied, or
	// ahead of it while that group's results are in flight.
	queued uint64
	// inflight is the batch sent and not yet read back: apply reads and
	// folds the next group while the server runs it.
	inflight *inflight
	// changes counts the changes read from the spool, for the metrics.
	changes int
}

// inflight is a batch whose results are still to be read.
type inflight struct {
	res    pgx.BatchResults
	queued []*pgx.QueuedQuery
	done   func() // after its last result, if all succeeded
}

// admit checks that the transaction at pos continues the capture history
// of the slave's data. A slave that started empty (never restored, nothing
// applied) takes the history of the first transaction it applies, the
// first of the master's stream, since the handshake let it start from 0.
func (s *session) admit(pos uint64, h change.TxnHeader) error {
	switch {
	case h.Epoch == s.epoch:
		return nil
	case s.epoch == 0 && s.queued == 0:
		s.epoch = h.Epoch
		return nil
	}
	return fmt.Errorf("%w: the transaction at position %d belongs to capture history %016x, but the slave's data to %016x; "+
		"capture was installed again on the master and changes made meanwhile are missing here; run schedsync resync",
		ErrHistory, pos, h.Epoch, s.epoch)
}

// run applies groups until an error.
func (s *session) run(ctx context.Context) (err error) {
	s.queued, s.epoch = s.a.applied.Load(), s.a.epoch.Load()
	r, err := s.a.log.NewReader(s.queued)
	if err != nil {
		return fmt.Errorf("read the spool after position %d: %w", s.queued, err)
	}
	defer r.Close()
	defer func() {
		if werr := s.wait(context.Background()); err == nil {
			err = werr
		}
	}()
	for {
		// Nothing more to read yet, or a hold before the next: the group
		// in flight must land first, or its position would wait with it.
		if s.a.log.DurablePosition() <= s.queued || s.a.heldAt(s.queued) {
			if err := s.wait(ctx); err != nil {
				return err
			}
		}
		pos, src, err := r.Next(ctx)
		if err != nil {
			return err
		}
		if err := s.a.waitHold(ctx, pos); err != nil {
			return err
		}
		if err := s.group(ctx, r, pos, src); err != nil {
			return err
		}
	}
}

// group applies the transaction at pos and those already waiting after it,
// within the batch limits, in one slave transaction with the new applied
// position.
//
// BEGIN and COMMIT travel in the pipeline with the statements: a group that
// fits in one pipeline costs one round trip, which matters at low latency
// on a busy slave.
func (s *session) group(ctx context.Context, r Reader, pos uint64, src change.TxnSource) (err error) {
	p := &pipeline{send: s.conn}
	p.queue(stmt{sql: "BEGIN"})
	p.queue(stmt{sql: "SET CONSTRAINTS ALL DEFERRED"})
	defer func() {
		if err != nil {
			// After a failed statement the transaction is aborted but open
			// (or already gone, after a failed COMMIT: then this warns).
			// What is in flight lands first: the previous group's commit,
			// or a part of this group, which the ROLLBACK then undoes.
			_ = s.wait(context.Background())
			_, _ = s.conn.Exec(context.Background(), "ROLLBACK")
		}
	}()
	start, bytes := time.Now(), 0
	var commitTime time.Time
	net := newNetChanges()
	txns, changes := 0, s.changes
	for {
		s.failedAt = pos
		if err := s.admit(pos, src.Header()); err != nil {
			return err
		}
		n, err := s.txn(ctx, p, net, src)
		if err != nil {
			return err
		}
		bytes += n
		txns++
		commitTime = src.Header().CommitTime
		if bytes >= s.a.opts.BatchMaxBytes || time.Since(start) >= s.a.opts.BatchMaxDelay ||
			s.a.log.DurablePosition() <= pos || s.a.heldAt(pos) {
			break
		}
		if pos, src, err = r.Next(ctx); err != nil {
			return err
		}
	}
	net.flush(p.queue)
	p.queue(setApplied(s.queued, pos, s.epoch))
	p.queue(stmt{sql: "COMMIT"})
	s.queued = pos
	epoch := s.epoch
	changes = s.changes - changes
	return s.ship(ctx, p, func() {
		s.applied(pos, epoch, commitTime)
		s.a.opts.Metrics.Applied(txns, changes, time.Since(start))
	})
}

// ship sends what p holds without waiting for the results, once those of
// the batch sent before are in; done runs after its results, if they all
// succeed.
func (s *session) ship(ctx context.Context, p *pipeline, done func()) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	b := p.take()
	res := s.conn.SendBatch(ctx, b)
	s.inflight = &inflight{res: res, queued: b.QueuedQueries, done: done}
	return nil
}

// wait reads the results of the batch in flight. A failed statement
// leaves the server's transaction aborted, so it is rolled back here.
func (s *session) wait(ctx context.Context) error {
	f := s.inflight
	if f == nil {
		return nil
	}
	s.inflight = nil
	if err := readBatch(f.res, f.queued); err != nil {
		_, _ = s.conn.Exec(context.Background(), "ROLLBACK")
		return err
	}
	if f.done != nil {
		f.done()
	}
	return nil
}

// setApplied records the applied position and the capture history, in
// the transaction of the rows they cover, if the slave is still at prev,
// where the group began (schedsync.set_applied, sql/state.sql).
//
// It is not, only when another apply session committed meanwhile: one
// whose client died (a crash of the service, a lost connection) with its
// COMMIT already sent, while its server backend went on to commit. This
// session read the position before that commit landed, and applied the
// same transactions again. The call waits for the other transaction's row
// lock, finds the row moved on and raises, and the group rolls back
// (errMoved) instead of committing them twice.
func setApplied(prev, pos, epoch uint64) stmt {
	return stmt{sql: `SELECT schedsync.set_applied($1, $2, $3)`, args: []any{int64(prev), int64(pos), int64(epoch)}}
}

// errMoved: another apply session committed since this one read the
// applied position; its group is rolled back and it reads it again.
var errMoved = errors.New("the slave's applied position moved under this apply session")

// movedCode is the SQLSTATE schedsync.set_applied raises for errMoved.
const movedCode = "SA001"

// moved turns set_applied's error into errMoved.
func moved(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == movedCode {
		return fmt.Errorf("%w: %s", errMoved, pgErr.Message)
	}
	return err
}

func (s *session) applied(pos, epoch uint64, commitTime time.Time) {
	s.a.epoch.Store(epoch)
	s.a.applied.Store(pos)
	s.a.opts.OnApplied(pos, commitTime)
}

// commit ends a group applied in tx (the careful path).
func (s *session) commit(ctx context.Context, tx pgx.Tx, p *pipeline, pos uint64, commitTime time.Time) error {
	p.queue(setApplied(s.a.applied.Load(), pos, s.epoch))
	if err := p.flush(ctx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit applied position %d: %w", pos, err)
	}
	s.applied(pos, s.epoch, commitTime)
	return nil
}

// netMaxBytes bounds the raw bytes of changes held as a net effect
// before it is written out, whatever the batch limits: a transaction of a
// million rows is applied in slices, not held whole in memory.
const netMaxBytes = 1 << 20

// txn folds the changes of one source transaction into net, queueing what
// cannot wait (truncations, sequences, changes net cannot absorb) and
// flushing as the pipeline or net fills; it returns the raw size.
func (s *session) txn(ctx context.Context, p *pipeline, net *netChanges, src change.TxnSource) (int, error) {
	var truncs []string
	flushTruncs := func() {
		if len(truncs) > 0 {
			p.queue(truncate(truncs))
			truncs = nil
		}
	}
	size := 0
	for {
		c, err := src.Next()
		if err == io.EOF {
			flushTruncs()
			return size, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read the spool: %w", err)
		}
		size += c.Size()
		s.changes++
		if c.Op == change.DDL {
			// Everything before it runs first, then the schema change
			// alone, before any later change is looked up.
			flushTruncs()
			net.flush(p.queue)
			if p.batch.Len() > 0 {
				if err := s.ship(ctx, p, nil); err != nil {
					return 0, err
				}
			}
			if err := s.wait(ctx); err != nil {
				return 0, err
			}
			if err := s.runDDL(ctx, s.conn, c); err != nil {
				return 0, err
			}
			continue
		}
		if c.Op == change.Sequence {
			st, err := s.setval(ctx, c)
			if err != nil {
				return 0, err
			}
			flushTruncs()
			p.queue(st)
			continue
		}
		t, err := s.table(ctx, c)
		if err != nil {
			return 0, err
		}
		if c.Op == change.Truncate {
			net.drop(t)
			truncs = append(truncs, t.qname)
			continue
		}
		flushTruncs()
		stmts, err := net.add(t, c, p.queue)
		if err != nil {
			return 0, err
		}
		for _, st := range stmts {
			p.queue(st)
		}
		held := net.bytes >= min(netMaxBytes, s.a.opts.BatchMaxBytes)
		if held {
			net.flush(p.queue)
		}
		if held || p.full() {
			if err := s.ship(ctx, p, nil); err != nil {
				return 0, err
			}
		}
	}
}

// statements turns a change into statements, one change at a time (the
// careful path); truncations are gathered in truncs so that consecutive
// ones run as one TRUNCATE.
func (s *session) statements(ctx context.Context, c *change.Change, truncs *[]string) ([]stmt, error) {
	if c.Op == change.Sequence {
		st, err := s.setval(ctx, c)
		return []stmt{st}, err
	}
	t, err := s.table(ctx, c)
	if err != nil {
		return nil, err
	}
	if c.Op == change.Truncate {
		*truncs = append(*truncs, t.qname)
		return nil, nil
	}
	stmts, err := t.statements(c)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", c.Op, t.qname, err)
	}
	return stmts, nil
}

// table is the slave's description of c's table; looking it up the first
// time needs the connection, so the batch in flight lands first.
func (s *session) table(ctx context.Context, c *change.Change) (*table, error) {
	if t := s.tables.cached(c.Schema, c.Table); t != nil {
		return t, nil
	}
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.tables.get(ctx, s.conn, c.Schema, c.Table)
}

// setval is the statement of a sequence change, once the slave is known
// to have the sequence (looked up once per session).
func (s *session) setval(ctx context.Context, c *change.Change) (stmt, error) {
	qname := c.QualifiedName()
	if !s.seqs[qname] {
		if err := s.wait(ctx); err != nil {
			return stmt{}, err
		}
		var exists bool
		if err := s.conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, qname).Scan(&exists); err != nil {
			return stmt{}, err
		}
		if !exists {
			return stmt{}, fmt.Errorf("%w: the slave has no sequence %s; create it like the master's", ErrSchema, qname)
		}
		s.seqs[qname] = true
	}
	return setval(qname, c.New[0].Text), nil
}

// pipeline sends queued statements in one round trip, on a connection or
// in a transaction.
type pipeline struct {
	send interface {
		SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
	}
	batch pgx.Batch
}

func (p *pipeline) queue(s stmt) { p.batch.Queue(s.sql, s.args...) }

func (p *pipeline) full() bool { return p.batch.Len() >= pipelineDepth }

func (p *pipeline) flush(ctx context.Context) error {
	if p.batch.Len() == 0 {
		return nil
	}
	b := p.take()
	return readBatch(p.send.SendBatch(ctx, b), b.QueuedQueries)
}

// take hands the queued statements over, for sending, and starts afresh:
// the results read from the batch sent.
func (p *pipeline) take() *pgx.Batch {
	b := p.batch
	p.batch = pgx.Batch{}
	return &b
}

// readBatch reads the results of the queued statements, naming the first
// that failed.
func readBatch(res pgx.BatchResults, queued []*pgx.QueuedQuery) error {
	var err error
	for i := range queued {
		if _, err = res.Exec(); err != nil {
			err = fmt.Errorf("apply %s: %w", firstWords(queued[i].SQL), moved(err))
			break
		}
	}
	if cerr := res.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

func firstWords(sql string) string {
	if len(sql) > 80 {
		return sql[:80] + "…"
	}
	return sql
}

// isCardinalityViolation: a set-based statement touched one row twice,
// for two keys spelled apart that the slave holds equal (net.go).
func isCardinalityViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "21000"
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
