// Package e2e holds schedsync's end-to-end tests: the real binary, built
// once per test run, drives a master and a slave sync service against two
// throwaway PostgreSQL clusters (internal/testkit/pgtest) while a clustered-Quartz
// workload and a writer of a table with a bigserial key run on the master,
// and the test crashes each moving part in turn: the slave service, the
// master service, the slave's database. It then checks that the slave
// converged to exactly the master's rows and sequences, that `schedsync
// verify` agrees, and that it notices a difference.
//
// The package has no code besides its tests. The tests must only touch
// what they start: their own clusters, services whose spool directories are
// under t.TempDir, and loopback ports. Every wait is bounded in time.
package e2e
