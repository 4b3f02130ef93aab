// Package backup writes and restores backups of the replicated tables: a
// snapshot of every replicated table and of the sequences, together with
// the exact spool position and capture history it covers, in one
// compressed, checksummed file. `schedsync backup` and `schedsync restore`
// use it, and resync builds on it.
//
// It owns the file format and the load into the slave. It must never leave
// a half-loaded slave that looks consistent (the load is one transaction,
// and schedsync.state.needs_resync is set while it runs), never change the
// slave before the whole file is verified and its schema checked, and never
// trust a length read from a file before checking it against a limit.
//
// # The position, and why streaming from it converges exactly
//
// A backup is read in a snapshot that the master service's capture
// exported for it (capture.ExportSnapshot; `schedsync backup` gets it over
// the control socket, resync in the service itself), which holds exactly
// the transactions at or before one spool position P and none after it:
//
//   - Trigger mode: the snapshot is the REPEATABLE READ snapshot of a
//     capture poll that drains the audit table. It sees the audit rows of
//     exactly the transactions committed before it, the poll spools all of
//     them, and P is the spool's last position once they are durable. A
//     transaction it does not see commits later, is still in the audit
//     table for a later poll, and gets a position after P.
//   - Logical mode: the snapshot is a temporary slot's exported snapshot,
//     which holds exactly the transactions whose commit is before the
//     slot's consistent point; P is the last one of them in the spool,
//     known once the stream has gone past that point (see
//     capture/logical_snapshot.go).
//
// Restoring the backup therefore gives the master's state at P exactly,
// and applying the spool after P replays every later transaction once and
// no earlier one. That matters beyond keyed tables: a table without a
// primary key (capture.allow_no_pk) has no upsert to absorb a change
// applied twice, and would gain rows. The manifest records P and the
// capture history (epoch) P belongs to; restore gives the slave both, and
// the slave applies only changes of that history (see package apply), so a
// backup from before capture was installed again on the master can never
// be continued by changes that skip what happened in between.
//
// Sequences are not transactional: values read in the snapshot are
// current values, at or above anything a visible transaction drew.
// Restore sets exactly those values; apply's setval never moves a
// sequence backwards. A TRUNCATE that commits between the snapshot and
// the COPY of its table is not MVCC-safe and empties the table in the
// backup; the TRUNCATE itself is at a position > P, so replay converges
// all the same. The tables are locked in ACCESS SHARE mode once listed,
// so DDL waits for the backup rather than break it.
//
// The master keeps its spool from P for spool.backup_pin after the
// snapshot, and serves a slave at or after P whatever its backlog while
// the pin holds: on a busy master the backlog that builds up during a long
// restore can exceed spool.max_backlog, and the restored slave must not be
// refused for it.
//
// # File format (version 1)
//
// All integers are big-endian. CRC32C is Castagnoli.
//
//	file   = header frame* final EOF
//	header = "SSYNCBAK" version:u32 crc32c(magic, version):u32      (16 bytes)
//	frame  = type:u8 flags:u8(0) payload_len:u32 raw_len:u32
//	         payload_crc32c:u32 header_crc32c(the 14 bytes before):u32 payload
//
// Frame types, in the order they appear:
//
//   - 'B' table begin: JSON {schema, name, columns: [{name, type}], format},
//     type as format_type prints it with search_path = pg_catalog;
//     format "binary", or "text" for a table with a column whose binary
//     form holds OIDs (reg* types, arrays or composites of user-defined
//     types), which differ between databases.
//   - 'D' data: one zstd frame of at most 1 MiB of the table's raw
//     `COPY (columns) TO STDOUT (FORMAT binary|text)` stream; raw_len is
//     its decompressed size (at most 4 MiB accepted). Each chunk is
//     compressed on its own, so they are compressed and decompressed in
//     parallel.
//   - 'E' table end: JSON {rows, raw_bytes, sha256} of the raw stream.
//   - 'M' manifest: JSON Manifest: format version, source (system
//     identifier, database, server version, encoding), capture mode,
//     position, capture epoch, snapshot time, every table with its columns, format, rows,
//     bytes and SHA-256, the sequences (last_value, is_called), totals.
//     It comes last because only then are counts and checksums known; the
//     file is written as a stream, with flat memory, to a file or a pipe.
//   - 'Z' end marker, empty. Nothing may follow it.
//
// Each table is begin, data*, end, in manifest order. Readers check the
// header CRC before they trust a length, bound every length (JSON frames
// 64 MiB), check every payload CRC, decompress with a bounded output,
// recount the rows by following the COPY structure, recompute every
// SHA-256, compare the manifest with the frames, and require the end
// marker and then the end of the file: a truncated file is an error naming
// the byte offset where it ends.
//
// # Restore
//
// Restore verifies the whole file first (pass 1) and refuses a backup
// without a capture epoch (written before epochs existed), checks that
// every table exists on the slave with every column of the same type and
// that every sequence exists, then sets needs_resync (committed), and
// loads in one transaction with session_replication_role = replica: one
// TRUNCATE of all the tables, COPY FROM (with FREEZE, allowed since the
// tables were truncated in the same transaction, so the slave needs no
// VACUUM pass over the new rows) while checking the file again (pass 2),
// setval of every sequence to the backup's value, applied_position = P,
// the capture epoch and needs_resync = false, COMMIT. Tables of 100,000
// rows or more have their indexes dropped before their COPY and built
// again after it, in the same transaction, when nothing depends on them
// (see indexes.go): one sorted build instead of an insert per row. Killed
// midway, the transaction rolls back and needs_resync stays set, so apply
// refuses to run until a restore completes.
package backup
