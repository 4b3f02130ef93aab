// Package service owns the life of one sync service process: the Node
// interface that the master and the slave implement, the pid file whose
// lock says whether the service is running, the control socket that
// `schedsync status`, `verify` (on a slave) and `backup` (on a master)
// talk to, and the status file that keeps the last known positions after
// the process is gone. RunService ties them together for `schedsync start
// --foreground`.
//
// What it must never do: log or write a secret (sync.token, a password in
// repository.url) into a log line, the status file or a control reply;
// judge liveness by anything but the pid file's lock (a killed process can
// linger as a zombie, and `kill -0` then says it is alive); call os.Exit.
// Detaching from the terminal and signal handling belong to cmd/.
package service
