// Package pgtest starts real, throwaway PostgreSQL clusters (initdb and
// pg_ctl into a temporary directory) for tests and for the demo, so that
// nothing that touches SQL is ever tested against a mock.
//
// A cluster listens on a random loopback port only (no Unix socket, so it
// never collides with a system cluster or needs /var/run/postgresql), runs
// with wal_level=logical, and trades durability against an operating-system
// crash for speed (fsync=off, full_page_writes=off). It still survives a crash
// of PostgreSQL itself, which is what StopImmediate simulates.
//
// When the caller is root, initdb, pg_ctl and postgres run as the OS user
// "postgres", because PostgreSQL refuses to run as root.
//
// The package owns the clusters it starts and must never touch any other:
// not the system's cluster, and not a cluster of another live process. Leaks
// are prevented three ways: Stop (and Main, also on SIGINT/SIGTERM), a
// watchdog process that stops the server and removes the directory when its
// owner dies without Stop (panic, test timeout, SIGKILL), and, on every Start,
// removal of clusters whose owner is gone, judged by a lock the owner holds.
package pgtest
