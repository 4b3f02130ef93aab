package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoCaptureEpoch refuses a backup that does not say which capture
// history its position belongs to.
var ErrNoCaptureEpoch = errors.New("the backup records no capture history (it was written by an older schedsync): the slave could not tell whether the master's changes continue its data; take a new backup (schedsync backup, or schedsync resync)")

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// Progress is told how verification and the load advance; nil: not at
	// all.
	Progress Progress
	Logger   *slog.Logger
	// Checked, if set, is called after the file is verified and the slave's
	// schema checked, before anything is changed; an error stops the
	// restore there.
	Checked func(Manifest) error
	// BeforeCommit, if set, runs in the load transaction after the data,
	// sequences and position, just before COMMIT: what it writes commits
	// or rolls back with the restore (e.g. a note that the slave was
	// seeded). An error rolls the restore back.
	BeforeCommit func(ctx context.Context, tx pgx.Tx) error
}

// Restore loads a backup into the slave repository conn is connected to
// and sets its applied position, so that apply resumes from the backup's
// position. The caller makes sure apply is not running (the service is
// stopped, or it is the service's own resync).
//
// open is called twice: pass 1 verifies the whole file (ErrCorrupt) and
// pass 2 loads it, checking it again as it goes. Between the passes the
// slave's schema is checked (ErrSchema). Until then nothing is changed.
// Then schedsync.state.needs_resync is set and committed, and one
// transaction truncates the replicated tables, copies the data in, sets
// the sequences to the backup's values, sets applied_position to the
// backup's position and clears needs_resync. If that transaction does not
// commit, the tables are as they were; needs_resync stays set (apply
// refuses to run) unless Restore could put it back as it was, which it
// does when the load failed on an error rather than a lost connection.
func Restore(ctx context.Context, conn *pgx.Conn, open func() (io.ReadCloser, error), opts RestoreOptions) (Manifest, error) {
	opts.Progress = orNoProgress(opts.Progress)
	progress := opts.Progress
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("stage", "restore")
	opts.Logger = log
	start := time.Now()
	m, err := verifyFile(ctx, open, progress)
	if err != nil {
		return m, err
	}
	log.Info("backup file verified", "tables", len(m.Tables), "rows", m.Rows, "position", m.Position, "took", time.Since(start))
	if m.CaptureEpoch == 0 {
		return m, ErrNoCaptureEpoch
	}
	tg, err := checkTarget(ctx, conn, &m)
	if err != nil {
		return m, err
	}
	if opts.Checked != nil {
		if err := opts.Checked(m); err != nil {
			return m, err
		}
	}
	if _, err := conn.Exec(ctx, `UPDATE schedsync.state SET needs_resync = true, updated_at = now() WHERE id = 1`); err != nil {
		return m, fmt.Errorf("mark the slave needs_resync: %w", err)
	}
	start = time.Now()
	committed, err := load(ctx, conn, open, &m, tg, opts)
	if err == nil {
		log.Info("backup loaded", "took", time.Since(start))
		return m, nil
	}
	stop(progress)
	if !committed && !tg.needsResync && !conn.IsClosed() {
		// The load rolled back: the slave holds what it held, at the
		// position it was at, so the mark can go.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, rerr := conn.Exec(rctx, `UPDATE schedsync.state SET needs_resync = false, updated_at = now() WHERE id = 1`); rerr != nil {
			log.Warn("could not clear needs_resync after the failed load", "err", rerr)
		}
	}
	return m, err
}

// verifyFile is pass 1.
func verifyFile(ctx context.Context, open func() (io.ReadCloser, error), progress Progress) (Manifest, error) {
	rc, err := open()
	if err != nil {
		return Manifest{}, err
	}
	defer rc.Close()
	var total Totals
	if st, ok := rc.(interface{ Stat() (fs.FileInfo, error) }); ok {
		if fi, err := st.Stat(); err == nil && fi.Mode().IsRegular() {
			total.Bytes = fi.Size()
		}
	}
	progress.Begin("verify", total)
	m, err := verify(ctx, rc, progress)
	if err != nil {
		stop(progress)
		return m, err
	}
	progress.End()
	return m, nil
}

// loadSetup makes the load bypass the slave's triggers and foreign keys, as
// apply does, and pins the settings the text COPY format depends on.
var loadSetup = "SET LOCAL session_replication_role = replica;\n" + pinSettings

// load is pass 2: the one transaction that replaces the slave's data.
// committed says whether COMMIT was sent.
func load(ctx context.Context, conn *pgx.Conn, open func() (io.ReadCloser, error), m *Manifest, tg *target,
	opts RestoreOptions) (committed bool, err error) {
	progress, log := opts.Progress, opts.Logger
	rc, err := open()
	if err != nil {
		return false, err
	}
	defer rc.Close()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin the load: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, loadSetup); err != nil {
		return false, fmt.Errorf("set up the load session: %w", err)
	}
	if err := truncate(ctx, tx, m, tg); err != nil {
		return false, err
	}
	r, err := newReader(ctx, rc, progress)
	if err != nil {
		return false, err
	}
	defer r.close()
	r.expect, r.rawBytes = m, true
	progress.Begin("load", Totals{Rows: m.Rows, Bytes: m.RawBytes})
	for i := range m.Tables {
		t := &m.Tables[i]
		idx, err := dropIndexes(ctx, tx, t)
		if err != nil {
			return false, err
		}
		start := time.Now()
		if err := loadTable(ctx, tx, r, t, !tg.partitioned[t.String()]); err != nil {
			return false, err
		}
		copied := time.Now()
		if err := buildIndexes(ctx, tx, t, idx); err != nil {
			return false, err
		}
		log.Info("table loaded", "table", t.String(), "rows", t.Rows, "copy", copied.Sub(start),
			"indexes_rebuilt", len(idx), "index_build", time.Since(copied))
	}
	if h, err := r.nextTable(); err != nil {
		return false, err
	} else if h != nil {
		return false, errors.New("backup file changed since it was verified: it has more tables")
	}
	if err := finishLoad(ctx, tx, m); err != nil {
		return false, err
	}
	if opts.BeforeCommit != nil {
		if err := opts.BeforeCommit(ctx, tx); err != nil {
			return false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return true, fmt.Errorf("commit the restore: %w", err)
	}
	progress.End()
	return true, nil
}

// truncate empties the tables in one statement: tables linked by foreign
// keys must go together. It runs in the load transaction, so that COPY
// may FREEZE the rows. ONLY applies to each name it precedes: inheritance
// children that are not in the backup are left alone, while a table
// partitioned on the slave is emptied with its partitions.
func truncate(ctx context.Context, tx pgx.Tx, m *Manifest, tg *target) error {
	if len(m.Tables) == 0 {
		return nil
	}
	names := make([]string, len(m.Tables))
	for i := range m.Tables {
		names[i] = "ONLY " + m.Tables[i].QualifiedName()
		if tg.partitioned[m.Tables[i].String()] {
			names[i] = m.Tables[i].QualifiedName()
		}
	}
	if _, err := tx.Exec(ctx, "TRUNCATE "+strings.Join(names, ", ")); err != nil {
		return fmt.Errorf("truncate the replicated tables: %w", withDetail(err))
	}
	return nil
}

// loadTable copies one table in. FREEZE writes the rows frozen and all
// visible, sparing the slave a later pass of VACUUM over every page; it is
// allowed because the table was truncated in this transaction.
func loadTable(ctx context.Context, tx pgx.Tx, r *reader, t *Table, freeze bool) error {
	h, err := r.nextTable()
	if err != nil {
		return err
	}
	if h == nil {
		return errors.New("backup file changed since it was verified: it ends early")
	}
	sql := copySQL(&t.TableHeader, "FROM STDIN")
	if freeze {
		sql = strings.TrimSuffix(sql, ")") + ", FREEZE)"
	}
	tr := &trackingReader{r: r}
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, tr, sql)
	if tr.err != nil {
		return tr.err // the file's error, not COPY's echo of it
	}
	if err != nil {
		return fmt.Errorf("copy table %s into the slave: %w", t.String(), withDetail(err))
	}
	if tag.RowsAffected() != t.Rows {
		return fmt.Errorf("copy table %s into the slave: %d rows loaded, the backup holds %d", t.String(), tag.RowsAffected(), t.Rows)
	}
	return nil
}

// withDetail adds what PostgreSQL says besides its message (which row,
// which referencing table) to err.
func withDetail(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	for _, more := range []string{pe.Detail, pe.Where} {
		if more != "" {
			err = fmt.Errorf("%w; %s", err, more)
		}
	}
	return err
}

// trackingReader keeps the error the file gave, which COPY only echoes.
type trackingReader struct {
	r   io.Reader
	err error
}

func (t *trackingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// finishLoad sets the sequences and the applied position.
func finishLoad(ctx context.Context, tx pgx.Tx, m *Manifest) error {
	var b pgx.Batch
	for _, s := range m.Sequences {
		// Exactly the backup's state: at or above every value the
		// backup's rows used; apply only moves it forward from there.
		b.Queue(`SELECT setval($1::text::regclass, $2, $3)`, s.QualifiedName(), s.LastValue, s.IsCalled)
	}
	b.Queue(`UPDATE schedsync.state SET applied_position = $1, capture_epoch = $2, needs_resync = false, updated_at = now() WHERE id = 1`,
		int64(m.Position), int64(m.CaptureEpoch))
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("set the sequences and the applied position: %w", err)
	}
	return nil
}
