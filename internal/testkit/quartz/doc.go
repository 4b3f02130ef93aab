// Package quartz is schedsync's reference workload: the schema of the Quartz
// Scheduler's JDBC job store (qrtz_* tables) and a generator that drives it
// the way a cluster of Quartz JobStoreTX instances does, for the demo and the
// end-to-end replication tests.
//
// The generator reproduces what matters to a replication tool rather than
// Quartz's scheduling semantics: the same statements in the same transaction
// shapes (a row lock on qrtz_locks first, then the acquire, fire and complete
// steps), composite keys, cascading deletes of trigger child rows, no-op and
// partial updates of rows with large (TOASTed) bytea columns, NULL versus empty
// strings, unicode, and a row count that stays bounded over long runs.
//
// Fingerprint gives an order-independent checksum per table so that tests can
// compare a master with its replica.
//
// The package owns only the qrtz_* tables of the database it is given. It must
// never touch other tables, change the schema while running, or give up on
// a database that restarts: connection loss is counted and retried, because
// the end-to-end tests kill and restart servers under load.
package quartz
