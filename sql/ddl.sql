-- Schema change capture on a master, in either capture mode (ddl.replicate).
-- Idempotent: install runs it every time; the event triggers themselves are
-- created by install (they need a superuser).
--
-- An event trigger at the end of every DDL command records the commands
-- that touch objects in the replicated schemas: the client's query text,
-- the command tag and which command of that tag in the text it is (the
-- slave finds that statement in the text: package internal/ddl), the
-- search_path and the role that owns the changed object. In trigger mode
-- the record is an audit row (op 'L'), in logical mode a transactional
-- logical decoding message; either way it travels at its exact place
-- among the transaction's row changes.
--
-- Trigger mode decodes audit rows by the shape of their table when they
-- were written, which a DDL may change (columns added, dropped, renamed):
-- relshape keeps every shape with the audit id from which it holds.
--
-- Tables created in (or changed to fit) the replicated schemas join
-- capture in the same transaction: capture triggers, or the publication.

CREATE TABLE IF NOT EXISTS schedsync.ddl_config (
    id          int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    mode        text    NOT NULL,
    schemas     text[]  NOT NULL,
    -- repository.tables as POSIX regular expressions: on the table name,
    -- or on schema.name (qualified); both empty: every table.
    names       text[]  NOT NULL DEFAULT '{}',
    qualified   text[]  NOT NULL DEFAULT '{}',
    allow_no_pk boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS schedsync.relshape (
    relid   oid    NOT NULL,
    from_id bigint NOT NULL,
    shape   jsonb  NOT NULL,
    PRIMARY KEY (relid, from_id)
);

-- Logical mode: every recorded schema change takes the next number. The
-- reader samples sequences from the catalog, which may already hold a
-- sequence whose CREATE it has not decoded yet; it samples only when it
-- has decoded every schema change committed (ddl_seen: the last one the
-- spool holds durably, for restarts).
CREATE TABLE IF NOT EXISTS schedsync.ddl_counter (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    n  bigint NOT NULL DEFAULT 0
);
INSERT INTO schedsync.ddl_counter (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
ALTER TABLE schedsync.capture_state ADD COLUMN IF NOT EXISTS ddl_seen bigint NOT NULL DEFAULT 0;

-- Tables that could not join capture by themselves, for status and the log.
CREATE TABLE IF NOT EXISTS schedsync.ddl_warnings (
    at      timestamptz NOT NULL DEFAULT now(),
    message text        NOT NULL
);

-- The shape of a table: its live columns in attnum order (the fields of a
-- record literal), which are generated, which form the primary key.
CREATE OR REPLACE FUNCTION schedsync.table_shape(rel oid) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('schema', n.nspname, 'name', c.relname, 'attrs', coalesce((
        SELECT jsonb_agg(jsonb_build_object('n', a.attname, 'g', a.attgenerated <> '',
                         'k', coalesce(a.attnum = ANY (i.indkey::int2[]), false)) ORDER BY a.attnum)
        FROM pg_attribute a
        LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::jsonb))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel
$$;

-- Whether a table passes repository.tables.
CREATE OR REPLACE FUNCTION schedsync.table_matches(cfg schedsync.ddl_config, sch text, nm text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (cardinality(cfg.names) = 0 AND cardinality(cfg.qualified) = 0)
        OR nm ~ ANY (cfg.names) OR (sch || '.' || nm) ~ ANY (cfg.qualified)
$$;

-- The owner of a catalog object, for the roles apply runs DDL as.
CREATE OR REPLACE FUNCTION schedsync.owner_of(classid oid, objid oid) RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rolname FROM pg_roles r WHERE r.oid = CASE classid
        WHEN 'pg_class'::regclass THEN (SELECT relowner FROM pg_class WHERE oid = objid)
        WHEN 'pg_proc'::regclass THEN (SELECT proowner FROM pg_proc WHERE oid = objid)
        WHEN 'pg_type'::regclass THEN (SELECT typowner FROM pg_type WHERE oid = objid)
        WHEN 'pg_namespace'::regclass THEN (SELECT nspowner FROM pg_namespace WHERE oid = objid)
        WHEN 'pg_trigger'::regclass THEN (SELECT c.relowner FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.oid = objid)
        WHEN 'pg_constraint'::regclass THEN (SELECT c.relowner FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE k.oid = objid)
        WHEN 'pg_attrdef'::regclass THEN (SELECT c.relowner FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid WHERE d.oid = objid)
    END
$$;

-- The table a pg_class object belongs to: itself, or an index's table; NULL
-- for other kinds (sequences, views), which are not filtered by
-- repository.tables.
CREATE OR REPLACE FUNCTION schedsync.table_of(rel oid) RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE c.relkind WHEN 'r' THEN c.oid WHEN 'p' THEN c.oid
        WHEN 'i' THEN (SELECT indrelid FROM pg_index WHERE indexrelid = c.oid)
        WHEN 'I' THEN (SELECT indrelid FROM pg_index WHERE indexrelid = c.oid) END
    FROM pg_class c WHERE c.oid = rel
$$;

-- Names one client statement (its text and start) of the current
-- transaction: the commands it runs are counted under it, and a DROP's
-- sql_drop is paired with its ddl_command_end.
CREATE OR REPLACE FUNCTION schedsync.statement_key() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(current_query()) || ':' || statement_timestamp()::text
$$;

-- The table an object without a schema of its own belongs to (a trigger,
-- a rule, a policy): its schema and the table filter are the table's.
CREATE OR REPLACE FUNCTION schedsync.table_of_object(classid oid, objid oid) RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE classid
        WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = objid)
        WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = objid)
        WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = objid)
    END
$$;

-- A table created in, or changed to fit, the replicated schemas joins
-- capture, as install would have done: capture triggers (and the rows it
-- holds already, as inserts), or the publication. A table without a
-- primary key follows capture.allow_no_pk; one refused is reported in
-- ddl_warnings and as a WARNING, never skipped silently.
CREATE OR REPLACE FUNCTION schedsync.join_capture(cfg schedsync.ddl_config, rel oid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sch text;
    nm text;
    kind "char";
    persistence "char";
    qn text;
    has_pk boolean;
    msg text;
BEGIN
    SELECT n.nspname, c.relname, c.relkind, c.relpersistence INTO sch, nm, kind, persistence
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    -- Partitioned parents hold no rows: their partitions are captured.
    IF NOT FOUND OR kind <> 'r' OR NOT schedsync.table_matches(cfg, sch, nm) THEN
        RETURN;
    END IF;
    qn := quote_ident(sch) || '.' || quote_ident(nm);
    IF cfg.mode = 'trigger' THEN
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND tgname = 'schedsync_capture_row') THEN
            RETURN;
        END IF;
    ELSIF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                  WHERE p.pubname = 'schedsync' AND pr.prrelid = rel) THEN
        RETURN;
    END IF;
    has_pk := EXISTS (SELECT 1 FROM pg_index WHERE indrelid = rel AND indisprimary);
    IF NOT has_pk AND NOT cfg.allow_no_pk THEN
        msg := format('table %s has no primary key and is not replicated: add a primary key (it then joins by itself), or set capture.allow_no_pk = true and run schedsync install', qn);
    ELSIF cfg.mode = 'logical' AND persistence = 'u' THEN
        msg := format('table %s is unlogged and is not replicated: logical decoding cannot see its changes', qn);
    END IF;
    IF msg IS NOT NULL THEN
        INSERT INTO schedsync.ddl_warnings (message) VALUES (msg);
        RAISE WARNING 'schedsync: %', msg;
        RETURN;
    END IF;
    PERFORM set_config('schedsync.in_ddl', 'on', true);
    IF cfg.mode = 'trigger' THEN
        EXECUTE format('CREATE TRIGGER schedsync_capture_row AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION schedsync.capture_row()', qn);
        EXECUTE format('CREATE TRIGGER schedsync_capture_statement AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION schedsync.capture_statement()', qn);
        -- Rows written before the table joined (created without a key,
        -- which came later) go to the slave as inserts.
        EXECUTE format('INSERT INTO schedsync.audit (relid, op, new_row) SELECT %s, ''I'', t::text FROM %s t', rel, qn);
    ELSE
        IF NOT has_pk THEN
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', qn);
        END IF;
        EXECUTE format('ALTER PUBLICATION schedsync ADD TABLE %s', qn);
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', qn) INTO has_pk;
        IF has_pk THEN
            msg := format('table %s joined replication holding rows written before: logical decoding does not send those; re-seed the slave (schedsync resync --force) to copy them', qn);
            INSERT INTO schedsync.ddl_warnings (message) VALUES (msg);
            RAISE WARNING 'schedsync: %', msg;
        END IF;
    END IF;
    PERFORM set_config('schedsync.in_ddl', 'off', true);
END
$$;

-- sql_drop: notes that the command being run dropped something in the
-- replicated schemas (ddl_command_end, which records it, sees no object
-- of a DROP).
CREATE OR REPLACE FUNCTION schedsync.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    saved text := pg_catalog.current_setting('search_path');
    cfg schedsync.ddl_config;
    sch text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF current_setting('schedsync.in_ddl', true) IS DISTINCT FROM 'on' THEN
        SELECT * INTO cfg FROM schedsync.ddl_config WHERE id = 1;
        IF FOUND THEN
            SELECT o.schema_name INTO sch FROM pg_event_trigger_dropped_objects() o
            WHERE o.schema_name = ANY (cfg.schemas) AND o.schema_name <> 'schedsync' AND NOT o.is_temporary
              AND (o.object_type <> 'table' OR schedsync.table_matches(cfg, o.schema_name, o.object_name))
            LIMIT 1;
            IF FOUND THEN
                PERFORM set_config('schedsync.ddl_dropped', schedsync.statement_key(), true);
                PERFORM set_config('schedsync.ddl_dropped_schema', sch, true);
            END IF;
        END IF;
    END IF;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$$;

-- ddl_command_end: records the command, and lets new tables join capture.
CREATE OR REPLACE FUNCTION schedsync.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    -- The caller's search_path, recorded; everything below runs with a
    -- safe one, restored at the end.
    saved text := pg_catalog.current_setting('search_path');
    cfg schedsync.ddl_config;
    cmd record;
    key text;
    counts jsonb;
    nth int;
    hit boolean;
    obj_schema text;
    obj_name text;
    sch text;
    owner name;
    tbl oid;
    tables oid[] := '{}';
    aid bigint;
    seq bigint;
    payload jsonb;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF current_setting('schedsync.in_ddl', true) = 'on' THEN
        PERFORM set_config('search_path', saved, true);
        RETURN;
    END IF;
    SELECT * INTO cfg FROM schedsync.ddl_config WHERE id = 1;
    IF NOT FOUND THEN
        PERFORM set_config('search_path', saved, true);
        RETURN;
    END IF;
    -- Count the commands of each tag that this query text ran: the slave
    -- finds the statement by tag and number.
    key := schedsync.statement_key();
    IF current_setting('schedsync.ddl_key', true) IS DISTINCT FROM key THEN
        PERFORM set_config('schedsync.ddl_key', key, true);
        counts := '{}';
    ELSE
        counts := coalesce(nullif(current_setting('schedsync.ddl_counts', true), ''), '{}')::jsonb;
    END IF;
    nth := coalesce((counts ->> tg_tag)::int, 0) + 1;
    PERFORM set_config('schedsync.ddl_counts', jsonb_set(counts, ARRAY[tg_tag], to_jsonb(nth))::text, true);

    hit := current_setting('schedsync.ddl_dropped', true) = key;
    IF hit THEN
        obj_schema := current_setting('schedsync.ddl_dropped_schema', true);
        PERFORM set_config('schedsync.ddl_dropped', '', true);
    END IF;
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        CONTINUE WHEN cmd.in_extension;
        tbl := NULL;
        sch := cmd.schema_name;
        IF cmd.classid = 'pg_class'::regclass THEN
            tbl := schedsync.table_of(cmd.objid);
        ELSIF sch IS NULL THEN
            -- A trigger, rule or policy: the table's.
            tbl := schedsync.table_of_object(cmd.classid, cmd.objid);
            sch := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl);
        END IF;
        CONTINUE WHEN sch IS NULL OR sch = 'schedsync' OR NOT (sch = ANY (cfg.schemas));
        CONTINUE WHEN tbl IS NOT NULL AND NOT schedsync.table_matches(cfg, sch, (SELECT relname FROM pg_class WHERE oid = tbl));
        hit := true;
        IF obj_name IS NULL THEN
            obj_schema := sch;
            obj_name := cmd.object_identity;
            owner := schedsync.owner_of(cmd.classid, cmd.objid);
        END IF;
        IF tbl IS NOT NULL AND NOT tbl = ANY (tables) THEN
            tables := tables || tbl;
        END IF;
    END LOOP;
    IF NOT hit THEN
        PERFORM set_config('search_path', saved, true);
        RETURN;
    END IF;
    payload := jsonb_build_object('query', current_query(), 'tag', tg_tag, 'nth', nth, 'search_path', saved,
        'role', coalesce(owner, session_user), 'schema', coalesce(obj_schema, ''), 'object', coalesce(obj_name, tg_tag));
    IF cfg.mode = 'trigger' THEN
        INSERT INTO schedsync.audit (relid, op, new_row) VALUES (0, 'L', payload::text) RETURNING id INTO aid;
        FOREACH tbl IN ARRAY tables LOOP
            INSERT INTO schedsync.relshape (relid, from_id, shape)
            SELECT tbl, aid, schedsync.table_shape(tbl) WHERE schedsync.table_shape(tbl) IS NOT NULL;
        END LOOP;
        PERFORM pg_notify('schedsync_capture', '');
    ELSE
        UPDATE schedsync.ddl_counter c SET n = c.n + 1 WHERE c.id = 1 RETURNING c.n INTO seq;
        PERFORM pg_logical_emit_message(true, 'schedsync.ddl', (payload || jsonb_build_object('seq', seq))::text);
    END IF;
    FOREACH tbl IN ARRAY tables LOOP
        PERFORM schedsync.join_capture(cfg, tbl);
    END LOOP;
    PERFORM set_config('search_path', saved, true);
END
$$;
