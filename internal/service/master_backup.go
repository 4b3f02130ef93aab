package service

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"

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
	if err != nil || !ok || req.Kind != "backup" {
		log.Info("backup connection without a backup request", "err", err)
		return
	}
	log.Info("sending a backup to the slave")
	start := time.Now()
	n, err := m.sendBackup(ctx, conn, req.ID, hello.MaxFrame)
	if err != nil {
		log.Warn("backup for the slave failed", "err", err)
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = conn.Send(sctx, ship.Reply{ID: req.ID, Kind: req.Kind, Error: err.Error()})
		scancel()
		return
	}
	log.Info("backup sent", "bytes", n, "elapsed", time.Since(start).Round(time.Millisecond))
}

func (m *Master) sendBackup(ctx context.Context, conn *ship.Conn, id uint64, peerMax int) (int64, error) {
	m.drainCapture(ctx)
	db, err := pgx.ConnectConfig(ctx, m.connCfg)
	if err != nil {
		return 0, fmt.Errorf("the master repository is unavailable: %w", err)
	}
	defer db.Close(context.Background())
	if peerMax <= 0 {
		peerMax = ship.DefaultMaxFrame
	}
	w := &streamWriter{ctx: ctx, conn: conn, id: id, chunk: min(peerMax-ship.StreamOverhead, 1<<20)}
	if _, err := backup.Write(ctx, db, w, backup.Options{Schemas: m.cfg.Repository.Schemas, Logger: m.log}); err != nil {
		return w.sent, err
	}
	if err := w.flush(); err != nil {
		return w.sent, err
	}
	return w.sent, conn.Send(ctx, ship.Stream{ID: id, End: true})
}

// drainCapture waits until capture has taken in everything committed so
// far, so that the backup's position (read in its snapshot) is recent and
// the slave does not start with a backlog that could already exceed
// spool.max_backlog.
func (m *Master) drainCapture(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		m.mu.Lock()
		r := m.reader
		m.mu.Unlock()
		if r != nil {
			select {
			case res := <-r.RequestSnapshot(func(context.Context, pgx.Tx) error { return nil }):
				if res.Err == nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
		// Capture is not connected (yet): wait for it. If it never comes,
		// the backup is still consistent, only its position is older.
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
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
