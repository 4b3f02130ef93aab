package service

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/schedsync/schedsync/capture"
	"github.com/schedsync/schedsync/internal/backup"
)

// ErrNotRunning: no service answers on the control socket.
var ErrNotRunning = errors.New("the sync service is not running")

// maxReplyLine bounds one reply; a master's status with many slaves is a
// few kilobytes.
const maxReplyLine = 16 << 20

// Request sends one command to the service whose spool.dir is dir and
// returns its JSON result. It returns an error wrapping ErrNotRunning when
// nothing listens on the socket, and the service's message when the
// command failed there. Without a deadline in ctx it gives up after 10 s.
func Request(ctx context.Context, dir, name string, args ...string) (json.RawMessage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	conn, err := dialControl(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	req := strings.Join(append([]string{name}, args...), " ") + "\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, fmt.Errorf("control %s: send: %w", name, err)
	}
	return readReply(bufio.NewReader(io.LimitReader(conn, maxReplyLine)), name)
}

// dialControl connects to the control socket in dir, for as long as ctx
// lasts.
func dialControl(ctx context.Context, dir string) (net.Conn, error) {
	path, err := SocketPath(dir)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no service on %s)", ErrNotRunning, path)
		}
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("connect to control socket: %w; run this as the service's user or root", err)
		}
		return nil, fmt.Errorf("connect to control socket: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Ends a read or write in progress when ctx ends; it does not outlive
	// the connection in any way that matters.
	context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return conn, nil
}

// readReply reads one JSON reply line of command name, and turns a
// failure ({"control_error": ...}) into an error.
func readReply(br *bufio.Reader, name string) (json.RawMessage, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("control %s: read reply: %w", name, err)
	}
	if !json.Valid(line) {
		return nil, fmt.Errorf("control %s: malformed reply %.80q", name, line)
	}
	// Only an object can be a failure; a command may answer with any JSON.
	if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '{' {
		var failed struct {
			Error *string `json:"control_error"`
		}
		if err := json.Unmarshal(t, &failed); err == nil && failed.Error != nil {
			return nil, fmt.Errorf("control %s: %s", name, *failed.Error)
		}
	}
	return json.RawMessage(bytes.TrimSpace(line)), nil
}

// QueryStatus asks the running service for its status.
func QueryStatus(ctx context.Context, dir string) (Status, error) {
	raw, err := Request(ctx, dir, "status")
	if err != nil {
		return Status{}, err
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return Status{}, fmt.Errorf("control status: %w", err)
	}
	return st, nil
}

// ImportSnapshot has the master service whose spool.dir is dir export an
// exact capture snapshot (capture.ExportSnapshot), calls imp with its name
// to import it, and returns where the snapshot stands in the capture
// stream. `schedsync backup` reads the repository in that snapshot. It
// returns an error wrapping ErrNotRunning when no service answers.
func ImportSnapshot(ctx context.Context, dir string, imp func(ctx context.Context, name string) error) (backup.At, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+capture.ImportTimeout)
	defer cancel()
	conn, err := dialControl(ctx, dir)
	if err != nil {
		return backup.At{}, err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "snapshot\n"); err != nil {
		return backup.At{}, fmt.Errorf("control snapshot: send: %w", err)
	}
	br := bufio.NewReader(io.LimitReader(conn, maxReplyLine))
	var exported struct {
		Snapshot string `json:"snapshot"`
	}
	if err := readInto(br, &exported); err != nil {
		return backup.At{}, err
	}
	if err := imp(ctx, exported.Snapshot); err != nil {
		return backup.At{}, err
	}
	if _, err := io.WriteString(conn, "imported\n"); err != nil {
		return backup.At{}, fmt.Errorf("control snapshot: send: %w", err)
	}
	var at backup.At
	return at, readInto(br, &at)
}

// readInto reads one reply of the snapshot dialogue into v.
func readInto(br *bufio.Reader, v any) error {
	raw, err := readReply(br, "snapshot")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("control snapshot: malformed reply %.80q: %w", raw, err)
	}
	return nil
}
