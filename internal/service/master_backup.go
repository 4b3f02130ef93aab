package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/backup"
	"github.com/schedsync/schedsync/ship"
)

// serveBackup streams a backup of the master repository to a slave that
// asked for one (resync) on a connection with the backup purpose. The slave
// needs no credentials for the master database: the sync port carries it.
func (m *Master) serveBackup(ctx context.Context, nc net.Conn, hello ship.Hello) {
	log := m.log.With("slave", hello.Name, "purpose", "backup")
	conn := ship.NewConn(nc, ship.ConnOptions{
		Heartbeat: m.cfg.Sync.Heartbeat, PeerMaxFrame: hello.MaxFrame, Peer: "slave " + hello.Name,
	})
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	msg, err := conn.Receive(rctx)
	cancel()
	req, ok := msg.(ship.Request)
	if err != nil || !ok || req.Kind != ship.RequestBackup {
		log.Info("backup connection without a backup request", "err", err)
		return
	}
	log.Info("sending a backup to the slave")
	start := time.Now()
	// Taking the snapshot waits for running transactions, and a big table
	// may take a while before its first chunk: heartbeats keep the slave
	// from taking a busy master for a dead one.
	hctx, stopHeartbeats := context.WithCancel(ctx)
	go func() {
		_ = conn.SendHeartbeats(hctx, func() ship.Heartbeat {
			return ship.Heartbeat{Time: time.Now(), Position: m.sp.DurablePosition()}
		})
	}()
	n, err := m.sendBackup(ctx, conn, req.ID, hello.Name, hello.MaxFrame)
	stopHeartbeats()
	if err != nil {
		log.Warn("backup for the slave failed", "err", err)
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = conn.Send(sctx, ship.Reply{ID: req.ID, Kind: req.Kind, Error: err.Error()})
		scancel()
		return
	}
	log.Info("backup sent", "bytes", n, "elapsed", time.Since(start).Round(time.Millisecond))
}

func (m *Master) sendBackup(ctx context.Context, conn *ship.Conn, id uint64, slave string, peerMax int) (int64, error) {
	db, err := pgx.ConnectConfig(ctx, m.connCfg)
	if err != nil {
		return 0, fmt.Errorf("the master repository is unavailable: %w", err)
	}
	defer db.Close(context.Background())
	var tx pgx.Tx
	at, err := m.exactSnapshot(ctx, slave, func(ctx context.Context, name string) (err error) {
		tx, err = capture.BeginInSnapshot(ctx, db, name)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background())
	if peerMax <= 0 {
		peerMax = ship.DefaultMaxFrame
	}
	w := &streamWriter{ctx: ctx, conn: conn, id: id, chunk: min(peerMax-ship.StreamOverhead, 1<<20)}
	if _, err := backup.Write(ctx, tx, w, at, backup.Options{Schemas: m.cfg.Repository.Schemas, Logger: m.log}); err != nil {
		return w.sent, err
	}
	if err := w.flush(); err != nil {
		return w.sent, err
	}
	return w.sent, conn.Send(ctx, ship.Stream{ID: id, End: true})
}

// exactSnapshot has capture export a snapshot that equals one spool
// position exactly, has imp import it, and pins the spool from that
// position for spool.backup_pin (for slave, if it is a resync), so that
// the restored slave is served whatever backlog builds up meanwhile.
func (m *Master) exactSnapshot(ctx context.Context, slave string, imp func(ctx context.Context, name string) error) (backup.At, error) {
	r := m.waitReader(ctx, readerWait)
	if r == nil {
		return backup.At{}, errors.New("capture is not connected to the master repository (see schedsync status); a backup takes its position from capture")
	}
	// Pinned from before the snapshot (its position is at or after what
	// is durable now), so that retention cannot cut what the restored
	// slave needs while the backup runs.
	unpin := m.pinBackup(slave)
	res, err := capture.ExportSnapshot(ctx, r, imp)
	if err != nil {
		unpin()
		return backup.At{}, fmt.Errorf("take the backup's snapshot through capture: %w", err)
	}
	return backup.At{Position: res.Position, Epoch: res.Epoch, CaptureMode: string(m.cfg.Capture.Mode)}, nil
}

// readerWait is how long a backup waits for capture to connect, as after
// the master service's start.
const readerWait = 30 * time.Second

// waitReader returns the capture reader once capture is connected, or nil
// after wait.
func (m *Master) waitReader(ctx context.Context, wait time.Duration) capture.Reader {
	deadline := time.Now().Add(wait)
	for {
		m.mu.Lock()
		r := m.reader
		m.mu.Unlock()
		if r != nil || !time.Now().Before(deadline) {
			return r
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pinBackup keeps the spool from the current durable position for
// spool.backup_pin; the returned function takes the pin back.
func (m *Master) pinBackup(slave string) (unpin func()) {
	if m.cfg.Spool.BackupPin <= 0 {
		return func() {}
	}
	p := backupPin{Position: m.sp.DurablePosition(), Until: time.Now().Add(m.cfg.Spool.BackupPin), Slave: slave}
	// Unsaved, a pin still holds until the master restarts.
	if err := m.reg.pin(p); err != nil {
		m.log.Warn("could not save the slave registry; the backup's pin holds until the master restarts", "err", err)
	}
	return func() {
		if err := m.reg.unpin(p); err != nil {
			m.log.Warn("could not save the slave registry", "err", err)
		}
	}
}

// streamWriter cuts what is written into Stream frames. One frame is
// buffered at most, and Send blocks on TCP flow control, so memory stays
// flat whatever the size of the backup.
type streamWriter struct {
	ctx   context.Context
	conn  *ship.Conn
	id    uint64
	chunk int
	buf   []byte
	sent  int64
}

func (w *streamWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), w.chunk-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == w.chunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *streamWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.conn.Send(w.ctx, ship.Stream{ID: w.id, Data: w.buf}); err != nil {
		return err
	}
	w.sent += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// Command answers control socket commands beside status: "snapshot" is
// `schedsync backup` asking for an exact capture snapshot to read in.
func (m *Master) Command(ctx context.Context, name string, _ []string) (any, error) {
	if name != "snapshot" {
		return nil, fmt.Errorf("unknown command %q; a master answers: status, snapshot", name)
	}
	return Dialogue(func(ctx context.Context, send func(any) error, recv func(context.Context) (string, error)) error {
		at, err := m.exactSnapshot(ctx, "", func(ictx context.Context, name string) error {
			if err := send(map[string]string{"snapshot": name}); err != nil {
				return err
			}
			line, err := recv(ictx)
			if err != nil {
				return fmt.Errorf("wait for the backup to import the snapshot: %w", err)
			}
			if line != "imported" {
				return fmt.Errorf("the backup did not import the snapshot (it said %.80q)", line)
			}
			return nil
		})
		if err != nil {
			return err
		}
		m.log.Info("backup snapshot exported", "position", at.Position, "capture_epoch", fmt.Sprintf("%016x", at.Epoch))
		return send(at)
	}), nil
}
