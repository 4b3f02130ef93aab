package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/zstd"
)

// Options configures Write.
type Options struct {
	// Schemas whose sequences are saved (repository.schemas); default
	// public. The tables are those carrying the capture trigger.
	Schemas []string
	// Progress is told how the backup advances; nil: not at all.
	Progress Progress
	Logger   *slog.Logger
	// Workers compress chunks in parallel; 0: GOMAXPROCS.
	Workers int
	// Level is the zstd level; 0: zstd.SpeedFastest.
	Level zstd.EncoderLevel
}

func (o Options) withDefaults() Options {
	if len(o.Schemas) == 0 {
		o.Schemas = []string{"public"}
	}
	o.Progress = orNoProgress(o.Progress)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Level == 0 {
		o.Level = zstd.SpeedFastest
	}
	return o
}

// ErrNotInstalled: the master has no capture objects.
var ErrNotInstalled = errors.New("schedsync is not installed in this database (run schedsync install on the master)")

// At is where a backup's snapshot stands in the capture stream: exactly
// at spool position Position of capture history Epoch, as the capture
// reader reported for the snapshot it exported (capture.ExportSnapshot).
type At struct {
	Position    uint64 `json:"position"`
	Epoch       uint64 `json:"capture_epoch,string"`
	CaptureMode string `json:"capture_mode"`
}

// Write streams a backup of the master repository into w: every
// replicated table and the sequences, read in tx, whose snapshot must be
// the one capture reported at (see capture.BeginInSnapshot, and the package doc for
// why streaming from at.Position converges exactly). The caller ends tx.
// Memory stays flat whatever the size of the tables.
func Write(ctx context.Context, tx pgx.Tx, w io.Writer, at At, opts Options) (Manifest, error) {
	opts = opts.withDefaults()
	log := opts.Logger.With("stage", "backup")
	m := Manifest{FormatVersion: FormatVersion, CaptureMode: at.CaptureMode, Position: at.Position, CaptureEpoch: at.Epoch}
	if at.Epoch == 0 {
		return m, errors.New("backup: the snapshot has no capture epoch")
	}
	tables, err := snapshot(ctx, tx, &m, opts.Schemas)
	if err != nil {
		return m, err
	}
	est := Totals{Estimate: true}
	for _, t := range tables {
		est.Rows += t.estRows
		est.Bytes += t.estBytes
	}
	log.Info("backup snapshot taken", "position", m.Position, "capture_epoch", fmt.Sprintf("%016x", m.CaptureEpoch),
		"tables", len(tables), "sequences", len(m.Sequences))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fw, err := newFrameWriter(w, opts.Workers, opts.Level, opts.Progress)
	if err != nil {
		return m, err
	}
	opts.Progress.Begin("backup", est)
	headers := make([]TableHeader, len(tables))
	for i := range tables {
		headers[i] = tables[i].TableHeader
	}
	err = writeFrames(ctx, fw, &m, headers, pgCopy(tx))
	if err != nil {
		fw.abort()
		stop(opts.Progress)
		if werr := fw.failed(); werr != nil {
			err = werr // the write error is the cause; COPY failed because of it
		}
		return m, err
	}
	if err := fw.close(); err != nil {
		stop(opts.Progress)
		return m, err
	}
	opts.Progress.End()
	return m, nil
}

// snapshot reads, in the transaction's snapshot, the source, the tables
// (locked against DDL until the backup ends) and the sequences.
func snapshot(ctx context.Context, tx pgx.Tx, m *Manifest, schemas []string) ([]tableInfo, error) {
	if _, err := tx.Exec(ctx, pinSettings); err != nil {
		return nil, fmt.Errorf("pin session settings: %w", err)
	}
	var installed bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schedsync.capture_state') IS NOT NULL`).Scan(&installed); err != nil {
		return nil, fmt.Errorf("look for schedsync.capture_state: %w", err)
	}
	if !installed {
		return nil, ErrNotInstalled
	}
	var err error
	if err = tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&m.SnapshotTime); err != nil {
		return nil, fmt.Errorf("read the clock: %w", err)
	}
	if m.Source, err = readSource(ctx, tx); err != nil {
		return nil, err
	}
	tables, err := listTables(ctx, tx)
	if err != nil {
		return nil, err
	}
	if len(tables) == 0 {
		return nil, errors.New("no table carries the capture trigger: nothing to back up (run schedsync install on the master)")
	}
	names := make([]string, len(tables))
	for i := range tables {
		names[i] = tables[i].QualifiedName()
	}
	// Rows stay those of the snapshot whatever happens, but a column
	// dropped before its table is copied would fail the COPY.
	if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN ACCESS SHARE MODE"); err != nil {
		return nil, fmt.Errorf("lock the replicated tables: %w", err)
	}
	if m.Sequences, err = readSequences(ctx, tx, schemas); err != nil {
		return nil, err
	}
	return tables, nil
}

// copyFunc streams a table's raw COPY data into w and returns the row
// count COPY reported.
type copyFunc func(ctx context.Context, t *TableHeader, w io.Writer) (int64, error)

// pgCopy is copyFunc over the snapshot transaction.
func pgCopy(tx pgx.Tx) copyFunc {
	return func(ctx context.Context, t *TableHeader, w io.Writer) (int64, error) {
		tag, err := tx.Conn().PgConn().CopyTo(ctx, w, copySQL(t, "TO STDOUT"))
		if err != nil {
			return 0, fmt.Errorf("copy table %s: %w", t.String(), err)
		}
		return tag.RowsAffected(), nil
	}
}

// writeFrames writes the file: header, each table, manifest, end marker.
func writeFrames(ctx context.Context, fw *frameWriter, m *Manifest, tables []TableHeader, copyFn copyFunc) error {
	if err := fw.writeHeader(); err != nil {
		return err
	}
	sums := make([]*tableSum, len(tables))
	for i := range tables {
		var err error
		if sums[i], err = writeTable(ctx, fw, tables[i], copyFn); err != nil {
			return err
		}
	}
	if err := fw.wait(ctx); err != nil { // the end frames are computed
		return err
	}
	if m.Finished.IsZero() {
		m.Finished = time.Now().UTC()
	}
	for _, s := range sums {
		m.Tables = append(m.Tables, Table{TableHeader: s.hdr, TableEnd: s.end})
		m.Rows += s.end.Rows
		m.RawBytes += s.end.RawBytes
	}
	if err := fw.submitJSON(ctx, frameManifest, m); err != nil {
		return err
	}
	return fw.submit(ctx, &outFrame{typ: frameFinal})
}

// writeTable streams one table: begin frame, data frames, end frame.
func writeTable(ctx context.Context, fw *frameWriter, t TableHeader, copyFn copyFunc) (*tableSum, error) {
	sum := newTableSum(t)
	if err := fw.submitJSON(ctx, frameBegin, t); err != nil {
		return nil, err
	}
	ch := &chunker{ctx: ctx, fw: fw, sum: sum}
	rows, err := copyFn(ctx, &t, ch)
	if err != nil {
		return nil, err
	}
	if err := ch.flush(); err != nil {
		return nil, err
	}
	return sum, fw.submit(ctx, &outFrame{typ: frameEnd, sum: sum, copyRows: rows})
}
