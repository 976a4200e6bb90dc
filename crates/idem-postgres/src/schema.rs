//! idem's PostgreSQL schema: tables and the fence sequence as numbered
//! steps ([`MIGRATIONS`]), and one PL/pgSQL function per primitive
//! ([`ROUTINES`], re-applied on every upgrade), installed by [`super::migrate`].
//!
//! Layout (every name starts with `idem_`; docs/backends-sql.md has the full reference):
//! - `idem_schema_version(id = 1, version)`: the last step applied;
//! - `idem_fence_seq`: the one sequence every fence is drawn from;
//! - one table per primitive, keys and values `bytea` (binary-safe);
//! - times are `bigint` milliseconds since the Unix epoch on the DATABASE
//!   clock (`clock_timestamp()`, the real time at the statement, not the start
//!   of the transaction), read only inside these functions: `idem_now_ms()`.
//!
//! Every function is one statement for the caller (`SELECT * FROM idem_x(...)`),
//! atomic on its own under READ COMMITTED, and usable inside the caller's own
//! transaction: its writes commit or roll back with the caller's rows. Reads
//! that decide something lock the row they read (`FOR UPDATE`, `ON CONFLICT`),
//! so a concurrent caller waits for the winner and then sees it.
//!
//! Conventions inside the functions:
//! - `#variable_conflict use_column`: unqualified names are columns, since the
//!   OUT columns (`status`, `fence`, ...) share names with table columns.
//! - A row that may be absent is read with `SELECT ... FOR UPDATE`; if absent,
//!   it is inserted `ON CONFLICT DO NOTHING` and the loop reads it again, so two
//!   callers racing on a new key serialise on the unique index. Loops are
//!   bounded (8 turns); running out raises SQLSTATE 40001, which callers retry.
//! - A lock's fence is drawn (`nextval`) only while its row is locked; a
//!   record's only while its key's fence lock (`idem_key_lock`) is held, so
//!   every fence of a key is larger than every earlier fence of that key.
//! - `waiting` flags rows that a parked WAIT caller is watching; the statement
//!   that ends such an attempt or lock sends `NOTIFY idem_wake` only then, so
//!   uncontended commits never pay for NOTIFY's commit-time lock.

/// The schema version this build writes and expects.
pub(crate) const SCHEMA_VERSION: i32 = 6;

/// Migration steps: `(version, SQL)` for tables, indexes and the sequence.
/// [`super::migrate`] applies the pending ones, then [`ROUTINES`], then
/// records the version, all in one transaction (PostgreSQL's DDL is
/// transactional, so a failed upgrade changes nothing).
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)];

/// Step 1: tables and the fence sequence.
const V1: &str = r#"
CREATE SEQUENCE IF NOT EXISTS idem_fence_seq AS bigint START 1 NO CYCLE;

-- Idempotency records. state 'running': expires_at_ms is the lease end;
-- state 'done': the end of retention (KEEP). A running record whose lease ran
-- out is remembered (for its attempt number) for a grace period
-- (idem_core::limits::RUNNING_RETAIN_MS) after its lease end, then forgotten.
CREATE TABLE IF NOT EXISTS idem_records (
    key            bytea   PRIMARY KEY,
    fingerprint    bytea,
    state          text    NOT NULL CHECK (state IN ('running', 'done')),
    fence          bigint  NOT NULL,
    attempt        integer NOT NULL,
    expires_at_ms  bigint  NOT NULL,
    result         bytea,
    waiting        boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS idem_records_done_exp ON idem_records (expires_at_ms) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS idem_records_running_exp ON idem_records (expires_at_ms) WHERE state = 'running';

-- Unique claims. expires_at_ms NULL: until released.
CREATE TABLE IF NOT EXISTS idem_claims (
    key            bytea  PRIMARY KEY,
    owner          bytea  NOT NULL,
    expires_at_ms  bigint
);
CREATE INDEX IF NOT EXISTS idem_claims_exp ON idem_claims (expires_at_ms) WHERE expires_at_ms IS NOT NULL;

-- Leases (locks) with fencing.
CREATE TABLE IF NOT EXISTS idem_locks (
    name           bytea   PRIMARY KEY,
    owner          bytea   NOT NULL,
    fence          bigint  NOT NULL,
    expires_at_ms  bigint  NOT NULL,
    waiting        boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS idem_locks_exp ON idem_locks (expires_at_ms);

-- One-time tokens.
CREATE TABLE IF NOT EXISTS idem_tokens (
    scope          bytea  NOT NULL,
    token          bytea  NOT NULL,
    expires_at_ms  bigint NOT NULL,
    PRIMARY KEY (scope, token)
);
CREATE INDEX IF NOT EXISTS idem_tokens_exp ON idem_tokens (expires_at_ms);

-- Bounded counters and the op ids applied to them (OP ... KEEP).
CREATE TABLE IF NOT EXISTS idem_counters (
    key    bytea  PRIMARY KEY,
    value  bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS idem_counter_ops (
    key            bytea  NOT NULL,
    op             bytea  NOT NULL,
    value          bigint NOT NULL,
    expires_at_ms  bigint NOT NULL,
    PRIMARY KEY (key, op)
);
CREATE INDEX IF NOT EXISTS idem_counter_ops_exp ON idem_counter_ops (expires_at_ms);

-- Versioned values.
CREATE TABLE IF NOT EXISTS idem_values (
    key      bytea  PRIMARY KEY,
    value    bytea  NOT NULL,
    version  bigint NOT NULL
);

-- State machines.
CREATE TABLE IF NOT EXISTS idem_fsm (
    key    bytea PRIMARY KEY,
    state  bytea NOT NULL
);

-- Slot reservations: one row per resource (its SIZE; the row every
-- reservation of the resource locks) and one row per held slot.
CREATE TABLE IF NOT EXISTS idem_slot_resources (
    resource  bytea   PRIMARY KEY,
    size      integer NOT NULL
);
CREATE TABLE IF NOT EXISTS idem_slots (
    resource  bytea   NOT NULL,
    slot      integer NOT NULL,
    holder    bytea   NOT NULL,
    PRIMARY KEY (resource, slot)
);

"#;

/// Step 2: no table change; the functions read the clock after their row
/// locks, so that a wait for a lock does not age the time they compare with.
/// Also drops `idem_cleanup(integer, bigint)`: databases migrated by an
/// early build of step 1 may hold that signature, and `CREATE OR REPLACE`
/// with the current one would leave it beside it as a stale overload.
const V2: &str = r#"
DROP FUNCTION IF EXISTS idem_cleanup(integer, bigint);
"#;

/// Step 3: no table change; the routines gain `idem_record_renew`
/// (IDEM.RENEW), which an upgrade installs with the rest of [`ROUTINES`].
const V3: &str = "";

/// Step 4: no table change; `idem_begin` takes the key's fence lock
/// (`idem_key_lock`) before it reads the record, as the backend's one-statement
/// IDEM.BEGIN does, which an upgrade installs with the rest of [`ROUTINES`].
const V4: &str = "";

/// Step 5: no table change; `idem_now_ms()` reads a test clock when the
/// session sets one (`idem.test_now_ms`), and a takeover keeps the record's
/// fingerprint (none stays none), which an upgrade installs with the rest
/// of [`ROUTINES`].
const V5: &str = "";

/// Step 6: `idem_records` loses its B-tree on the running records' lease
/// end (`idem_records_running_exp`), which every fresh IDEM.BEGIN paid an
/// index insert (and its WAL) for, only so that cleanup could find records
/// abandoned for the grace period (`RUNNING_RETAIN_MS`). Those are rare,
/// and already forgotten by every function that reads them, so cleanup now
/// finds them by a sweep in key order, a bounded batch of keys per call,
/// resumed where the last call stopped (`idem_cleanup_cursor`). Finished
/// records keep their index (`idem_records_done_exp`): every COMMIT makes
/// one, and retention ends them in bulk.
const V6: &str = r#"
DROP INDEX IF EXISTS idem_records_running_exp;
CREATE TABLE IF NOT EXISTS idem_cleanup_cursor (
    id             integer PRIMARY KEY CHECK (id = 1),
    running_after  bytea
);
INSERT INTO idem_cleanup_cursor (id, running_after) VALUES (1, NULL) ON CONFLICT (id) DO NOTHING;
"#;

/// Every function, as `CREATE OR REPLACE`: re-applied whenever the version
/// moves, so a changed function only needs a new (possibly empty) step.
/// The class of the keys' fence locks ('idem' in ASCII), the first argument
/// of every advisory lock on a key: `idem_key_lock` here, and the backend's
/// insert-first IDEM.BEGIN, which only tries it.
macro_rules! key_lock_class {
    () => {
        "1768187245"
    };
}
pub(crate) use key_lock_class;

/// [`ROUTINES`] with every constant filled in, as installed.
pub(crate) fn routines() -> String {
    idem_core::limits::with_engine_constants(ROUTINES).replace("@KEY_LOCK_CLASS@", key_lock_class!())
}

pub(crate) const ROUTINES: &str = r#"
-- The database clock in ms since the epoch: real time at the call, even
-- inside a long transaction (now() would be the transaction's start).
-- A session that set idem.test_now_ms reads that instead: the test clock
-- of docs/backends.md, set only by a test build of idem, and only for its
-- own sessions. Unset (every other session), current_setting(.., true) is
-- NULL: a lookup of a session setting, no table read.
CREATE OR REPLACE FUNCTION idem_now_ms() RETURNS bigint
LANGUAGE sql VOLATILE AS $fn$
    SELECT COALESCE(NULLIF(current_setting('idem.test_now_ms', true), '')::bigint,
                    floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
$fn$;

-- The fence lock of an idempotency key: a transaction-scoped advisory lock
-- that every path drawing a fence for the key takes first, before any row
-- lock (so lock order is always this, then the row). Two drawers of one key
-- therefore draw and commit in turn, and a fence drawn before the record
-- exists (the backend's one-statement BEGIN draws it in the INSERT itself)
-- can never be smaller than one drawn and committed for the key meanwhile,
-- even if that record was deleted again, or its grant rolled back. It needs
-- no transaction id and writes no WAL; it holds a lock-table slot until the
-- transaction ends (a transaction that begins many keys may need a larger
-- max_locks_per_transaction). Distinct keys may share a lock (a 32-bit
-- hash): that only makes them wait for each other. The first argument,
-- 'idem' in ASCII, keeps these locks apart from an application's own.
CREATE OR REPLACE FUNCTION idem_key_lock(p_key bytea) RETURNS void
LANGUAGE sql VOLATILE AS $fn$
    SELECT pg_advisory_xact_lock(@KEY_LOCK_CLASS@, hashtext(encode(p_key, 'hex')))
$fn$;

-- IDEM.BEGIN. status: 'started' (fence, n = attempt), 'running' (fence,
-- n = left_ms), 'done' (result) or 'mismatch'. p_wait marks the record as
-- watched so that its end sends NOTIFY.
CREATE OR REPLACE FUNCTION idem_begin(p_key bytea, p_fp bytea, p_lease_ms bigint, p_wait boolean DEFAULT false)
RETURNS TABLE (status text, fence bigint, n bigint, result bytea)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    r        idem_records%ROWTYPE;
    v_now    bigint;
    v_fence  bigint;
BEGIN
    PERFORM idem_key_lock(p_key);
    FOR i IN 1..8 LOOP
        SELECT * INTO r FROM idem_records WHERE key = p_key FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO idem_records (key, fingerprint, state, fence, attempt, expires_at_ms)
            VALUES (p_key, p_fp, 'running', 0, 1, 0)
            ON CONFLICT (key) DO NOTHING;
            IF NOT FOUND THEN
                CONTINUE;  -- someone else inserted it: read and lock theirs
            END IF;
            v_fence := nextval('idem_fence_seq');
            UPDATE idem_records SET fence = v_fence, expires_at_ms = idem_now_ms() + p_lease_ms
            WHERE key = p_key;
            RETURN QUERY SELECT 'started'::text, v_fence, 1::bigint, NULL::bytea;
            RETURN;
        END IF;
        v_now := idem_now_ms();
        IF (r.state = 'done' AND r.expires_at_ms <= v_now)
           OR (r.state = 'running' AND r.expires_at_ms + @RUNNING_RETAIN_MS@ <= v_now) THEN
            -- The record is forgotten (retention or grace over): the key is
            -- new again, attempt 1 with this caller's fingerprint.
            v_fence := nextval('idem_fence_seq');
            UPDATE idem_records
            SET fingerprint = p_fp, state = 'running', fence = v_fence, attempt = 1,
                expires_at_ms = v_now + p_lease_ms, result = NULL
            WHERE key = p_key;
            RETURN QUERY SELECT 'started'::text, v_fence, 1::bigint, NULL::bytea;
            RETURN;
        END IF;
        IF p_fp IS NOT NULL AND r.fingerprint IS NOT NULL AND r.fingerprint <> p_fp THEN
            RETURN QUERY SELECT 'mismatch'::text, NULL::bigint, NULL::bigint, NULL::bytea;
            RETURN;
        END IF;
        IF r.state = 'done' THEN
            RETURN QUERY SELECT 'done'::text, NULL::bigint, NULL::bigint, r.result;
            RETURN;
        END IF;
        IF r.expires_at_ms > v_now THEN
            IF p_wait AND NOT r.waiting THEN
                UPDATE idem_records SET waiting = true WHERE key = p_key;
            END IF;
            RETURN QUERY SELECT 'running'::text, r.fence, r.expires_at_ms - v_now, NULL::bytea;
            RETURN;
        END IF;
        -- The lease ran out: take over with a new, larger fence and the next
        -- attempt. The record keeps the fingerprint of the BEGIN that created
        -- it, also none (docs/commands.md), as the core Machine does.
        v_fence := nextval('idem_fence_seq');
        UPDATE idem_records
        SET fence = v_fence, attempt = r.attempt + 1, expires_at_ms = v_now + p_lease_ms
        WHERE key = p_key;
        RETURN QUERY SELECT 'started'::text, v_fence, (r.attempt + 1)::bigint, NULL::bytea;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'idem_begin: key changed too often while being read' USING ERRCODE = '40001';
END
$fn$;

-- IDEM.COMMIT: 'ok' or 'stale'. Only the fence of a live lease commits: once
-- the lease ran out, the key is available again (inside a transaction, pick a
-- LEASE longer than the transaction).
CREATE OR REPLACE FUNCTION idem_commit(p_key bytea, p_fence bigint, p_result bytea, p_keep_ms bigint)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_waiting boolean;
BEGIN
    UPDATE idem_records
    SET state = 'done', result = p_result, expires_at_ms = idem_now_ms() + p_keep_ms
    WHERE key = p_key AND state = 'running' AND fence = p_fence AND expires_at_ms > idem_now_ms()
    RETURNING waiting INTO v_waiting;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    IF v_waiting THEN
        PERFORM pg_notify('idem_wake', 'i' || encode(p_key, 'hex'));
    END IF;
    RETURN 'ok';
END
$fn$;

-- IDEM.ABORT: 'ok' (the record is removed) or 'stale' (as COMMIT).
CREATE OR REPLACE FUNCTION idem_abort(p_key bytea, p_fence bigint)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_waiting boolean;
BEGIN
    DELETE FROM idem_records
    WHERE key = p_key AND state = 'running' AND fence = p_fence AND expires_at_ms > idem_now_ms()
    RETURNING waiting INTO v_waiting;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    IF v_waiting THEN
        PERFORM pg_notify('idem_wake', 'i' || encode(p_key, 'hex'));
    END IF;
    RETURN 'ok';
END
$fn$;

-- IDEM.RENEW: 'renewed' (the lease is now p_lease_ms from now) or 'stale'
-- (as COMMIT). A parked BEGIN sleeps until the lease it saw ends, so it is
-- woken to read the new one.
CREATE OR REPLACE FUNCTION idem_record_renew(p_key bytea, p_fence bigint, p_lease_ms bigint)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_waiting boolean;
BEGIN
    UPDATE idem_records SET expires_at_ms = idem_now_ms() + p_lease_ms
    WHERE key = p_key AND state = 'running' AND fence = p_fence AND expires_at_ms > idem_now_ms()
    RETURNING waiting INTO v_waiting;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    IF v_waiting THEN
        PERFORM pg_notify('idem_wake', 'i' || encode(p_key, 'hex'));
    END IF;
    RETURN 'renewed';
END
$fn$;

-- IDEM.GET: 'absent', 'running' (fence, left_ms) or 'done' (result).
CREATE OR REPLACE FUNCTION idem_get(p_key bytea)
RETURNS TABLE (status text, fence bigint, left_ms bigint, result bytea)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    r      idem_records%ROWTYPE;
    v_now  bigint := idem_now_ms();
BEGIN
    SELECT * INTO r FROM idem_records WHERE key = p_key;
    IF NOT FOUND OR r.expires_at_ms <= v_now THEN
        RETURN QUERY SELECT 'absent'::text, NULL::bigint, NULL::bigint, NULL::bytea;
    ELSIF r.state = 'done' THEN
        RETURN QUERY SELECT 'done'::text, NULL::bigint, NULL::bigint, r.result;
    ELSE
        RETURN QUERY SELECT 'running'::text, r.fence, r.expires_at_ms - v_now, NULL::bytea;
    END IF;
END
$fn$;

-- IDEM.DEL: 1 if a record not yet forgotten was removed (also a running one
-- whose lease ran out: its attempt count goes too), else 0.
CREATE OR REPLACE FUNCTION idem_del(p_key bytea)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_live     boolean;
    v_waiting  boolean;
BEGIN
    DELETE FROM idem_records WHERE key = p_key
    RETURNING CASE WHEN state = 'done' THEN expires_at_ms > idem_now_ms()
                   ELSE expires_at_ms + @RUNNING_RETAIN_MS@ > idem_now_ms() END,
              waiting
    INTO v_live, v_waiting;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF v_waiting THEN
        PERFORM pg_notify('idem_wake', 'i' || encode(p_key, 'hex'));
    END IF;
    RETURN CASE WHEN v_live THEN 1 ELSE 0 END;
END
$fn$;

-- CLAIM: 'claimed' or 'held' (owner). p_ttl_ms NULL: until released.
CREATE OR REPLACE FUNCTION idem_claim(p_key bytea, p_owner bytea, p_ttl_ms bigint DEFAULT NULL)
RETURNS TABLE (status text, owner bytea)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_owner  bytea;
BEGIN
    FOR i IN 1..8 LOOP
        -- ON CONFLICT DO UPDATE locks the existing row even when its WHERE
        -- refuses the update, so the owner read below cannot change under us.
        -- The WHERE reads the clock after the lock is held.
        INSERT INTO idem_claims AS c (key, owner, expires_at_ms)
        VALUES (p_key, p_owner, idem_now_ms() + p_ttl_ms)
        ON CONFLICT (key) DO UPDATE
        SET owner = excluded.owner, expires_at_ms = idem_now_ms() + p_ttl_ms
        WHERE c.owner = excluded.owner OR c.expires_at_ms <= idem_now_ms()
        RETURNING c.owner INTO v_owner;
        IF FOUND THEN
            RETURN QUERY SELECT 'claimed'::text, NULL::bytea;
            RETURN;
        END IF;
        SELECT c.owner INTO v_owner FROM idem_claims c WHERE c.key = p_key;
        IF FOUND THEN
            RETURN QUERY SELECT 'held'::text, v_owner;
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'idem_claim: key changed too often while being read' USING ERRCODE = '40001';
END
$fn$;

-- CLAIM.ALL: one row 'claimed', or one 'held' row (key, owner) per
-- conflicting key in the order of p_keys. All or nothing. p_keys must not
-- repeat a key.
CREATE OR REPLACE FUNCTION idem_claim_all(p_owner bytea, p_keys bytea[])
RETURNS TABLE (status text, key bytea, owner bytea)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_now   bigint;
    v_rows  bigint;
BEGIN
    FOR i IN 1..8 LOOP
        -- Lock the rows that exist in key order: concurrent CLAIM.ALLs over
        -- overlapping keys then queue instead of deadlocking.
        PERFORM 1 FROM idem_claims c WHERE c.key = ANY (p_keys) ORDER BY c.key FOR UPDATE;
        v_now := idem_now_ms();
        RETURN QUERY
            SELECT 'held'::text, k.k, c.owner
            FROM unnest(p_keys) WITH ORDINALITY AS k (k, ord)
            JOIN idem_claims c ON c.key = k.k
            WHERE c.owner <> p_owner AND (c.expires_at_ms IS NULL OR c.expires_at_ms > v_now)
            ORDER BY k.ord;
        IF FOUND THEN
            RETURN;
        END IF;
        BEGIN
            INSERT INTO idem_claims AS c (key, owner, expires_at_ms)
            SELECT k, p_owner, NULL::bigint FROM unnest(p_keys) AS k ORDER BY k
            ON CONFLICT (key) DO UPDATE
            SET owner = excluded.owner, expires_at_ms = NULL
            WHERE c.owner = excluded.owner OR c.expires_at_ms <= v_now;
            GET DIAGNOSTICS v_rows = ROW_COUNT;
            IF v_rows = cardinality(p_keys) THEN
                RETURN QUERY SELECT 'claimed'::text, NULL::bytea, NULL::bytea;
                RETURN;
            END IF;
            -- A key was claimed by someone else after the check: undo this
            -- block's inserts and look again.
            RAISE EXCEPTION 'retry' USING ERRCODE = 'IDM01';
        EXCEPTION WHEN SQLSTATE 'IDM01' THEN
            NULL;
        END;
    END LOOP;
    RAISE EXCEPTION 'idem_claim_all: keys changed too often while being read' USING ERRCODE = '40001';
END
$fn$;

-- RELEASE: 1 if the owner's live claim was removed, else 0.
CREATE OR REPLACE FUNCTION idem_release(p_key bytea, p_owner bytea)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_live boolean;
BEGIN
    DELETE FROM idem_claims WHERE key = p_key AND owner = p_owner
    RETURNING (expires_at_ms IS NULL OR expires_at_ms > idem_now_ms()) INTO v_live;
    RETURN CASE WHEN v_live THEN 1 ELSE 0 END;
END
$fn$;

-- OWNER: the live claim's owner, or NULL.
CREATE OR REPLACE FUNCTION idem_owner(p_key bytea)
RETURNS bytea
LANGUAGE sql VOLATILE AS $fn$
    SELECT owner FROM idem_claims
    WHERE key = p_key AND (expires_at_ms IS NULL OR expires_at_ms > idem_now_ms())
$fn$;

-- LOCK: 'acquired' (fence) or 'busy' (holder, left_ms). A re-LOCK by the
-- live holder extends the lease and keeps the fence.
CREATE OR REPLACE FUNCTION idem_lock(p_name bytea, p_owner bytea, p_lease_ms bigint, p_wait boolean DEFAULT false)
RETURNS TABLE (status text, fence bigint, holder bytea, left_ms bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    r        idem_locks%ROWTYPE;
    v_now    bigint;
    v_fence  bigint;
BEGIN
    FOR i IN 1..8 LOOP
        SELECT * INTO r FROM idem_locks WHERE name = p_name FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO idem_locks (name, owner, fence, expires_at_ms)
            VALUES (p_name, p_owner, 0, 0)
            ON CONFLICT (name) DO NOTHING;
            IF NOT FOUND THEN
                CONTINUE;
            END IF;
            v_fence := nextval('idem_fence_seq');
            UPDATE idem_locks SET fence = v_fence, expires_at_ms = idem_now_ms() + p_lease_ms
            WHERE name = p_name;
            RETURN QUERY SELECT 'acquired'::text, v_fence, NULL::bytea, NULL::bigint;
            RETURN;
        END IF;
        v_now := idem_now_ms();
        IF r.expires_at_ms > v_now THEN
            IF r.owner = p_owner THEN
                UPDATE idem_locks SET expires_at_ms = v_now + p_lease_ms WHERE name = p_name;
                RETURN QUERY SELECT 'acquired'::text, r.fence, NULL::bytea, NULL::bigint;
                RETURN;
            END IF;
            IF p_wait AND NOT r.waiting THEN
                UPDATE idem_locks SET waiting = true WHERE name = p_name;
            END IF;
            RETURN QUERY SELECT 'busy'::text, NULL::bigint, r.owner, r.expires_at_ms - v_now;
            RETURN;
        END IF;
        -- The lease ran out: whoever asks now (even the old holder) gets a new fence.
        v_fence := nextval('idem_fence_seq');
        UPDATE idem_locks SET owner = p_owner, fence = v_fence, expires_at_ms = v_now + p_lease_ms
        WHERE name = p_name;
        RETURN QUERY SELECT 'acquired'::text, v_fence, NULL::bytea, NULL::bigint;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'idem_lock: lock changed too often while being read' USING ERRCODE = '40001';
END
$fn$;

-- RENEW: 'renewed' (fence) while the owner's lease is live, else 'lost'.
CREATE OR REPLACE FUNCTION idem_renew(p_name bytea, p_owner bytea, p_lease_ms bigint)
RETURNS TABLE (status text, fence bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_fence  bigint;
BEGIN
    UPDATE idem_locks SET expires_at_ms = idem_now_ms() + p_lease_ms
    WHERE name = p_name AND owner = p_owner AND expires_at_ms > idem_now_ms()
    RETURNING fence INTO v_fence;
    IF FOUND THEN
        RETURN QUERY SELECT 'renewed'::text, v_fence;
    ELSE
        RETURN QUERY SELECT 'lost'::text, NULL::bigint;
    END IF;
END
$fn$;

-- UNLOCK: 1 if the owner's live lock was released, else 0.
CREATE OR REPLACE FUNCTION idem_unlock(p_name bytea, p_owner bytea)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_live     boolean;
    v_waiting  boolean;
BEGIN
    DELETE FROM idem_locks WHERE name = p_name AND owner = p_owner
    RETURNING expires_at_ms > idem_now_ms(), waiting INTO v_live, v_waiting;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF v_waiting THEN
        PERFORM pg_notify('idem_wake', 'l' || encode(p_name, 'hex'));
    END IF;
    RETURN CASE WHEN v_live THEN 1 ELSE 0 END;
END
$fn$;

-- LOCK.INFO: 'free' or 'held' (owner, fence, left_ms).
CREATE OR REPLACE FUNCTION idem_lock_info(p_name bytea)
RETURNS TABLE (status text, owner bytea, fence bigint, left_ms bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    r      idem_locks%ROWTYPE;
    v_now  bigint := idem_now_ms();
BEGIN
    SELECT * INTO r FROM idem_locks WHERE name = p_name;
    IF NOT FOUND OR r.expires_at_ms <= v_now THEN
        RETURN QUERY SELECT 'free'::text, NULL::bytea, NULL::bigint, NULL::bigint;
    ELSE
        RETURN QUERY SELECT 'held'::text, r.owner, r.fence, r.expires_at_ms - v_now;
    END IF;
END
$fn$;

-- TOKEN.NEW: stores a token the caller generated (at least 128 random bits).
CREATE OR REPLACE FUNCTION idem_token_new(p_scope bytea, p_token bytea, p_ttl_ms bigint)
RETURNS void
LANGUAGE sql VOLATILE AS $fn$
    INSERT INTO idem_tokens (scope, token, expires_at_ms)
    VALUES (p_scope, p_token, idem_now_ms() + p_ttl_ms)
    ON CONFLICT (scope, token) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
$fn$;

-- TOKEN.USE: 1 if the token was live (it is now spent), else 0.
CREATE OR REPLACE FUNCTION idem_token_use(p_scope bytea, p_token bytea)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_live boolean;
BEGIN
    DELETE FROM idem_tokens WHERE scope = p_scope AND token = p_token
    RETURNING expires_at_ms > idem_now_ms() INTO v_live;
    RETURN CASE WHEN v_live THEN 1 ELSE 0 END;
END
$fn$;

-- COUNTER.ADD: 'ok' (new value), 'refused' (current value) or 'replayed'
-- (the value the op id's first application produced).
CREATE OR REPLACE FUNCTION idem_counter_add(p_key bytea, p_delta bigint, p_min bigint, p_max bigint,
                                            p_op bytea, p_keep_ms bigint)
RETURNS TABLE (status text, value bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_now      bigint;
    v_cur      bigint;
    v_old      bigint;
    v_new      numeric;
    v_created  boolean := false;
BEGIN
    FOR i IN 1..8 LOOP
        SELECT c.value INTO v_cur FROM idem_counters c WHERE c.key = p_key FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO idem_counters (key, value) VALUES (p_key, 0) ON CONFLICT (key) DO NOTHING;
        v_created := v_created OR FOUND;
    END LOOP;
    IF v_cur IS NULL THEN
        RAISE EXCEPTION 'idem_counter_add: counter changed too often while being read' USING ERRCODE = '40001';
    END IF;
    v_now := idem_now_ms();
    IF p_op IS NOT NULL THEN
        SELECT o.value INTO v_old FROM idem_counter_ops o
        WHERE o.key = p_key AND o.op = p_op AND o.expires_at_ms > v_now;
        IF FOUND THEN
            RETURN QUERY SELECT 'replayed'::text, v_old;
            RETURN;
        END IF;
    END IF;
    -- numeric, so that i64 overflow is a refusal and not an exception.
    v_new := v_cur::numeric + p_delta;
    IF v_new < -9223372036854775808 OR v_new > 9223372036854775807
       OR (p_min IS NOT NULL AND v_new < p_min) OR (p_max IS NOT NULL AND v_new > p_max) THEN
        IF v_created THEN
            DELETE FROM idem_counters WHERE key = p_key;  -- an absent counter stays absent
        END IF;
        RETURN QUERY SELECT 'refused'::text, v_cur;
        RETURN;
    END IF;
    IF v_new = 0 THEN
        DELETE FROM idem_counters WHERE key = p_key;  -- 0 is what an absent counter reads
    ELSE
        UPDATE idem_counters SET value = v_new::bigint WHERE key = p_key;
    END IF;
    IF p_op IS NOT NULL THEN
        INSERT INTO idem_counter_ops (key, op, value, expires_at_ms)
        VALUES (p_key, p_op, v_new::bigint, v_now + p_keep_ms)
        ON CONFLICT (key, op) DO UPDATE SET value = excluded.value, expires_at_ms = excluded.expires_at_ms;
    END IF;
    RETURN QUERY SELECT 'ok'::text, v_new::bigint;
END
$fn$;

-- COUNTER.GET: the value, 0 when absent.
CREATE OR REPLACE FUNCTION idem_counter_get(p_key bytea)
RETURNS bigint
LANGUAGE sql VOLATILE AS $fn$
    SELECT coalesce((SELECT value FROM idem_counters WHERE key = p_key), 0)
$fn$;

-- VALUE.SET: 'ok' (new version) or 'conflict' (current version, 0 if absent).
-- p_if_version NULL: unconditional; 0: only if absent.
CREATE OR REPLACE FUNCTION idem_value_set(p_key bytea, p_value bytea, p_if_version bigint DEFAULT NULL)
RETURNS TABLE (status text, version bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_ver bigint;
BEGIN
    IF p_if_version IS NULL THEN
        INSERT INTO idem_values AS v (key, value, version) VALUES (p_key, p_value, 1)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = v.version + 1
        RETURNING v.version INTO v_ver;
        RETURN QUERY SELECT 'ok'::text, v_ver;
        RETURN;
    ELSIF p_if_version = 0 THEN
        INSERT INTO idem_values (key, value, version) VALUES (p_key, p_value, 1)
        ON CONFLICT (key) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT 'ok'::text, 1::bigint;
            RETURN;
        END IF;
    ELSE
        UPDATE idem_values v SET value = p_value, version = v.version + 1
        WHERE v.key = p_key AND v.version = p_if_version
        RETURNING v.version INTO v_ver;
        IF FOUND THEN
            RETURN QUERY SELECT 'ok'::text, v_ver;
            RETURN;
        END IF;
    END IF;
    SELECT v.version INTO v_ver FROM idem_values v WHERE v.key = p_key;
    RETURN QUERY SELECT 'conflict'::text, coalesce(v_ver, 0);
END
$fn$;

-- FSM.MOVE: 'moved' (to), 'already' (to) or 'refused' (current state; the
-- bytes 'none' for an absent key). 'none' in p_from stands for an absent key.
CREATE OR REPLACE FUNCTION idem_fsm_move(p_key bytea, p_to bytea, p_from bytea[])
RETURNS TABLE (status text, state bytea)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_cur bytea;
BEGIN
    FOR i IN 1..8 LOOP
        SELECT f.state INTO v_cur FROM idem_fsm f WHERE f.key = p_key FOR UPDATE;
        IF NOT FOUND THEN
            IF NOT ('\x6e6f6e65'::bytea = ANY (p_from)) THEN
                RETURN QUERY SELECT 'refused'::text, '\x6e6f6e65'::bytea;
                RETURN;
            END IF;
            INSERT INTO idem_fsm (key, state) VALUES (p_key, p_to) ON CONFLICT (key) DO NOTHING;
            IF FOUND THEN
                RETURN QUERY SELECT 'moved'::text, p_to;
                RETURN;
            END IF;
            CONTINUE;
        END IF;
        IF v_cur = p_to THEN
            RETURN QUERY SELECT 'already'::text, p_to;
        ELSIF v_cur = ANY (p_from) THEN
            UPDATE idem_fsm SET state = p_to WHERE key = p_key;
            RETURN QUERY SELECT 'moved'::text, p_to;
        ELSE
            RETURN QUERY SELECT 'refused'::text, v_cur;
        END IF;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'idem_fsm_move: key changed too often while being read' USING ERRCODE = '40001';
END
$fn$;

-- SLOTS.RESERVE: one row 'reserved'; one 'conflict' row (slot, holder) per
-- slot held by another holder; one 'outside' row (slot = the resource's SIZE)
-- when p_last is not below it; or one 'size' row (slot = the resource's
-- SIZE) when p_size is given and differs from an existing resource's.
-- p_size NULL: the existing size, or 48 for a new resource.
CREATE OR REPLACE FUNCTION idem_slots_reserve(p_resource bytea, p_first integer, p_last integer,
                                              p_holder bytea, p_size integer DEFAULT NULL)
RETURNS TABLE (status text, slot integer, holder bytea)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_size integer;
BEGIN
    FOR i IN 1..8 LOOP
        -- The resource row is the one lock every reservation of the resource takes.
        SELECT r.size INTO v_size FROM idem_slot_resources r WHERE r.resource = p_resource FOR UPDATE;
        EXIT WHEN FOUND;
        IF p_last >= coalesce(p_size, 48) THEN
            RETURN QUERY SELECT 'outside'::text, coalesce(p_size, 48), NULL::bytea;
            RETURN;
        END IF;
        INSERT INTO idem_slot_resources (resource, size) VALUES (p_resource, coalesce(p_size, 48))
        ON CONFLICT (resource) DO NOTHING;
    END LOOP;
    IF v_size IS NULL THEN
        RAISE EXCEPTION 'idem_slots_reserve: resource changed too often while being read' USING ERRCODE = '40001';
    END IF;
    IF p_size IS NOT NULL AND p_size <> v_size THEN
        RETURN QUERY SELECT 'size'::text, v_size, NULL::bytea;
        RETURN;
    END IF;
    IF p_last >= v_size THEN
        RETURN QUERY SELECT 'outside'::text, v_size, NULL::bytea;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT 'conflict'::text, s.slot, s.holder FROM idem_slots s
        WHERE s.resource = p_resource AND s.slot BETWEEN p_first AND p_last AND s.holder <> p_holder
        ORDER BY s.slot;
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO idem_slots (resource, slot, holder)
    SELECT p_resource, g, p_holder FROM generate_series(p_first, p_last) AS g
    ON CONFLICT (resource, slot) DO NOTHING;
    RETURN QUERY SELECT 'reserved'::text, NULL::integer, NULL::bytea;
END
$fn$;

-- SLOTS.RELEASE: how many of the holder's slots in the range were freed. A
-- resource left with no held slot is forgotten (its SIZE may be chosen again).
CREATE OR REPLACE FUNCTION idem_slots_release(p_resource bytea, p_first integer, p_last integer, p_holder bytea)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_n integer;
BEGIN
    PERFORM 1 FROM idem_slot_resources r WHERE r.resource = p_resource FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    DELETE FROM idem_slots s
    WHERE s.resource = p_resource AND s.slot BETWEEN p_first AND p_last AND s.holder = p_holder;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 AND NOT EXISTS (SELECT 1 FROM idem_slots s WHERE s.resource = p_resource) THEN
        DELETE FROM idem_slot_resources r WHERE r.resource = p_resource;
    END IF;
    RETURN v_n;
END
$fn$;

-- SLOTS.GET: the resource's SIZE and its held slots (no rows: absent).
CREATE OR REPLACE FUNCTION idem_slots_get(p_resource bytea)
RETURNS TABLE (size integer, slot integer, holder bytea)
LANGUAGE sql VOLATILE AS $fn$
    SELECT r.size, s.slot, s.holder
    FROM idem_slot_resources r
    LEFT JOIN idem_slots s ON s.resource = r.resource
    WHERE r.resource = p_resource
    ORDER BY s.slot
$fn$;

-- Deletes up to p_batch rows per table whose time has passed; returns how
-- many. A running record whose lease ran out is kept for the grace period
-- (RUNNING_RETAIN_MS), so that a late BEGIN still sees a larger attempt number.
-- Running records have no index on their lease end (a fresh BEGIN would pay
-- for it): each call examines the next p_batch keys after the sweep's cursor
-- (idem_cleanup_cursor) and deletes those past the grace period, so a call's
-- cost stays bounded and the sweep covers the table in turn. A concurrent
-- cleanup that holds the cursor makes this call skip the sweep.
CREATE OR REPLACE FUNCTION idem_cleanup(p_batch integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_now  bigint := idem_now_ms();
    v_n    bigint := 0;
    v_m    bigint;
    v_grace_end bigint := v_now - @RUNNING_RETAIN_MS@;
    v_after    bytea;
    v_last     bytea;
    v_scanned  bigint;
BEGIN
    DELETE FROM idem_records WHERE key IN (
        SELECT key FROM idem_records WHERE state = 'done' AND expires_at_ms <= v_now LIMIT p_batch)
      AND state = 'done' AND expires_at_ms <= v_now;
    GET DIAGNOSTICS v_m = ROW_COUNT; v_n := v_n + v_m;
    SELECT running_after INTO v_after FROM idem_cleanup_cursor WHERE id = 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        -- Two statements rather than "v_after IS NULL OR key > v_after", so
        -- that each is a range scan of the primary key.
        IF v_after IS NULL THEN
            SELECT (array_agg(s.key ORDER BY s.key DESC))[1], count(*) INTO v_last, v_scanned
            FROM (SELECT key FROM idem_records ORDER BY key LIMIT p_batch) s;
        ELSE
            SELECT (array_agg(s.key ORDER BY s.key DESC))[1], count(*) INTO v_last, v_scanned
            FROM (SELECT key FROM idem_records WHERE key > v_after ORDER BY key LIMIT p_batch) s;
        END IF;
        IF v_scanned > 0 THEN
            DELETE FROM idem_records
            WHERE key >= coalesce(v_after, '\x'::bytea) AND key <= v_last
              AND state = 'running' AND expires_at_ms <= v_grace_end;
            GET DIAGNOSTICS v_m = ROW_COUNT; v_n := v_n + v_m;
        END IF;
        -- A short batch reached the last key: the next call starts over.
        IF v_scanned < p_batch THEN
            v_last := NULL;
        END IF;
        IF v_last IS DISTINCT FROM v_after THEN
            UPDATE idem_cleanup_cursor SET running_after = v_last WHERE id = 1;
        END IF;
    END IF;
    DELETE FROM idem_claims WHERE key IN (
        SELECT key FROM idem_claims WHERE expires_at_ms <= v_now LIMIT p_batch)
      AND expires_at_ms <= v_now;
    GET DIAGNOSTICS v_m = ROW_COUNT; v_n := v_n + v_m;
    DELETE FROM idem_locks WHERE name IN (
        SELECT name FROM idem_locks WHERE expires_at_ms <= v_now LIMIT p_batch)
      AND expires_at_ms <= v_now;
    GET DIAGNOSTICS v_m = ROW_COUNT; v_n := v_n + v_m;
    DELETE FROM idem_tokens WHERE (scope, token) IN (
        SELECT scope, token FROM idem_tokens WHERE expires_at_ms <= v_now LIMIT p_batch)
      AND expires_at_ms <= v_now;
    GET DIAGNOSTICS v_m = ROW_COUNT; v_n := v_n + v_m;
    DELETE FROM idem_counter_ops WHERE (key, op) IN (
        SELECT key, op FROM idem_counter_ops WHERE expires_at_ms <= v_now LIMIT p_batch)
      AND expires_at_ms <= v_now;
    GET DIAGNOSTICS v_m = ROW_COUNT; v_n := v_n + v_m;
    RETURN v_n;
END
$fn$;

-- DBSIZE: live-ish rows over all primitives.
CREATE OR REPLACE FUNCTION idem_dbsize()
RETURNS bigint
LANGUAGE sql VOLATILE AS $fn$
    SELECT (SELECT count(*) FROM idem_records) + (SELECT count(*) FROM idem_claims)
         + (SELECT count(*) FROM idem_locks) + (SELECT count(*) FROM idem_tokens)
         + (SELECT count(*) FROM idem_counters) + (SELECT count(*) FROM idem_values)
         + (SELECT count(*) FROM idem_fsm) + (SELECT count(*) FROM idem_slot_resources)
$fn$;
"#;

#[cfg(test)]
mod tests {
    /// The routines at [`super::SCHEMA_VERSION`], as [`idem_sql::routines_digest`]
    /// of their text with every constant filled in. Changed routines need a
    /// new (possibly empty) step, the version bumped and the digest recorded here.
    const ROUTINES_AT_VERSION: (i32, u64) = (6, 0x408a_8221_d31f_7b37);

    #[test]
    fn changed_routines_come_with_a_new_schema_version() {
        let text = super::routines();
        assert_eq!(
            (super::SCHEMA_VERSION, idem_sql::routines_digest([text.as_str()])),
            ROUTINES_AT_VERSION,
            "the routines changed: add a schema step, bump SCHEMA_VERSION and record the new digest (left: this build)"
        );
    }

    #[test]
    fn routines_take_every_constant_from_rust() {
        let text = super::routines();
        assert!(!text.contains('@'), "a placeholder is left in the routines");
        let grace = idem_core::limits::RUNNING_RETAIN_MS.to_string();
        assert_eq!(text.matches(&grace).count(), 3, "the running-record grace appears where the routines use it");
        assert!(!super::ROUTINES.contains(&grace), "the routines' source names the grace by its placeholder");
    }
}
