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
