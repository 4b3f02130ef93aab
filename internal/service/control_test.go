package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/schedsync/schedsync/internal/config"
)

func echoHandler(_ context.Context, name string, args []string) (any, error) {
	switch name {
	case "status":
		return Status{Role: "master", Name: "node01", Running: true, State: StateStreaming, Position: 3}, nil
	case "echo":
		return args, nil
	}
	return nil, errors.New("unknown command " + name)
}

func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	// A socket file left by a killed service is replaced.
	if err := os.WriteFile(filepath.Join(dir, SocketName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := ListenControl(dir, echoHandler, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(srv.Path())
	if err != nil || info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: mode %v, err %v; want a 0600 socket", srv.Path(), info.Mode(), err)
	}
	ctx := context.Background()

	st, err := QueryStatus(ctx, dir)
	if err != nil || st.Position != 3 || !st.Running || st.Slaves == nil {
		t.Errorf("QueryStatus = %+v, %v", st, err)
	}
	raw, err := Request(ctx, dir, "echo", "a", "b")
	var args []string
	if err != nil || json.Unmarshal(raw, &args) != nil || strings.Join(args, ",") != "a,b" {
		t.Errorf("echo a b = %s, %v", raw, err)
	}
	if _, err := Request(ctx, dir, "promote"); err == nil || err.Error() != "control promote: unknown command promote" {
		t.Errorf("unknown command: %v", err)
	}

	// One line in, one JSON line out, for scripts and socat.
	conn, err := net.Dial("unix", srv.Path())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("\n"))
	buf := make([]byte, 4096)
	k, _ := conn.Read(buf)
	conn.Close()
	if got := string(buf[:k]); !strings.HasPrefix(got, `{"control_error":"empty request`) || !strings.HasSuffix(got, "}\n") {
		t.Errorf("empty request answered %q", got)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(srv.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if _, err := QueryStatus(ctx, dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("QueryStatus after Close = %v, want ErrNotRunning", err)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	dir := "/" + strings.Repeat("x", maxSocketPath-len(SocketName)-1)
	if _, err := SocketPath(dir[:len(dir)-1]); err != nil {
		t.Errorf("SocketPath of the longest usable dir: %v", err)
	}
	_, err := SocketPath(dir + "x")
	ke := config.KeyErrors(err)
	if len(ke) != 1 || ke[0].Key != "spool.dir" || !strings.Contains(err.Error(), "too long for the control socket") {
		t.Errorf("SocketPath of a too long dir = %v, want a spool.dir KeyError", err)
	}
}
