package service

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/fsutil"
	"github.com/schedsync/schedsync/spool"
)

// Unshipped is what an old master captured and its successor never got,
// written to a file before fail-back overwrites the old master's data.
type Unshipped struct {
	// Transactions is how many transactions the file holds: spooled after
	// the new master's fork position, and captured but not spooled yet.
	Transactions int
	// Path is the file (JSON lines), or "" when there was nothing.
	Path string
}

// unshippedTxn is one line of the file.
type unshippedTxn struct {
	// Source: "spool" (spooled after the fork: the slave that was promoted
	// never had it), "audit" (trigger mode: captured, not spooled yet) or
	// "slot" (logical mode: decoded by the slot, not spooled yet; the
	// pgoutput messages in hex).
	Source     string          `json:"source"`
	Position   uint64          `json:"position,omitempty"`
	Epoch      string          `json:"capture_epoch,omitempty"`
	XID        uint64          `json:"xid,omitempty"`
	CommitTime time.Time       `json:"commit_time,omitzero"`
	Changes    []unshippedRow  `json:"changes,omitempty"`
	Raw        json.RawMessage `json:"raw,omitempty"`
}

type unshippedRow struct {
	Op     string             `json:"op"`
	Table  string             `json:"table"`
	New    map[string]*string `json:"new,omitempty"`
	OldKey map[string]*string `json:"old_key,omitempty"`
}

// SaveUnshipped writes to spool.dir/unshipped-TIME.jsonl every change this
// node captured as master that the master it now follows does not have: the
// spooled transactions of history fork.Parent after fork.Position, and what
// capture holds but never spooled (audit rows, or a slot's pending
// changes). Then it clears that capture state (the slot, the audit table and
// capture's objects, and the spool), so that a later promotion starts clean.
// The service must not run. A node that never captured has nothing, and
// gets the zero Unshipped.
func SaveUnshipped(ctx context.Context, cfg config.Config, fork capture.Fork, log *slog.Logger) (Unshipped, error) {
	var out Unshipped
	connCfg, err := RepositoryConnConfig(cfg.Repository.URL, "resync")
	if err != nil {
		return out, err
	}
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return out, fmt.Errorf("connect to the repository: %w", err)
	}
	defer conn.Close(context.Background())
	mode, err := capture.InstalledMode(ctx, conn)
	if err != nil {
		return out, err
	}
	spoolDir := filepath.Join(cfg.Spool.Dir, "spool")
	_, statErr := os.Stat(spoolDir)
	if mode == "" && errors.Is(statErr, fs.ErrNotExist) {
		return out, nil
	}
	path := filepath.Join(cfg.Spool.Dir, "unshipped-"+time.Now().UTC().Format("20060102T150405Z")+".jsonl")
	f, err := fsutil.CreateAtomic(path, 0o600)
	if err != nil {
		return out, err
	}
	defer f.Abort()
	bw := bufio.NewWriter(f)
	enc := json.NewEncoder(bw)
	n := 0
	var spooledLSN uint64 // logical mode: the slot's changes up to it are in the spool
	if mode != "" && statErr == nil {
		if n, spooledLSN, err = writeSpooled(ctx, cfg, spoolDir, fork, enc, log); err != nil {
			return out, err
		}
	}
	m, err := writeCaptured(ctx, conn, mode, spooledLSN, enc)
	if err != nil {
		return out, err
	}
	n += m
	if err := bw.Flush(); err != nil {
		return out, err
	}
	if n > 0 {
		if err := f.Commit(); err != nil {
			return out, err
		}
		out = Unshipped{Transactions: n, Path: path}
	}
	if mode != "" {
		// The capture state of the old term goes; the slave's state
		// tables come back empty, for restore to fill.
		if err := capture.Demote(ctx, conn, cfg.Repository.Schemas); err != nil {
			return out, err
		}
	}
	return out, nil
}

// writeSpooled writes the spooled transactions of history fork.Parent
// after fork.Position, and returns the commit LSN of the spool's last
// transaction (logical mode).
func writeSpooled(ctx context.Context, cfg config.Config, dir string, fork capture.Fork, enc *json.Encoder, log *slog.Logger) (n int, lastLSN uint64, err error) {
	sp, err := spool.Open(spoolOptions(cfg, dir, log))
	if err != nil {
		return 0, 0, fmt.Errorf("open the old spool: %w", err)
	}
	defer sp.Close()
	end := sp.DurablePosition()
	if end == 0 || end < sp.FirstPosition() {
		return 0, 0, nil
	}
	from := min(max(fork.Position, sp.FirstPosition()-1), end-1)
	r, err := sp.NewReader(from)
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	for last := from; last < end; {
		pos, src, err := r.Next(ctx)
		if err != nil {
			return n, 0, fmt.Errorf("read the old spool after position %d: %w", last, err)
		}
		last = pos
		h := src.Header()
		lastLSN = max(lastLSN, h.LSN)
		if pos <= fork.Position {
			continue // the new master has it: the last one, read for its LSN
		}
		if fork.Parent != 0 && h.Epoch != fork.Parent {
			continue // another history than the one the new master forked from
		}
		t := unshippedTxn{Source: "spool", Position: pos, Epoch: epochText(h.Epoch), XID: h.XID, CommitTime: h.CommitTime}
		for {
			c, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return n, 0, fmt.Errorf("read the old spool at position %d: %w", pos, err)
			}
			t.Changes = append(t.Changes, rowOf(c))
		}
		if err := enc.Encode(t); err != nil {
			return n, 0, err
		}
		n++
	}
	return n, lastLSN, nil
}

func rowOf(c *change.Change) unshippedRow {
	values := func(cols []string, vals []change.Value) map[string]*string {
		if len(cols) == 0 {
			return nil
		}
		m := make(map[string]*string, len(cols))
		for i, col := range cols {
			if v := vals[i]; !v.Null && !v.Unchanged {
				m[col] = &v.Text
			} else {
				m[col] = nil
			}
		}
		return m
	}
	return unshippedRow{Op: c.Op.String(), Table: c.Schema + "." + c.Table,
		New: values(c.Columns, c.New), OldKey: values(c.KeyColumns, c.OldKey)}
}

// writeCaptured writes what capture holds but did not spool: the audit
// table's rows (trigger mode), grouped by transaction, or the slot's
// pending pgoutput messages (logical mode) of the transactions that commit
// after spooledLSN: the slot's confirmed position may lag what capture
// spooled.
func writeCaptured(ctx context.Context, conn *pgx.Conn, mode config.CaptureMode, spooledLSN uint64, enc *json.Encoder) (int, error) {
	switch mode {
	case config.CaptureTrigger:
		rows, err := conn.Query(ctx, `SELECT txid::text, json_agg(to_jsonb(a) ORDER BY id)::text FROM schedsync.audit a GROUP BY txid ORDER BY min(id)`)
		if err != nil {
			return 0, fmt.Errorf("read the audit table: %w", err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			var xid, raw string
			if err := rows.Scan(&xid, &raw); err != nil {
				return n, err
			}
			var x uint64
			fmt.Sscan(xid, &x)
			if err := enc.Encode(unshippedTxn{Source: "audit", XID: x, Raw: json.RawMessage(raw)}); err != nil {
				return n, err
			}
			n++
		}
		return n, rows.Err()
	case config.CaptureLogical:
		slot, _, ok, err := capture.ReadSlot(ctx, conn)
		if err != nil || !ok {
			return 0, err
		}
		rows, err := conn.Query(ctx, `SELECT xid::text::bigint, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
			'proto_version', '1', 'publication_names', $2)`, slot, capture.PublicationName)
		if err != nil {
			return 0, fmt.Errorf("read the pending changes of slot %s: %w", slot, err)
		}
		defer rows.Close()
		n := 0
		var cur *unshippedTxn
		var msgs []string
		for rows.Next() {
			var xid int64
			var data []byte
			if err := rows.Scan(&xid, &data); err != nil {
				return n, err
			}
			if cur == nil {
				cur, msgs = &unshippedTxn{Source: "slot", XID: uint64(xid)}, nil
			}
			msgs = append(msgs, hex.EncodeToString(data))
			if len(data) >= 10 && data[0] == 'C' {
				// Commit: flags (1 byte), then the commit LSN.
				if lsn := binary.BigEndian.Uint64(data[2:10]); lsn <= spooledLSN {
					cur = nil
					continue
				}
				cur.Raw, _ = json.Marshal(map[string]any{"pgoutput_hex": msgs})
				if err := enc.Encode(cur); err != nil {
					return n, err
				}
				n++
				cur = nil
			}
		}
		return n, rows.Err()
	}
	return 0, nil
}
