package main

import (
	"net"
	"os"
)

// sdNotifier tells systemd about the service (Type=notify): READY=1 once it
// is up, STOPPING=1 when a stop begins. A nil *sdNotifier (not started by
// systemd) ignores every call. Like sd_notify(3), it is best effort.
type sdNotifier struct{ addr string }

// newSDNotifier takes NOTIFY_SOCKET out of the environment, so that hook
// commands run by the service do not talk to systemd in its name.
func newSDNotifier() *sdNotifier {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	os.Unsetenv("NOTIFY_SOCKET")
	return &sdNotifier{addr: addr}
}

func (n *sdNotifier) notify(state string) {
	if n == nil {
		return
	}
	// Go maps a leading '@' (an abstract socket, as systemd may use) to NUL.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(state))
}
