-- Objects every schedsync node has, master or slave. Idempotent.
CREATE SCHEMA IF NOT EXISTS schedsync;

CREATE TABLE IF NOT EXISTS schedsync.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The slave's apply position. It is written in the same transaction as the
-- rows it covers, so after any crash apply resumes exactly there.
CREATE TABLE IF NOT EXISTS schedsync.state (
    id               int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    applied_position bigint NOT NULL DEFAULT 0,
    master_identity  text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schedsync.state (id) VALUES (1) ON CONFLICT (id) DO NOTHING;

-- Set by restore before it loads data and cleared in the transaction that
-- finishes the load: an interrupted restore leaves the slave marked, and
-- apply refuses to run on it, so it is never taken for consistent.
ALTER TABLE schedsync.state ADD COLUMN IF NOT EXISTS needs_resync boolean NOT NULL DEFAULT false;

-- The capture history (the master's capture epoch) of the slave's data:
-- set by restore from the backup, or taken from the first change applied
-- by a slave that started empty. Apply refuses changes of another history.
ALTER TABLE schedsync.state ADD COLUMN IF NOT EXISTS capture_epoch bigint NOT NULL DEFAULT 0;

-- Apply records the applied position with this, in the transaction of the
-- rows it covers, and only if the slave is still where the group began:
-- an apply session whose client died after sending COMMIT can still be
-- committing while the next session starts from the position it read
-- before that commit. The next session's call waits for the row lock, sees
-- the position moved and raises SA001, and its transaction rolls back
-- instead of committing the same changes twice. An error, not a row count:
-- COMMIT travels in the same pipeline and must find the transaction
-- aborted.
CREATE OR REPLACE FUNCTION schedsync.set_applied(prev bigint, pos bigint, epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE schedsync.state SET applied_position = pos, capture_epoch = epoch, updated_at = now()
    WHERE id = 1 AND applied_position = prev;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the applied position is no longer %: another apply session committed meanwhile', prev
            USING ERRCODE = 'SA001';
    END IF;
END
$$;

-- The node's generation (docs/DESIGN.md, Failover): the first master's is
-- 1, and each promotion makes the promoted node's one higher than any it
-- has seen. Kept here and in spool.dir/node.json; the higher counts.
ALTER TABLE schedsync.state ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0;
