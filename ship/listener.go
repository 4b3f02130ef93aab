package ship

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Listen opens the master's sync port (sync.listen). With conf (from
// ServerTLSConfig) the port speaks TLS; either way a slave configured the
// other way gets a clear refusal instead of a hang. See NewListener.
func Listen(addr string, conf *tls.Config) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on sync.listen %s: %w", addr, err)
	}
	return NewListener(l, conf), nil
}

// NewListener wraps l so that each accepted connection checks the first
// byte the slave sends: 0x16 opens a TLS handshake, the protocol's magic a
// plaintext one. When that does not match the port's mode, the slave is
// told so in a form it can read, and the connection fails.
//
// Accept returns at once, without reading: the check (and the TLS
// handshake) runs on the connection's first Read or Write, that is inside
// ServerHandshake and under its deadline, so that a slow or silent client
// holds up only its own goroutine, never Accept.
func NewListener(l net.Listener, conf *tls.Config) net.Listener {
	return &listener{Listener: l, conf: conf}
}

type listener struct {
	net.Listener
	conf *tls.Config
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, conf: l.conf}, nil
}

// sniffConn is an accepted connection whose mode (TLS or plaintext) is
// decided by its first byte. The embedded raw connection provides
// addresses, deadlines and Close; Close never sends a TLS close_notify, so
// it never blocks (frames are length-prefixed: truncation is detected
// without it).
type sniffConn struct {
	net.Conn
	conf *tls.Config

	mu    sync.Mutex
	inner net.Conn // after the check: the raw connection or TLS over it
	err   error    // or why the check failed, returned by every call
}

func (c *sniffConn) Read(p []byte) (int, error) {
	in, err := c.ready()
	if err != nil {
		return 0, err
	}
	return in.Read(p)
}

func (c *sniffConn) Write(p []byte) (int, error) {
	in, err := c.ready()
	if err != nil {
		return 0, err
	}
	return in.Write(p)
}

func (c *sniffConn) ready() (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil && c.err == nil {
		c.inner, c.err = c.sniff()
	}
	return c.inner, c.err
}

func (c *sniffConn) sniff() (net.Conn, error) {
	from := c.RemoteAddr().String()
	// bufio keeps the peeked byte for whoever reads next; large reads
	// bypass its buffer, so it costs nothing after the first few bytes.
	pc := &peekedConn{Conn: c.Conn, r: bufio.NewReaderSize(c.Conn, 16)}
	first, err := pc.r.Peek(1)
	if err != nil {
		return nil, err
	}
	isTLS := first[0] == tlsHandshakeRecord
	switch {
	case c.conf != nil && isTLS:
		tc := tls.Server(pc, c.conf)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err) // the caller names the peer
		}
		return tc, nil
	case c.conf == nil && first[0] == magic[0]:
		return pc, nil
	case c.conf != nil && first[0] == magic[0]:
		refuseAndClose(pc, &RefusedError{Code: CodeTLSMismatch, Message: msgTLSRequired})
		return nil, &kindError{kind: ErrTLSMismatch, msg: "the slave at " + from +
			" connected without TLS to a sync port that requires it; set tls.ca (and tls.cert/tls.key) on the slave"}
	case c.conf == nil && isTLS:
		// The slave's TLS stack cannot read our refusal, but it fails at
		// once on it ("first record does not look like a TLS handshake"),
		// which Dial turns into the matching advice.
		refuseAndClose(pc, &RefusedError{Code: CodeTLSMismatch, Message: msgNoTLS})
		return nil, &kindError{kind: ErrTLSMismatch, msg: "the slave at " + from +
			" speaks TLS to a sync port without TLS; configure tls.* on the master or remove it from the slave"}
	}
	return nil, protocolf("the client at %s is not a schedsync slave (first byte %#x)", from, first[0])
}

// refuseAndClose sends a refusal frame, then reads and discards what the
// client already sent before closing: closing a socket with unread data
// makes the kernel send a reset, which can destroy our refusal in the
// client's receive buffer before the client reads it.
func refuseAndClose(pc *peekedConn, r *RefusedError) {
	defer pc.Close()
	head := r.encodeHead()
	buf := appendFrameHeader([]byte(magic), typeError, len(head))
	buf = append(buf, head...)
	if _, err := pc.Write(buf); err != nil {
		return
	}
	if cw, ok := pc.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, pc.r, 64<<10)
}

// peekedConn reads through the buffer that holds the peeked bytes.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
