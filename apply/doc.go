// Package apply replays source transactions from the slave spool into the
// slave repository, in position order, exactly once.
//
// It owns the apply session and schedsync.state's applied_position. The
// position of the last transaction of a group is written in the same slave
// transaction as the rows it covers, so after a crash of the service or of
// the database apply resumes exactly there: nothing is applied twice,
// nothing skipped. The position is written only if it is still where the
// group began (schedsync.set_applied): a session whose client died after
// sending its COMMIT may still commit while the next session starts from
// the position it read before, and the next session's group then rolls
// back and reads the position again instead of committing the same
// changes twice. Consecutive source transactions may share one slave
// transaction (grouping), which never exposes a state between two source
// transactions' boundaries.
//
// Every transaction carries the capture history (epoch) it was captured
// under, and the slave's data has one (schedsync.state.capture_epoch, set
// by restore from the backup, or taken from the first transaction by a
// slave that started empty; committed with the applied position). Apply
// refuses a transaction of another history with ErrHistory: capture was
// installed again on the master, and what changed in between is missing
// here; only a re-sync helps.
//
// Replay is idempotent on full row images: insert and update are upserts on
// the key (an update that changed the key deletes the old key first),
// delete is delete-if-present, TRUNCATE truncates. The session runs with
// session_replication_role = replica so that the slave's own triggers and
// foreign-key checks do not fire on replicated rows, and with the same
// output settings capture pinned, so that text values compare exactly.
//
// An update whose new row lacks values that were not sent (unchanged
// TOASTed values in logical capture) cannot be an upsert: it is an UPDATE of
// the sent columns of the row where it stands, and the slave keeps its own
// value for the others. Such an update of a row the slave does not hold
// does nothing. That only happens when replaying onto a snapshot that holds
// a later state, and the row's later full image (an insert) or its delete
// comes later in the stream. A partial update that changed the primary key
// never moves the row over one already at the new key (see
// updateMovingKey).
//
// Within a group, changes are applied set-based (net.go): folded per table
// to the last state of every key and written with a few statements over
// arrays of rows, with whatever that cannot express exactly applied in
// order. A group's batch is sent without waiting for its results, which
// are read before the next is sent: the server runs one group while apply
// reads and folds the next.
//
// A restore's position is exactly what its snapshot holds (see package
// backup), so replay never goes over changes the slave already has; that
// is what keeps a table without a primary key exact, where no upsert could
// absorb a change applied twice. When a group fails all the same on a
// unique-constraint conflict between rows, the group is rolled back and
// applied again change by change under savepoints: the master applied the
// same change at the same point without a conflict, so the conflicting
// row is one the master's state did not hold there (it came from outside
// the stream); it is removed so that the change can land. Apply must never
// skip a change or drop a column the master sends: a slave table without
// such a column stops apply with ErrSchema.
package apply
