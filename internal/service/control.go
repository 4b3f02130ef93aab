package service

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/schedsync/schedsync/internal/config"
)

// SocketName is the control socket in spool.dir.
const SocketName = "schedsync.sock"

// The control protocol, on a unix stream socket: the client sends one line
// `COMMAND [ARG...]\n`, the service answers one line of JSON and closes.
// The answer is the command's result (for "status", a Status object), or
// {"control_error": "message"} if the command failed; no result has a
// control_error key. Being line-based, `echo status | socat - UNIX:...`
// works for an operator too.
const (
	// maxRequestLine bounds what a client may send.
	maxRequestLine = 4096
	// requestTimeout bounds how long a client may take to send its line,
	// so that a stuck client cannot pin a goroutine.
	requestTimeout = 10 * time.Second
	// maxSocketPath is sun_path's 108 bytes less the terminating NUL.
	maxSocketPath = 107
	// tmpSocketName is where the socket is created before it is made 0600
	// and renamed into place; shorter than SocketName so that the length
	// check on the final path covers it.
	tmpSocketName = ".sock.tmp"
)

// HandlerFunc answers one control command. The result is sent as JSON; an
// error is sent as its message, so it must not contain a secret.
type HandlerFunc func(ctx context.Context, name string, args []string) (any, error)

// Dialogue is a command result that goes on talking on the connection
// instead of being one JSON line: send writes one JSON line to the client
// and recv reads one line from it (bounded by its ctx, and by
// requestTimeout without a deadline). An error it returns is sent as the
// last line, like a failed command's.
type Dialogue func(ctx context.Context, send func(v any) error, recv func(ctx context.Context) (string, error)) error

// SocketPath is dir/schedsync.sock. A unix socket path is limited to 107
// bytes; rather than fall back to a world-writable place such as /tmp, a
// spool.dir too long for it is a configuration error (*config.KeyError).
func SocketPath(dir string) (string, error) {
	path := filepath.Join(dir, SocketName)
	if len(path) > maxSocketPath {
		return "", &config.KeyError{Key: "spool.dir", Value: dir,
			Reason:  fmt.Sprintf("is too long for the control socket %s (unix socket paths are limited to %d bytes)", SocketName, maxSocketPath),
			Allowed: fmt.Sprintf("use a directory path of at most %d bytes", maxSocketPath-len(SocketName)-1)}
	}
	return path, nil
}

// ControlServer serves the control socket of a running service.
type ControlServer struct {
	path   string
	ln     *net.UnixListener
	handle HandlerFunc
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ListenControl creates dir/schedsync.sock, readable and writable by its
// owner only, and serves it with handle until Close. The caller must hold
// the pid lock: a socket file already there is then stale (left by a
// killed service) and is replaced.
func ListenControl(dir string, handle HandlerFunc, log *slog.Logger) (*ControlServer, error) {
	path, err := SocketPath(dir)
	if err != nil {
		return nil, err
	}
	// The socket is made 0600 under a temporary name and only then renamed
	// into place, so that no client ever finds it with the umask's mode;
	// chmod is used rather than umask, which is process-wide.
	tmp := filepath.Join(dir, tmpSocketName)
	for _, p := range []string{tmp, path} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // Close removes the final name itself
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &ControlServer{path: path, ln: ln, handle: handle, log: log, ctx: ctx, cancel: cancel}
	s.wg.Go(s.accept)
	return s, nil
}

// Path is the socket's path.
func (s *ControlServer) Path() string { return s.path }

// Close stops accepting, cancels the commands in progress, waits for them
// and removes the socket file.
func (s *ControlServer) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	return s.remove(err)
}

// abandon is Close without waiting for the commands in progress, for a
// forced exit: they may be stuck in a node that does not stop.
func (s *ControlServer) abandon() error {
	s.cancel()
	return s.remove(s.ln.Close())
}

func (s *ControlServer) remove(err error) error {
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

func (s *ControlServer) accept() {
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("control socket stopped accepting", "err", err)
			}
			return
		}
		s.wg.Go(func() { s.serveConn(conn) })
	}
}

func (s *ControlServer) serveConn(conn *net.UnixConn) {
	defer conn.Close()
	reply := func(v any) {
		if err := sendLine(conn, v); err != nil && !errors.Is(err, net.ErrClosed) {
			_ = sendLine(conn, controlReply{Error: "reply: " + err.Error()})
		}
	}
	if err := checkPeer(conn); err != nil {
		s.log.Warn("control socket refused a client", "err", err)
		reply(controlReply{Error: err.Error()})
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(requestTimeout))
	br := bufio.NewReader(io.LimitReader(conn, maxRequestLine))
	line, err := br.ReadString('\n')
	if err != nil {
		reply(controlReply{Error: "read request: send one line, COMMAND [ARG...], ended by a newline"})
		return
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		reply(controlReply{Error: "empty request: send COMMAND [ARG...]"})
		return
	}
	res, err := s.handle(s.ctx, fields[0], fields[1:])
	if d, ok := res.(Dialogue); ok && err == nil {
		err = d(s.ctx, func(v any) error { return sendLine(conn, v) }, func(ctx context.Context) (string, error) {
			return recvLine(ctx, conn, br)
		})
		if err == nil {
			return
		}
	}
	if err != nil {
		reply(controlReply{Error: err.Error()})
		return
	}
	reply(res)
}

// sendLine writes v as one JSON line.
func sendLine(conn net.Conn, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("marshal reply: %w", err)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(requestTimeout))
	_, err = conn.Write(append(data, '\n'))
	return err
}

// recvLine reads one line, without its newline, by ctx's deadline (or
// requestTimeout) and until ctx ends.
func recvLine(ctx context.Context, conn net.Conn, br *bufio.Reader) (string, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(requestTimeout)
	}
	_ = conn.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	line, err := br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from the client: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// controlReply is the answer to a failed command.
type controlReply struct {
	Error string `json:"control_error"`
}
