-- Trigger capture on a master. Idempotent.
--
-- Every row change of a replicated table becomes one audit row holding the
-- table's oid, the op and the old and/or new row as a record literal
-- (OLD::text, NEW::text). A record literal is made of each column's output
-- function, which the input function on the slave turns back into exactly
-- the same value for every type. capture_row pins the output settings
-- (change.TextSettings, which package sql renders into it) so that a
-- client's DateStyle or extra_float_digits cannot change the text.

-- The id is drawn from a sequence with CACHE 1 (the identity default), so ids
-- grow in the order the trigger ran, across sessions. The reader relies on
-- it: see the package doc of capture.
CREATE TABLE IF NOT EXISTS schedsync.audit (
    txid    xid8        NOT NULL DEFAULT pg_current_xact_id(),
    id      bigint      GENERATED ALWAYS AS IDENTITY,
    relid   oid         NOT NULL,
    op      "char"      NOT NULL,
    old_row text,
    new_row text,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (txid, id)
);

-- SECURITY DEFINER: the scheduler's own role needs no grant on schema
-- schedsync to write its tables. search_path is pinned for safety and so
-- that regclass-like values print fully qualified.
CREATE OR REPLACE FUNCTION schedsync.capture_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
{{TEXT_SETTINGS}}
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO schedsync.audit (relid, op, new_row) VALUES (TG_RELID, 'I', NEW::text);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO schedsync.audit (relid, op, old_row, new_row) VALUES (TG_RELID, 'U', OLD::text, NEW::text);
    ELSE
        INSERT INTO schedsync.audit (relid, op, old_row) VALUES (TG_RELID, 'D', OLD::text);
    END IF;
    RETURN NULL;
END
$$;

-- Statement level: records TRUNCATE and wakes the reader once per statement
-- (NOTIFY is delivered at commit, so the reader never wakes too early).
CREATE OR REPLACE FUNCTION schedsync.capture_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO schedsync.audit (relid, op) VALUES (TG_RELID, 'T');
    END IF;
    PERFORM pg_notify('schedsync_capture', '');
    RETURN NULL;
END
$$;
