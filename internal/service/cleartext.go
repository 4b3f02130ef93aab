package service

import "net"

// clearTextWarning is what a master says when its sync port is reachable
// from other hosts without TLS: every job's data crosses the network in
// clear text. Empty on loopback or with TLS.
func clearTextWarning(addr net.Addr, tls bool) string {
	tcp, ok := addr.(*net.TCPAddr)
	if tls || !ok || tcp.IP.IsLoopback() {
		return ""
	}
	return "sync.listen " + addr.String() + " is reachable from other hosts without TLS: the repository's rows cross the network in clear text; " +
		"set tls.cert and tls.key on the master (and tls.ca on both sides for mutual TLS), see TLS on the sync port in the README (schedsync tls init)"
}
