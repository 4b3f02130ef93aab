// Package capture turns committed changes on the master repository into an
// ordered stream of source transactions (change.Txn) and hands them to a Sink
// (the spool). It owns the capture objects in the master database: schema
// schedsync, the audit table, the trigger functions and the triggers on the
// replicated tables. It must never ship a transaction twice, never skip one,
// and never delete an audit row before the Sink has made it durable.
//
// # Trigger capture and why its order is right
//
// Row triggers write every change into schedsync.audit with id, an identity
// drawn from a sequence with CACHE 1, and txid, the writing transaction's
// xid8. Audit ids are not commit order: a transaction can take low ids, wait,
// and commit after one with higher ids. The reader therefore never orders by
// id alone. Each poll it takes one snapshot (REPEATABLE READ), sees exactly
// the audit rows of the transactions committed before that snapshot, groups
// them by txid, and delivers whole transactions in ascending order of their
// largest audit id, max(id).
//
// Claim: if T1 and T2 touch the same row and T1 commits first, T1 is
// delivered before T2.
//
//  1. T2's write of the row happens after T1 commits. PostgreSQL makes sure
//     of it: an UPDATE or DELETE of a row T1 has written waits on T1's row
//     lock; an INSERT of a key T1 wrote or deleted waits in the unique check;
//     under READ COMMITTED a row T1 inserted is invisible to T2 until T1
//     commits; TRUNCATE takes ACCESS EXCLUSIVE and so waits for, and is
//     waited on by, every writer of the table.
//  2. Our AFTER row trigger runs after the write, so T2's audit row for the
//     shared row draws its id after T1 committed, when all of T1's ids were
//     already drawn. A sequence with CACHE 1 hands out ids in the order they
//     are drawn, across sessions. So max(id of T2) > max(id of T1).
//  3. Visibility follows commit order: a snapshot that sees T2 committed sees
//     T1 committed, since T1 committed earlier.
//
// By 3, T1 is delivered in the same poll as T2 or in an earlier one; within a
// poll the order is max(id), which by 2 puts T1 first. The poll may stop
// after a batch of transactions, taking them lowest max(id) first, so the
// argument holds for batches too. Two transactions that touch no common row
// may arrive in either order; applying them in either order gives the same
// state.
//
// A transaction that commits late, with low ids, is simply not visible yet:
// it is delivered by the first poll whose snapshot sees it. Nothing is ever
// skipped because the reader keeps no id watermark: the audit table holds
// exactly the changes not yet confirmed durable.
//
// # Exactly once across crashes
//
// After the Sink has synced a batch, one master transaction deletes the
// batch's audit rows and records the batch's last spool position in
// schedsync.capture_state. A crash between the Sink's sync and that commit
// leaves audit rows whose transactions are already in the spool. At start
// the reader asks the Sink for the source XIDs it holds after the recorded
// position and deletes those audit rows first. xid8 never wraps, so an XID
// names one transaction forever. A poll that failed after appending part
// of its batch (the database went away mid-batch) leaves transactions in
// the spool that are not durable yet and whose audit rows stay: the next
// reader syncs the spool before it looks, so those are found and deleted
// too, never delivered twice.
//
// # Capture histories
//
// Install draws a random epoch into schedsync.capture_state; uninstall
// drops it with the schema. Every transaction either reader spools carries
// the epoch it was captured under (change.TxnHeader.Epoch). The master's
// spool goes on across uninstall and install, and positions never restart
// below what it holds (the readers raise capture_state to the spool's last
// position at connect), but the history does not: what changed while
// nothing captured is in no history. Backups record the epoch of their
// position, slaves record the epoch of their data, the handshake refuses a
// slave whose epoch is not that of the first transaction it would apply,
// and apply refuses such a transaction: a slave of an old history is
// re-seeded (resync), never silently continued.
//
// # Exact snapshots
//
// RequestSnapshot runs a function in a snapshot that holds exactly the
// transactions up to a spool position (trigger: a poll's snapshot that
// drains the audit table; logical: see below). ExportSnapshot exports it
// for another session: backups are read in it, so that a backup's
// position is exactly what its snapshot covers.
//
// # Values
//
// The triggers store OLD::text and NEW::text, record literals built from each
// column's output function with pinned DateStyle, IntervalStyle,
// extra_float_digits, bytea_output and TimeZone, so the slave's input
// functions recreate every value exactly. Columns are named from the catalog
// when the audit row is read; stored generated columns are not shipped. A
// column added after a change was captured is absent from that change (the
// slave keeps its default); a record with more fields than the table has
// columns stops the reader with an error naming the table, because a
// column was dropped while its changes were pending and the fields can no
// longer be matched to names.
//
// # Logical capture
//
// LogicalReader reads a pgoutput slot (proto_version 1) on a replication
// connection whose output settings are pinned like the triggers', so the
// text of every value is the same in both modes. A goroutine reads the
// stream into a small queue; the capture loop streams each transaction's
// rows into the spool as they arrive (a transaction is never held whole),
// syncs the spool when the queue runs dry (or every 20 ms under a
// continuous stream), and only then tells the server the LSN up to which
// everything is durable. After a restart the slot may send again what was
// spooled but not confirmed; such transactions are skipped by commit LSN,
// which only grows (only LSNs of the current epoch count: another
// history's were another slot's). Keepalives advance the confirmed position while
// nothing is published, so the slot does not hold WAL written by other
// tables. Exact snapshots (verify) come from a temporary slot's exported
// snapshot: see logical_snapshot.go.
package capture
