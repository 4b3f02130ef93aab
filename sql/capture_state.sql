-- Capture state on a master, in either capture mode. Idempotent.
--
-- epoch names the capture history: install draws it at random when it
-- creates this row, so uninstall + install (or a switch of modes) starts a
-- new history. Every captured transaction carries it into the spool, every
-- backup records it, and a slave applies only changes of the history its
-- data comes from: changes made while nothing captured are in no history.
--
-- position is a spool position P such that every captured transaction at a
-- position <= P is committed and visible to any snapshot that sees this
-- row; the readers bound their crash recovery with it, and raise it to the
-- spool's last position when they connect (after uninstall + install it
-- starts at 0 while the spool goes on). Backups do not read it: they take
-- an exact position from capture itself.
--
-- Trigger mode: the position of the last batch whose audit rows were
-- deleted. At start the reader deletes the audit rows of the transactions
-- the spool holds after it: they were made durable just before a crash.
--
-- Logical mode: written about once a second, and after every snapshot
-- request, by the reader, which only counts transactions that its own
-- snapshot sees committed. lsn is the commit LSN of the last transaction
-- at or before position: after a restart the slot may send again
-- transactions the spool holds, and the reader skips those at or before
-- the last LSN it spooled.
CREATE TABLE IF NOT EXISTS schedsync.capture_state (
    id         int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    position   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE schedsync.capture_state ADD COLUMN IF NOT EXISTS lsn bigint NOT NULL DEFAULT 0;
INSERT INTO schedsync.capture_state (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
ALTER TABLE schedsync.capture_state ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;

-- A promoted master's capture history forks from its old master's: the
-- new history (epoch) continues the parent one after fork_position, the
-- last position the promoted node had applied. A slave whose data is of
-- parent_epoch and ends exactly at fork_position (the old master after a
-- switchover) streams on without a re-seed.
ALTER TABLE schedsync.capture_state ADD COLUMN IF NOT EXISTS parent_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE schedsync.capture_state ADD COLUMN IF NOT EXISTS fork_position bigint NOT NULL DEFAULT 0;
