package ship

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// ConnOptions configures a Conn. Build it from the handshake: Heartbeat
// from Welcome.Heartbeat on both sides, PeerMaxFrame from the other side's
// Hello.MaxFrame or Welcome.MaxFrame.
type ConnOptions struct {
	// Heartbeat is the agreed sync.heartbeat. The peer is considered dead
	// after twice this with no byte arriving, or with a write making no
	// progress. 0 disables the deadlines.
	Heartbeat    time.Duration
	MaxFrame     int    // the largest frame we accept, as we announced it; 0 means DefaultMaxFrame
	PeerMaxFrame int    // the largest frame the peer accepts; 0 means DefaultMaxFrame
	Peer         string // names the peer in errors, e.g. "slave node02"; default "peer at <address>"
}

// Conn is an established connection after the handshake: framed messages
// with dead-peer deadlines.
//
// Send is safe for concurrent use, so that a heartbeat goroutine and a data
// goroutine can share the connection: each frame is written whole under a
// lock. Receive is meant for one reader goroutine (it is serialized too).
// Any error from Send or Receive leaves the connection unusable in that
// direction (a frame cut short cannot be resumed): close it and reconnect.
// Cancelling the ctx of a call in progress closes the connection.
type Conn struct {
	nc       net.Conn
	dead     time.Duration // twice the heartbeat; 0: no deadlines
	maxFrame int
	peerMax  int
	peer     string

	rmu  sync.Mutex
	rerr error         // sticky
	br   *bufio.Reader // over deadlineReader: a backlog's frames cost few reads
	rbuf []byte        // payload scratch of Records frames, under rmu

	wmu  sync.Mutex
	werr error  // sticky
	wbuf []byte // writeFrameBuf's scratch, under wmu
}

// NewConn wraps a connection whose handshake has completed.
func NewConn(nc net.Conn, opts ConnOptions) *Conn {
	peer := opts.Peer
	if peer == "" {
		peer = "peer at " + nc.RemoteAddr().String()
	}
	c := &Conn{
		nc:       nc,
		dead:     2 * opts.Heartbeat,
		maxFrame: clampMaxFrame(opts.MaxFrame),
		peerMax:  clampMaxFrame(opts.PeerMaxFrame),
		peer:     peer,
	}
	c.br = bufio.NewReaderSize(deadlineReader{c}, readBuffer)
	return c
}

// readBuffer is what one read from the socket may take in; maxReuse is
// the largest Records payload whose storage a connection keeps between
// frames (spool records are 64 KiB and smaller, unless a transaction is
// larger).
const (
	readBuffer = 256 << 10
	maxReuse   = 1 << 20
)

// Send writes one message. A Records batch's Data is written from the
// caller's slice, not copied: it must not change until Send returns. A
// message larger than the peer's frame limit is refused before anything is
// written; the connection stays usable.
func (c *Conn) Send(ctx context.Context, m Message) error {
	head, tail := m.encode(nil)
	if n := len(head) + len(tail); n > c.peerMax {
		return fmt.Errorf("send %s of %d bytes to the %s: more than its frame limit of %d bytes",
			m.frameType(), n, c.peer, c.peerMax)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	stop := c.closeOnDone(ctx)
	err := writeFrameBuf(deadlineWriter{c}, m.frameType(), head, tail, &c.wbuf)
	if !stop() {
		err = context.Cause(ctx)
	}
	if err != nil {
		c.werr = c.ioError("send "+m.frameType().String()+" to", err)
		return c.werr
	}
	return nil
}

// Receive reads the next message: a Records, Heartbeat, Ack or
// MasterStatus value. An Error frame from the peer comes back as its
// *RefusedError (errors.Is(err, ErrNeedsResync) for a backlog
// disconnection). io.EOF is matched when the peer closed cleanly.
func (c *Conn) Receive(ctx context.Context) (Message, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return nil, c.rerr
	}
	stop := c.closeOnDone(ctx)
	f, err := readFrameInto(c.br, c.maxFrame, typeRecords, c.rbuf)
	if err == nil && f.typ == typeRecords && cap(f.payload) <= maxReuse {
		c.rbuf = f.payload[:0] // reused by the next Receive: see Records.Data
	}
	if !stop() {
		err = context.Cause(ctx)
	}
	var m Message
	if err == nil {
		m, err = decodeMessage(f)
	}
	if err != nil {
		c.rerr = c.ioError("receive from", err)
		return nil, c.rerr
	}
	if refusal, ok := m.(*RefusedError); ok {
		c.rerr = refusal
		return nil, refusal
	}
	return m, nil
}

// SendHeartbeats sends a Heartbeat at once and then every heartbeat
// interval, until ctx ends (it returns nil) or a send fails. next gives the
// positions; a zero Time is set to now.
func (c *Conn) SendHeartbeats(ctx context.Context, next func() Heartbeat) error {
	if c.dead <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(c.dead / 2)
	defer t.Stop()
	for {
		hb := next()
		if hb.Time.IsZero() {
			hb.Time = time.Now()
		}
		if err := c.Send(ctx, hb); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close closes the connection, unblocking any Send or Receive.
func (c *Conn) Close() error { return c.nc.Close() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// closeOnDone closes the connection if ctx ends during a call. Closing,
// rather than moving a deadline, cannot race with the deadline refreshes
// below, and a connection interrupted mid-frame is useless anyway.
func (c *Conn) closeOnDone(ctx context.Context) (stop func() bool) {
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() { c.nc.Close() })
}

func (c *Conn) ioError(op string, err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%s the %s: no progress for %s (twice sync.heartbeat), the peer is considered dead: %w",
			op, c.peer, c.dead, err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%s the %s: connection closed by the peer: %w", op, c.peer, err)
	}
	return fmt.Errorf("%s the %s: %w", op, c.peer, err)
}

// deadlineReader moves the read deadline before every read, so the peer
// is dead after twice the heartbeat with no byte arriving: a large frame
// on a slow link is progress, not death.
type deadlineReader struct{ c *Conn }

func (r deadlineReader) Read(p []byte) (int, error) {
	if r.c.dead > 0 {
		if err := r.c.nc.SetReadDeadline(time.Now().Add(r.c.dead)); err != nil {
			return 0, err
		}
	}
	return r.c.nc.Read(p)
}

// deadlineWriter does the same for writes: a peer that stops reading (its
// receive window stays full) is dead after twice the heartbeat.
type deadlineWriter struct{ c *Conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	if w.c.dead > 0 {
		if err := w.c.nc.SetWriteDeadline(time.Now().Add(w.c.dead)); err != nil {
			return 0, err
		}
	}
	return w.c.nc.Write(p)
}
