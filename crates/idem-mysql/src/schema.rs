//! idem's MySQL / MariaDB schema: tables, the fence table and one stored
//! procedure per primitive, applied by [`super::migrate`].
//!
//! Layout (every name starts with `idem_`; docs/backends-sql.md has the full reference):
//! - `idem_schema_version(id = 1, version)`: the last step applied;
//! - fences: on MariaDB the sequence `idem_fence_seq` (`NEXT VALUE FOR`,
//!   created by [`super::migrate`] above every id `idem_fences` handed out),
//!   on MySQL an AUTO_INCREMENT id of `idem_fences`; the routines draw them
//!   through the `@FENCE_DRAW@` placeholder ([`fence_draw`]);
//! - `idem_fence_stripes(id)`: unused since version 5 (it was the per-key
//!   fence lock of IDEM.BEGIN), kept for processes still running version
//!   4's statements during an upgrade;
//! - `idem_cleanup_cursor(id = 1, records_after, claims_after)`: where
//!   cleanup's key-order sweeps of `idem_records` and `idem_claims` resume
//!   (since version 6, which dropped their expiry indexes);
//! - one InnoDB table per primitive, keys `VARBINARY(@KEY_BYTES_MAX@)` (binary-safe,
//!   compared byte by byte), results and values `MEDIUMBLOB`;
//! - times are `BIGINT` milliseconds since the Unix epoch on the DATABASE
//!   clock, read only inside the procedures through `idem_now_ms()`:
//!   `TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000`,
//!   which does not depend on the session's time zone (unlike
//!   `UNIX_TIMESTAMP(NOW(6))`, which is ambiguous for an hour at a DST change).
//!
//! Every procedure is one `CALL` that returns exactly one result set whose
//! first column is `status` (or the value asked for). Procedures contain no
//! transaction control: the backend wraps each call in a short transaction,
//! and an application calls them inside its own, so their writes commit or
//! roll back with its rows.
//!
//! How they stay correct under concurrency and REPEATABLE READ (the InnoDB
//! default), where a plain SELECT reads an old snapshot (docs/scenarios.md S3):
//! - Every read that decides something is a locking read (`FOR UPDATE`),
//!   which reads the newest committed row, never the snapshot.
//! - A row that may be absent is first created-or-locked with
//!   `INSERT ... ON DUPLICATE KEY UPDATE key = key` (a placeholder such as
//!   state 'new', fence 0, size 0). A second caller of the same key waits on
//!   the row lock, then finds the winner's row: never a duplicate-key error,
//!   and no gap-lock deadlock as with SELECT-then-INSERT.
//! - A fence is drawn only while the key's row is locked, so a key's fences
//!   grow, with one exception: the backend's one-statement IDEM.BEGIN on
//!   MariaDB draws its fence (`NEXT VALUE` in `VALUES`) before InnoDB looks
//!   the key up. Why that fence still follows every grant of the key that
//!   took effect (docs/backends-sql.md, "Fences on MariaDB"):
//!   - Such a fence F is stored only if, when the statement reaches the key,
//!     the key has no row. A grant of the key with a fence above F was drawn
//!     after F, so while that statement was in flight, and it left a row that
//!     is still there: commands never delete an idempotency record. ABORT and
//!     IDEM.DEL turn it into a tombstone (state 'gone', its fence kept,
//!     `expires_at_ms` = the time of the change), which reads as absent and
//!     which a BEGIN takes over in `idem_begin`, with a fence drawn under the
//!     row lock, so above the tombstone's.
//!   - Cleanup deletes a record only [`FORGET_GRACE_MS`] after its
//!     `expires_at_ms` (done, gone) or `RUNNING_RETAIN_MS` after it (running,
//!     at least as long). Every record's fence was drawn at or before its
//!     `expires_at_ms`, so a deleted record's fence is older than the grace,
//!     and a statement that drew below it would have been in flight longer
//!     than any statement of the backend runs (its lock waits are bounded by
//!     `lock_timeout_ms`; the grace is several times the longest one).
//!   - A grant made inside a caller's transaction that rolls back leaves no
//!     row and never took effect; a fast BEGIN that drew its fence before it
//!     and reached the key after the rollback may get a lower fence. The `tx`
//!     API says so: such a fence is provisional until its COMMIT.
//! - `ROW_COUNT()` is used only after DELETE, and after `idem_del`'s UPDATE,
//!   which changes `state` in every row it matches (counts that do not
//!   depend on the client's CLIENT_FOUND_ROWS flag).

/// The schema version this build writes and expects.
pub(crate) const SCHEMA_VERSION: i32 = 6;

/// Migration steps: `(version, statements)` for tables. MySQL's DDL commits
/// on its own, so every statement is idempotent (`IF NOT EXISTS`) and a step
/// interrupted half-way is simply run again.
pub(crate) const MIGRATIONS: &[(i32, &[&str])] = &[(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)];

/// Step 1: tables.
const V1: &[&str] = &[
    // Fences: only the newest row matters; cleanup deletes the others. InnoDB
    // keeps the AUTO_INCREMENT counter across restarts (MariaDB 10.2.4+,
    // MySQL 8.0+), and the newest row is never deleted, so on older servers
    // too a restart cannot hand out an id again.
    "CREATE TABLE IF NOT EXISTS idem_fences (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY
    ) ENGINE = InnoDB",
    // Idempotency records. state 'running': expires_at_ms is the lease end;
    // 'done': the end of retention (KEEP); 'new': a placeholder that exists
    // only inside the call that creates a record. A running record whose lease
    // ran out is remembered (for its attempt number) for
    // idem_core::limits::RUNNING_RETAIN_MS after its lease end.
    "CREATE TABLE IF NOT EXISTS idem_records (
        `key`          VARBINARY(@KEY_BYTES_MAX@) NOT NULL PRIMARY KEY,
        fingerprint    VARBINARY(@KEY_BYTES_MAX@) NULL,
        state          VARCHAR(8)     NOT NULL,
        fence          BIGINT         NOT NULL,
        attempt        INT            NOT NULL,
        expires_at_ms  BIGINT         NOT NULL,
        result         MEDIUMBLOB     NULL,
        KEY idem_records_exp (state, expires_at_ms)  -- dropped by step 6
    ) ENGINE = InnoDB",
    // Unique claims. expires_at_ms NULL: until released.
    "CREATE TABLE IF NOT EXISTS idem_claims (
        `key`          VARBINARY(@KEY_BYTES_MAX@) NOT NULL PRIMARY KEY,
        owner          VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        expires_at_ms  BIGINT         NULL,
        KEY idem_claims_exp (expires_at_ms)  -- dropped by step 6
    ) ENGINE = InnoDB",
    // Leases with fencing. fence 0: a placeholder inside one call.
    "CREATE TABLE IF NOT EXISTS idem_locks (
        name           VARBINARY(@KEY_BYTES_MAX@) NOT NULL PRIMARY KEY,
        owner          VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        fence          BIGINT         NOT NULL,
        expires_at_ms  BIGINT         NOT NULL,
        KEY idem_locks_exp (expires_at_ms)
    ) ENGINE = InnoDB",
    "CREATE TABLE IF NOT EXISTS idem_tokens (
        scope          VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        token          VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        expires_at_ms  BIGINT         NOT NULL,
        PRIMARY KEY (scope, token),
        KEY idem_tokens_exp (expires_at_ms)
    ) ENGINE = InnoDB",
    // Counters (0 is not stored: it is what an absent counter reads) and the
    // op ids applied to them.
    "CREATE TABLE IF NOT EXISTS idem_counters (
        `key`  VARBINARY(@KEY_BYTES_MAX@) NOT NULL PRIMARY KEY,
        value  BIGINT         NOT NULL
    ) ENGINE = InnoDB",
    "CREATE TABLE IF NOT EXISTS idem_counter_ops (
        `key`          VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        op             VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        value          BIGINT         NOT NULL,
        expires_at_ms  BIGINT         NOT NULL,
        PRIMARY KEY (`key`, op),
        KEY idem_counter_ops_exp (expires_at_ms)
    ) ENGINE = InnoDB",
    // Versioned values. version 0: a placeholder inside one call.
    "CREATE TABLE IF NOT EXISTS idem_values (
        `key`    VARBINARY(@KEY_BYTES_MAX@) NOT NULL PRIMARY KEY,
        value    MEDIUMBLOB     NOT NULL,
        version  BIGINT         NOT NULL
    ) ENGINE = InnoDB",
    // State machines. state '': a placeholder inside one call.
    "CREATE TABLE IF NOT EXISTS idem_fsm (
        `key`  VARBINARY(@KEY_BYTES_MAX@) NOT NULL PRIMARY KEY,
        state  VARBINARY(@KEY_BYTES_MAX@) NOT NULL
    ) ENGINE = InnoDB",
    // Slot reservations: the resource row (its SIZE; size 0 is a placeholder
    // inside one call) is the lock every reservation of it takes.
    "CREATE TABLE IF NOT EXISTS idem_slot_resources (
        resource  VARBINARY(@KEY_BYTES_MAX@) NOT NULL PRIMARY KEY,
        size      INT            NOT NULL
    ) ENGINE = InnoDB",
    "CREATE TABLE IF NOT EXISTS idem_slots (
        resource  VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        slot      INT            NOT NULL,
        holder    VARBINARY(@KEY_BYTES_MAX@) NOT NULL,
        PRIMARY KEY (resource, slot)
    ) ENGINE = InnoDB",
];

/// Step 2: no table change; the routines gain `idem_record_renew`
/// (IDEM.RENEW), which an upgrade creates with the rest of [`ROUTINES`].
const V2: &[&str] = &[];

/// Step 3: no table change; `idem_now_ms()` reads a test clock when the
/// session sets one (`@idem_test_now_ms`), and a takeover keeps the
/// record's fingerprint (none stays none), which an upgrade re-creates with
/// the rest of [`ROUTINES`].
const V3: &[&str] = &[];

/// How many rows version 4's per-key fence lock had (unused since version
/// 5, see the module docs; step 4 still creates them, as it did).
pub(crate) const FENCE_STRIPES: u32 = 65_536;

const _: () = assert!(FENCE_STRIPES == 16 * 16 * 16 * 16, "V4 fills 16^4 stripes");

/// A derived table of the 16 hexadecimal digits, 0..=15 in column `n`: four
/// of them crossed number the fence stripes.
macro_rules! hex_digits {
    () => {
        "(SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9
           UNION ALL SELECT 10 UNION ALL SELECT 11 UNION ALL SELECT 12 UNION ALL SELECT 13 UNION ALL SELECT 14
           UNION ALL SELECT 15)"
    };
}

/// Step 4: the fence stripes (the sequence, MariaDB only, is created by
/// [`super::migrate`], which reads where `idem_fences` stopped).
const V4: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS idem_fence_stripes (
        id INT NOT NULL PRIMARY KEY
    ) ENGINE = InnoDB",
    // 16^4 = FENCE_STRIPES rows, 0..65535 (asserted above).
    concat!(
        "INSERT IGNORE INTO idem_fence_stripes (id)
     SELECT a.n * 4096 + b.n * 256 + c.n * 16 + d.n
     FROM ",
        hex_digits!(),
        " a, ",
        hex_digits!(),
        " b, ",
        hex_digits!(),
        " c, ",
        hex_digits!(),
        " d"
    ),
];

/// Step 5: no table change; ABORT and IDEM.DEL leave a tombstone (state
/// 'gone') instead of deleting the record, cleanup forgets records only
/// [`FORGET_GRACE_MS`] after their time, and `idem_begin` no longer locks a
/// fence stripe, all in the routines an upgrade re-creates.
const V5: &[&str] = &[];

/// Drops secondary index `$index` of table `$table` if it is there: MySQL
/// has no `DROP INDEX IF EXISTS` (MariaDB has), so the statement is chosen
/// by a look at `information_schema` and run as a prepared statement, which
/// keeps the step idempotent on both.
macro_rules! drop_index_if_exists {
    ($table:literal, $index:literal) => {
        [
            concat!(
                "SET @idem_ddl = IF(EXISTS(SELECT 1 FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = '",
                $table,
                "' AND index_name = '",
                $index,
                "'), 'ALTER TABLE ",
                $table,
                " DROP INDEX ",
                $index,
                "', 'DO 0')"
            ),
            "PREPARE idem_ddl FROM @idem_ddl",
            "EXECUTE idem_ddl",
            "DEALLOCATE PREPARE idem_ddl",
        ]
    };
}

const DROP_CLAIMS_EXP: [&str; 4] = drop_index_if_exists!("idem_claims", "idem_claims_exp");
const DROP_RECORDS_EXP: [&str; 4] = drop_index_if_exists!("idem_records", "idem_records_exp");

/// Step 6: `idem_claims` and `idem_records` lose their secondary indexes on
/// the expiry (`idem_claims_exp (expires_at_ms)`, `idem_records_exp (state,
/// expires_at_ms)`), which every fresh CLAIM and IDEM.BEGIN paid an index
/// insert (and its redo) for, only so that cleanup could find expired rows.
/// Every statement already reads an expired row as absent, so cleanup only
/// bounds storage: it now finds them by a sweep in key order, a bounded
/// batch of keys per table per call, resumed where the last call stopped
/// (`idem_cleanup_cursor`, one row; NULL: start at the first key). The
/// other tables keep their expiry indexes (no hot path inserts into them).
const V6: &[&str] = &[
    DROP_CLAIMS_EXP[0],
    DROP_CLAIMS_EXP[1],
    DROP_CLAIMS_EXP[2],
    DROP_CLAIMS_EXP[3],
    DROP_RECORDS_EXP[0],
    DROP_RECORDS_EXP[1],
    DROP_RECORDS_EXP[2],
    DROP_RECORDS_EXP[3],
    "CREATE TABLE IF NOT EXISTS idem_cleanup_cursor (
        id             INT            NOT NULL PRIMARY KEY,
        records_after  VARBINARY(@KEY_BYTES_MAX@) NULL,
        claims_after   VARBINARY(@KEY_BYTES_MAX@) NULL
    ) ENGINE = InnoDB",
    "INSERT IGNORE INTO idem_cleanup_cursor (id, records_after, claims_after) VALUES (1, NULL, NULL)",
];

/// How long after its `expires_at_ms` a done record or a tombstone stays
/// before cleanup deletes it: longer than any backend statement can take
/// between drawing a fence and looking the key up (see the module docs), so
/// a deleted record's fence is never above a fence still in flight.
pub const FORGET_GRACE_MS: u64 = 3_600_000;

// A statement waits at most a few times `lock_timeout_ms` (bounded by
// TIMEOUT_MS_MAX); the running records' own retention must cover the grace.
const _: () = assert!(FORGET_GRACE_MS >= 6 * idem_sql::pool::TIMEOUT_MS_MAX, "the grace outlasts lock waits");
const _: () = assert!(FORGET_GRACE_MS <= idem_core::limits::RUNNING_RETAIN_MS, "running records wait as long");

/// The fence sequence's values cached by the server: a restart or a crash
/// skips the unused rest of a cache (a gap), never hands a value out twice.
pub(crate) const FENCE_SEQ_CACHE: u32 = 1_000;

/// Fences left unused between the last `idem_fences` id and the sequence's
/// start, for grants that processes still running the old routines make
/// while the migration runs.
pub(crate) const FENCE_SEQ_MARGIN: u64 = 1_000_000;

/// The engine's time in milliseconds since the Unix epoch, or the session's
/// test clock when set (docs/backends.md): the body of `idem_now_ms()`, and
/// written out in the backend's one-statement fast paths, which so avoid a
/// stored-function call.
pub(crate) const NOW_MS_SQL: &str =
    "COALESCE(@idem_test_now_ms, TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)";

/// The statement (inside a routine) that sets `v_fence` to a new fence.
pub(crate) fn fence_draw(mariadb: bool) -> &'static str {
    if mariadb {
        "SET v_fence = NEXT VALUE FOR idem_fence_seq;"
    } else {
        "INSERT INTO idem_fences () VALUES (); SET v_fence = LAST_INSERT_ID();"
    }
}

/// The longest hex text of a key the routines read out of JSON (CLAIM.ALL's
/// keys, FSM.MOVE's states): room for the widest key's two hex digits a byte.
pub(crate) const KEY_HEX_CHARS_MAX: usize = 1_100;
const _: () = assert!(KEY_HEX_CHARS_MAX >= 2 * idem_core::Limits::KEY_BYTES_CONTRACT_MAX);

/// A migration statement as run on this engine: the key widths and every
/// shared constant written in.
pub(crate) fn statement_text(sql: &str) -> String {
    idem_core::limits::with_engine_constants(sql).replace("@KEY_HEX_CHARS_MAX@", &KEY_HEX_CHARS_MAX.to_string())
}

/// A routine's CREATE statement as installed on this engine: the fence
/// draw, the grace, the clock and every shared constant written in.
pub(crate) fn routine_text(create: &str, mariadb: bool) -> String {
    let text = create
        .replace("@FENCE_DRAW@", fence_draw(mariadb))
        .replace("@FORGET_GRACE_MS@", &FORGET_GRACE_MS.to_string())
        .replace("@NOW_MS@", NOW_MS_SQL);
    statement_text(&text)
}

/// Every stored routine as `(kind, name, CREATE statement)`. Re-created
/// (DROP, then CREATE) whenever the version moves, so a changed routine only
/// needs a new (possibly empty) step. Between the DROP and the CREATE a
/// concurrent CALL of that routine fails; upgrades are rare and short.
pub(crate) const ROUTINES: &[(&str, &str, &str)] = &[
    (
        "FUNCTION",
        "idem_now_ms",
        // A session that set @idem_test_now_ms reads that instead: the test
        // clock of docs/backends.md, set only by a test build of idem, and
        // only on its own connections. Unset (every other session), the
        // user variable is NULL: no table read.
        "CREATE FUNCTION idem_now_ms() RETURNS BIGINT NOT DETERMINISTIC NO SQL RETURN @NOW_MS@",
    ),
    // IDEM.BEGIN -> (status, fence, n, result): 'started' (fence, n = attempt),
    // 'running' (fence, n = left_ms), 'done' (result) or 'mismatch'.
    (
        "PROCEDURE",
        "idem_begin",
        "CREATE PROCEDURE idem_begin(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_fp VARBINARY(@KEY_BYTES_MAX@), IN p_lease_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_state VARCHAR(8);
            DECLARE v_fp VARBINARY(@KEY_BYTES_MAX@);
            DECLARE v_fence, v_exp, v_now BIGINT;
            DECLARE v_attempt INT;
            DECLARE v_result MEDIUMBLOB;
            INSERT INTO idem_records (`key`, fingerprint, state, fence, attempt, expires_at_ms)
            VALUES (p_key, p_fp, 'new', 0, 0, 0)
            ON DUPLICATE KEY UPDATE `key` = `key`;
            SELECT state, fingerprint, fence, attempt, expires_at_ms, result
            INTO v_state, v_fp, v_fence, v_attempt, v_exp, v_result
            FROM idem_records WHERE `key` = p_key FOR UPDATE;
            SET v_now = idem_now_ms();
            IF v_state IN ('new', 'gone') OR (v_state = 'done' AND v_exp <= v_now)
               OR (v_state = 'running' AND v_exp + @RUNNING_RETAIN_MS@ <= v_now) THEN
                -- New, aborted or deleted (a tombstone), or forgotten: attempt
                -- 1 with this caller's fingerprint, the fence drawn under the
                -- row lock, so above the tombstone's.
                @FENCE_DRAW@
                UPDATE idem_records
                SET fingerprint = p_fp, state = 'running', fence = v_fence, attempt = 1,
                    expires_at_ms = v_now + p_lease_ms, result = NULL
                WHERE `key` = p_key;
                SELECT 'started' AS status, v_fence AS fence, 1 AS n, NULL AS result;
            ELSEIF p_fp IS NOT NULL AND v_fp IS NOT NULL AND v_fp <> p_fp THEN
                SELECT 'mismatch' AS status, NULL AS fence, NULL AS n, NULL AS result;
            ELSEIF v_state = 'done' THEN
                SELECT 'done' AS status, NULL AS fence, NULL AS n, v_result AS result;
            ELSEIF v_exp > v_now THEN
                SELECT 'running' AS status, v_fence AS fence, v_exp - v_now AS n, NULL AS result;
            ELSE
                -- The lease ran out: take over with a new, larger fence. The
                -- record keeps the fingerprint of the BEGIN that created it,
                -- also none (docs/commands.md), as the core Machine does.
                @FENCE_DRAW@
                UPDATE idem_records
                SET fence = v_fence, attempt = v_attempt + 1, expires_at_ms = v_now + p_lease_ms
                WHERE `key` = p_key;
                SELECT 'started' AS status, v_fence AS fence, v_attempt + 1 AS n, NULL AS result;
            END IF;
        END",
    ),
    // IDEM.COMMIT -> (status): 'ok' or 'stale' (not the fence of a live lease).
    (
        "PROCEDURE",
        "idem_commit",
        "CREATE PROCEDURE idem_commit(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_fence BIGINT, IN p_result MEDIUMBLOB,
                                      IN p_keep_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_state VARCHAR(8);
            DECLARE v_fence, v_exp, v_now BIGINT;
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            SELECT state, fence, expires_at_ms INTO v_state, v_fence, v_exp
            FROM idem_records WHERE `key` = p_key FOR UPDATE;
            SET v_now = idem_now_ms();
            IF v_found AND v_state = 'running' AND v_fence = p_fence AND v_exp > v_now THEN
                UPDATE idem_records SET state = 'done', result = p_result, expires_at_ms = v_now + p_keep_ms
                WHERE `key` = p_key;
                SELECT 'ok' AS status;
            ELSE
                SELECT 'stale' AS status;
            END IF;
        END",
    ),
    // IDEM.ABORT -> (status): 'ok' (the record becomes a tombstone, which
    // reads as absent) or 'stale'.
    (
        "PROCEDURE",
        "idem_abort",
        "CREATE PROCEDURE idem_abort(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_fence BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_state VARCHAR(8);
            DECLARE v_fence, v_exp, v_now BIGINT;
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            SELECT state, fence, expires_at_ms INTO v_state, v_fence, v_exp
            FROM idem_records WHERE `key` = p_key FOR UPDATE;
            SET v_now = idem_now_ms();
            IF v_found AND v_state = 'running' AND v_fence = p_fence AND v_exp > v_now THEN
                -- A tombstone, not a DELETE: the fence stays (module docs).
                UPDATE idem_records
                SET state = 'gone', fingerprint = NULL, result = NULL, expires_at_ms = v_now
                WHERE `key` = p_key;
                SELECT 'ok' AS status;
            ELSE
                SELECT 'stale' AS status;
            END IF;
        END",
    ),
    // IDEM.RENEW -> (status): 'renewed' (the lease is now p_lease_ms from
    // now) or 'stale' (as COMMIT).
    (
        "PROCEDURE",
        "idem_record_renew",
        "CREATE PROCEDURE idem_record_renew(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_fence BIGINT, IN p_lease_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_state VARCHAR(8);
            DECLARE v_fence, v_exp, v_now BIGINT;
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            SELECT state, fence, expires_at_ms INTO v_state, v_fence, v_exp
            FROM idem_records WHERE `key` = p_key FOR UPDATE;
            SET v_now = idem_now_ms();
            IF v_found AND v_state = 'running' AND v_fence = p_fence AND v_exp > v_now THEN
                UPDATE idem_records SET expires_at_ms = v_now + p_lease_ms WHERE `key` = p_key;
                SELECT 'renewed' AS status;
            ELSE
                SELECT 'stale' AS status;
            END IF;
        END",
    ),
    // IDEM.GET -> (status, fence, left_ms, result): 'absent', 'running', 'done'.
    (
        "PROCEDURE",
        "idem_get",
        "CREATE PROCEDURE idem_get(IN p_key VARBINARY(@KEY_BYTES_MAX@))
        READS SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_state VARCHAR(8);
            DECLARE v_fence, v_exp, v_now BIGINT;
            DECLARE v_result MEDIUMBLOB;
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            SELECT state, fence, expires_at_ms, result INTO v_state, v_fence, v_exp, v_result
            FROM idem_records WHERE `key` = p_key;
            SET v_now = idem_now_ms();
            IF NOT v_found OR v_state NOT IN ('running', 'done') OR v_exp <= v_now THEN
                SELECT 'absent' AS status, NULL AS fence, NULL AS left_ms, NULL AS result;
            ELSEIF v_state = 'done' THEN
                SELECT 'done' AS status, NULL AS fence, NULL AS left_ms, v_result AS result;
            ELSE
                SELECT 'running' AS status, v_fence AS fence, v_exp - v_now AS left_ms, NULL AS result;
            END IF;
        END",
    ),
    // IDEM.DEL -> (n): 1 if a record not yet forgotten was removed (it
    // becomes a tombstone, which reads as absent), else 0. The UPDATE always
    // changes `state`, so ROW_COUNT() is the same with or without the
    // client's CLIENT_FOUND_ROWS flag.
    (
        "PROCEDURE",
        "idem_del",
        "CREATE PROCEDURE idem_del(IN p_key VARBINARY(@KEY_BYTES_MAX@))
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_now BIGINT DEFAULT idem_now_ms();
            UPDATE idem_records
            SET state = 'gone', fingerprint = NULL, result = NULL, expires_at_ms = v_now
            WHERE `key` = p_key
              AND ((state = 'done' AND expires_at_ms > v_now)
                   OR (state = 'running' AND expires_at_ms + @RUNNING_RETAIN_MS@ > v_now));
            SELECT ROW_COUNT() AS n;
        END",
    ),
    // CLAIM -> (status, owner): 'claimed' or 'held' (owner). p_ttl_ms NULL: until released.
    (
        "PROCEDURE",
        "idem_claim",
        "CREATE PROCEDURE idem_claim(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_owner VARBINARY(@KEY_BYTES_MAX@), IN p_ttl_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_owner VARBINARY(@KEY_BYTES_MAX@);
            DECLARE v_exp, v_now BIGINT;
            INSERT INTO idem_claims (`key`, owner, expires_at_ms) VALUES (p_key, p_owner, NULL)
            ON DUPLICATE KEY UPDATE `key` = `key`;
            SELECT owner, expires_at_ms INTO v_owner, v_exp FROM idem_claims WHERE `key` = p_key FOR UPDATE;
            SET v_now = idem_now_ms();
            IF v_owner = p_owner OR v_exp <= v_now THEN
                UPDATE idem_claims SET owner = p_owner, expires_at_ms = v_now + p_ttl_ms WHERE `key` = p_key;
                SELECT 'claimed' AS status, NULL AS owner;
            ELSE
                SELECT 'held' AS status, v_owner AS owner;
            END IF;
        END",
    ),
    // CLAIM.ALL -> (status, key, owner): one 'claimed' row, or one 'held' row
    // per conflicting key in the order given. p_keys: a JSON array of the keys
    // in hex, without repeats. All or nothing (a savepoint undoes the
    // placeholders when some key is held).
    (
        "PROCEDURE",
        "idem_claim_all",
        "CREATE PROCEDURE idem_claim_all(IN p_owner VARBINARY(@KEY_BYTES_MAX@), IN p_keys LONGTEXT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_now BIGINT;
            DECLARE v_conflicts INT;
            SAVEPOINT idem_claim_all;
            -- Create or lock every row, in key order so that overlapping
            -- CLAIM.ALLs queue instead of deadlocking.
            INSERT INTO idem_claims (`key`, owner, expires_at_ms)
            SELECT UNHEX(j.h), p_owner, NULL
            FROM JSON_TABLE(p_keys, '$[*]' COLUMNS (h VARCHAR(@KEY_HEX_CHARS_MAX@) PATH '$')) AS j
            ORDER BY UNHEX(j.h)
            ON DUPLICATE KEY UPDATE `key` = idem_claims.`key`;
            SET v_now = idem_now_ms();
            SELECT COUNT(*) INTO v_conflicts
            FROM JSON_TABLE(p_keys, '$[*]' COLUMNS (h VARCHAR(@KEY_HEX_CHARS_MAX@) PATH '$')) AS j
            JOIN idem_claims c ON c.`key` = UNHEX(j.h)
            WHERE c.owner <> p_owner AND (c.expires_at_ms IS NULL OR c.expires_at_ms > v_now);
            IF v_conflicts > 0 THEN
                -- Undo the placeholders; the conflicting rows stay as they are.
                ROLLBACK TO SAVEPOINT idem_claim_all;
                SELECT 'held' AS status, c.`key` AS `key`, c.owner AS owner
                FROM JSON_TABLE(p_keys, '$[*]' COLUMNS (ord FOR ORDINALITY, h VARCHAR(@KEY_HEX_CHARS_MAX@) PATH '$')) AS j
                JOIN idem_claims c ON c.`key` = UNHEX(j.h)
                WHERE c.owner <> p_owner AND (c.expires_at_ms IS NULL OR c.expires_at_ms > v_now)
                ORDER BY j.ord;
            ELSE
                UPDATE idem_claims c
                JOIN JSON_TABLE(p_keys, '$[*]' COLUMNS (h VARCHAR(@KEY_HEX_CHARS_MAX@) PATH '$')) AS j ON c.`key` = UNHEX(j.h)
                SET c.owner = p_owner, c.expires_at_ms = NULL;
                RELEASE SAVEPOINT idem_claim_all;
                SELECT 'claimed' AS status, NULL AS `key`, NULL AS owner;
            END IF;
        END",
    ),
    // RELEASE -> (n): 1 if the owner's live claim was removed, else 0.
    (
        "PROCEDURE",
        "idem_release",
        "CREATE PROCEDURE idem_release(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_owner VARBINARY(@KEY_BYTES_MAX@))
        MODIFIES SQL DATA
        BEGIN
            DELETE FROM idem_claims
            WHERE `key` = p_key AND owner = p_owner AND (expires_at_ms IS NULL OR expires_at_ms > idem_now_ms());
            SELECT ROW_COUNT() AS n;
        END",
    ),
    // OWNER -> (owner): the live claim's owner, or NULL.
    (
        "PROCEDURE",
        "idem_owner",
        "CREATE PROCEDURE idem_owner(IN p_key VARBINARY(@KEY_BYTES_MAX@))
        READS SQL DATA
        BEGIN
            SELECT (SELECT owner FROM idem_claims
                    WHERE `key` = p_key AND (expires_at_ms IS NULL OR expires_at_ms > idem_now_ms())) AS owner;
        END",
    ),
    // LOCK -> (status, fence, holder, left_ms): 'acquired' (fence) or 'busy'
    // (holder, left_ms). A re-LOCK by the live holder extends the lease and
    // keeps the fence; after the lease ran out anyone gets a new fence.
    (
        "PROCEDURE",
        "idem_lock",
        "CREATE PROCEDURE idem_lock(IN p_name VARBINARY(@KEY_BYTES_MAX@), IN p_owner VARBINARY(@KEY_BYTES_MAX@), IN p_lease_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_owner VARBINARY(@KEY_BYTES_MAX@);
            DECLARE v_fence, v_exp, v_now BIGINT;
            INSERT INTO idem_locks (name, owner, fence, expires_at_ms) VALUES (p_name, p_owner, 0, 0)
            ON DUPLICATE KEY UPDATE name = name;
            SELECT owner, fence, expires_at_ms INTO v_owner, v_fence, v_exp
            FROM idem_locks WHERE name = p_name FOR UPDATE;
            SET v_now = idem_now_ms();
            IF v_exp <= v_now THEN
                @FENCE_DRAW@
                UPDATE idem_locks SET owner = p_owner, fence = v_fence, expires_at_ms = v_now + p_lease_ms
                WHERE name = p_name;
                SELECT 'acquired' AS status, v_fence AS fence, NULL AS holder, NULL AS left_ms;
            ELSEIF v_owner = p_owner THEN
                UPDATE idem_locks SET expires_at_ms = v_now + p_lease_ms WHERE name = p_name;
                SELECT 'acquired' AS status, v_fence AS fence, NULL AS holder, NULL AS left_ms;
            ELSE
                SELECT 'busy' AS status, NULL AS fence, v_owner AS holder, v_exp - v_now AS left_ms;
            END IF;
        END",
    ),
    // RENEW -> (status, fence): 'renewed' (fence) while the owner's lease is live, else 'lost'.
    (
        "PROCEDURE",
        "idem_renew",
        "CREATE PROCEDURE idem_renew(IN p_name VARBINARY(@KEY_BYTES_MAX@), IN p_owner VARBINARY(@KEY_BYTES_MAX@), IN p_lease_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_owner VARBINARY(@KEY_BYTES_MAX@);
            DECLARE v_fence, v_exp, v_now BIGINT;
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            SELECT owner, fence, expires_at_ms INTO v_owner, v_fence, v_exp
            FROM idem_locks WHERE name = p_name FOR UPDATE;
            SET v_now = idem_now_ms();
            IF v_found AND v_owner = p_owner AND v_exp > v_now THEN
                UPDATE idem_locks SET expires_at_ms = v_now + p_lease_ms WHERE name = p_name;
                SELECT 'renewed' AS status, v_fence AS fence;
            ELSE
                SELECT 'lost' AS status, NULL AS fence;
            END IF;
        END",
    ),
    // UNLOCK -> (n): 1 if the owner's live lock was released, else 0.
    (
        "PROCEDURE",
        "idem_unlock",
        "CREATE PROCEDURE idem_unlock(IN p_name VARBINARY(@KEY_BYTES_MAX@), IN p_owner VARBINARY(@KEY_BYTES_MAX@))
        MODIFIES SQL DATA
        BEGIN
            DELETE FROM idem_locks WHERE name = p_name AND owner = p_owner AND expires_at_ms > idem_now_ms();
            SELECT ROW_COUNT() AS n;
        END",
    ),
    // LOCK.INFO -> (status, owner, fence, left_ms): 'free' or 'held'.
    (
        "PROCEDURE",
        "idem_lock_info",
        "CREATE PROCEDURE idem_lock_info(IN p_name VARBINARY(@KEY_BYTES_MAX@))
        READS SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_owner VARBINARY(@KEY_BYTES_MAX@);
            DECLARE v_fence, v_exp, v_now BIGINT;
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            SELECT owner, fence, expires_at_ms INTO v_owner, v_fence, v_exp FROM idem_locks WHERE name = p_name;
            SET v_now = idem_now_ms();
            IF v_found AND v_exp > v_now THEN
                SELECT 'held' AS status, v_owner AS owner, v_fence AS fence, v_exp - v_now AS left_ms;
            ELSE
                SELECT 'free' AS status, NULL AS owner, NULL AS fence, NULL AS left_ms;
            END IF;
        END",
    ),
    // TOKEN.NEW: stores a token the caller generated (at least 128 random bits).
    (
        "PROCEDURE",
        "idem_token_new",
        "CREATE PROCEDURE idem_token_new(IN p_scope VARBINARY(@KEY_BYTES_MAX@), IN p_token VARBINARY(@KEY_BYTES_MAX@), IN p_ttl_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            INSERT INTO idem_tokens (scope, token, expires_at_ms)
            VALUES (p_scope, p_token, idem_now_ms() + p_ttl_ms)
            ON DUPLICATE KEY UPDATE expires_at_ms = VALUES(expires_at_ms);
            SELECT 'ok' AS status;
        END",
    ),
    // TOKEN.USE -> (n): 1 if the token was live (it is now spent), else 0.
    (
        "PROCEDURE",
        "idem_token_use",
        "CREATE PROCEDURE idem_token_use(IN p_scope VARBINARY(@KEY_BYTES_MAX@), IN p_token VARBINARY(@KEY_BYTES_MAX@))
        MODIFIES SQL DATA
        BEGIN
            DELETE FROM idem_tokens WHERE scope = p_scope AND token = p_token AND expires_at_ms > idem_now_ms();
            SELECT ROW_COUNT() AS n;
        END",
    ),
    // COUNTER.ADD -> (status, value): 'ok' (new value), 'refused' (current
    // value) or 'replayed' (the value the op id's first application produced).
    (
        "PROCEDURE",
        "idem_counter_add",
        "CREATE PROCEDURE idem_counter_add(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_delta BIGINT, IN p_min BIGINT,
                                           IN p_max BIGINT, IN p_op VARBINARY(@KEY_BYTES_MAX@), IN p_keep_ms BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_cur, v_old, v_now BIGINT;
            -- DECIMAL, so that i64 overflow is a refusal and not an error.
            DECLARE v_new DECIMAL(21, 0);
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            INSERT INTO idem_counters (`key`, value) VALUES (p_key, 0) ON DUPLICATE KEY UPDATE `key` = `key`;
            SELECT value INTO v_cur FROM idem_counters WHERE `key` = p_key FOR UPDATE;
            SET v_now = idem_now_ms();
            IF p_op IS NOT NULL THEN
                SELECT value INTO v_old FROM idem_counter_ops
                WHERE `key` = p_key AND op = p_op AND expires_at_ms > v_now FOR UPDATE;
            END IF;
            IF p_op IS NOT NULL AND v_found THEN
                IF v_cur = 0 THEN
                    DELETE FROM idem_counters WHERE `key` = p_key;
                END IF;
                SELECT 'replayed' AS status, v_old AS value;
            ELSE
                SET v_new = CAST(v_cur AS DECIMAL(21, 0)) + p_delta;
                IF v_new < -9223372036854775808 OR v_new > 9223372036854775807
                   OR (p_min IS NOT NULL AND v_new < p_min) OR (p_max IS NOT NULL AND v_new > p_max) THEN
                    IF v_cur = 0 THEN
                        DELETE FROM idem_counters WHERE `key` = p_key;  -- an absent counter stays absent
                    END IF;
                    SELECT 'refused' AS status, v_cur AS value;
                ELSE
                    IF v_new = 0 THEN
                        DELETE FROM idem_counters WHERE `key` = p_key;
                    ELSE
                        UPDATE idem_counters SET value = v_new WHERE `key` = p_key;
                    END IF;
                    IF p_op IS NOT NULL THEN
                        INSERT INTO idem_counter_ops (`key`, op, value, expires_at_ms)
                        VALUES (p_key, p_op, v_new, v_now + p_keep_ms)
                        ON DUPLICATE KEY UPDATE value = VALUES(value), expires_at_ms = VALUES(expires_at_ms);
                    END IF;
                    SELECT 'ok' AS status, CAST(v_new AS SIGNED) AS value;
                END IF;
            END IF;
        END",
    ),
    // VALUE.SET -> (status, version): 'ok' (new version) or 'conflict'
    // (current version, 0 if absent). p_if_version NULL: unconditional; 0: only if absent.
    (
        "PROCEDURE",
        "idem_value_set",
        "CREATE PROCEDURE idem_value_set(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_value MEDIUMBLOB, IN p_if_version BIGINT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_ver BIGINT;
            INSERT INTO idem_values (`key`, value, version) VALUES (p_key, '', 0)
            ON DUPLICATE KEY UPDATE `key` = `key`;
            SELECT version INTO v_ver FROM idem_values WHERE `key` = p_key FOR UPDATE;
            IF p_if_version IS NULL OR p_if_version = v_ver THEN
                UPDATE idem_values SET value = p_value, version = v_ver + 1 WHERE `key` = p_key;
                SELECT 'ok' AS status, v_ver + 1 AS version;
            ELSE
                IF v_ver = 0 THEN
                    DELETE FROM idem_values WHERE `key` = p_key;
                END IF;
                SELECT 'conflict' AS status, v_ver AS version;
            END IF;
        END",
    ),
    // FSM.MOVE -> (status, state): 'moved' (to), 'already' (to) or 'refused'
    // (current; 'none' for an absent key). p_from: a JSON array of the
    // allowed start states in hex; 'none' (hex 6e6f6e65) stands for absent.
    (
        "PROCEDURE",
        "idem_fsm_move",
        "CREATE PROCEDURE idem_fsm_move(IN p_key VARBINARY(@KEY_BYTES_MAX@), IN p_to VARBINARY(@KEY_BYTES_MAX@), IN p_from LONGTEXT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_cur VARBINARY(@KEY_BYTES_MAX@);
            DECLARE v_allowed INT;
            INSERT INTO idem_fsm (`key`, state) VALUES (p_key, '') ON DUPLICATE KEY UPDATE `key` = `key`;
            SELECT state INTO v_cur FROM idem_fsm WHERE `key` = p_key FOR UPDATE;
            IF v_cur = p_to THEN
                SELECT 'already' AS status, p_to AS state;
            ELSE
                IF v_cur = '' THEN
                    SET v_cur = 'none';
                END IF;
                SELECT COUNT(*) INTO v_allowed
                FROM JSON_TABLE(p_from, '$[*]' COLUMNS (h VARCHAR(@KEY_HEX_CHARS_MAX@) PATH '$')) AS j
                WHERE UNHEX(j.h) = v_cur;
                IF v_allowed > 0 THEN
                    UPDATE idem_fsm SET state = p_to WHERE `key` = p_key;
                    SELECT 'moved' AS status, p_to AS state;
                ELSE
                    DELETE FROM idem_fsm WHERE `key` = p_key AND state = '';
                    SELECT 'refused' AS status, v_cur AS state;
                END IF;
            END IF;
        END",
    ),
    // SLOTS.RESERVE -> (status, slot, holder): one 'reserved' row; one
    // 'conflict' row per slot held by another holder; 'outside' (slot = the
    // SIZE) when p_last is not below it; 'size' (slot = the resource's SIZE)
    // when p_size differs from an existing resource's. p_size NULL: the
    // existing size, or 48 for a new resource.
    (
        "PROCEDURE",
        "idem_slots_reserve",
        "CREATE PROCEDURE idem_slots_reserve(IN p_resource VARBINARY(@KEY_BYTES_MAX@), IN p_first INT, IN p_last INT,
                                             IN p_holder VARBINARY(@KEY_BYTES_MAX@), IN p_size INT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_size, v_conflicts, v_i INT;
            DECLARE v_new BOOLEAN DEFAULT FALSE;
            INSERT INTO idem_slot_resources (resource, size) VALUES (p_resource, 0)
            ON DUPLICATE KEY UPDATE resource = resource;
            SELECT size INTO v_size FROM idem_slot_resources WHERE resource = p_resource FOR UPDATE;
            IF v_size = 0 THEN
                SET v_new = TRUE, v_size = COALESCE(p_size, 48);
            END IF;
            IF NOT v_new AND p_size IS NOT NULL AND p_size <> v_size THEN
                SELECT 'size' AS status, v_size AS slot, NULL AS holder;
            ELSEIF p_last >= v_size THEN
                IF v_new THEN
                    DELETE FROM idem_slot_resources WHERE resource = p_resource;
                END IF;
                SELECT 'outside' AS status, v_size AS slot, NULL AS holder;
            ELSE
                SELECT COUNT(*) INTO v_conflicts FROM idem_slots
                WHERE resource = p_resource AND slot BETWEEN p_first AND p_last AND holder <> p_holder;
                IF v_conflicts > 0 THEN
                    SELECT 'conflict' AS status, slot, holder FROM idem_slots
                    WHERE resource = p_resource AND slot BETWEEN p_first AND p_last AND holder <> p_holder
                    ORDER BY slot;
                ELSE
                    IF v_new THEN
                        UPDATE idem_slot_resources SET size = v_size WHERE resource = p_resource;
                    END IF;
                    SET v_i = p_first;
                    WHILE v_i <= p_last DO
                        INSERT INTO idem_slots (resource, slot, holder) VALUES (p_resource, v_i, p_holder)
                        ON DUPLICATE KEY UPDATE holder = holder;
                        SET v_i = v_i + 1;
                    END WHILE;
                    SELECT 'reserved' AS status, NULL AS slot, NULL AS holder;
                END IF;
            END IF;
        END",
    ),
    // SLOTS.RELEASE -> (n): how many of the holder's slots in the range were
    // freed. A resource left with no held slot is forgotten.
    (
        "PROCEDURE",
        "idem_slots_release",
        "CREATE PROCEDURE idem_slots_release(IN p_resource VARBINARY(@KEY_BYTES_MAX@), IN p_first INT, IN p_last INT,
                                             IN p_holder VARBINARY(@KEY_BYTES_MAX@))
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_found BOOLEAN DEFAULT TRUE;
            DECLARE v_size, v_n INT DEFAULT 0;
            DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = FALSE;
            SELECT size INTO v_size FROM idem_slot_resources WHERE resource = p_resource FOR UPDATE;
            IF v_found THEN
                DELETE FROM idem_slots
                WHERE resource = p_resource AND slot BETWEEN p_first AND p_last AND holder = p_holder;
                SET v_n = ROW_COUNT();
                IF v_n > 0 AND NOT EXISTS (SELECT 1 FROM idem_slots WHERE resource = p_resource) THEN
                    DELETE FROM idem_slot_resources WHERE resource = p_resource;
                END IF;
            END IF;
            SELECT v_n AS n;
        END",
    ),
    // Deletes rows whose time has passed (done records and tombstones a
    // grace later, abandoned running records RUNNING_RETAIN_MS later, see the
    // module docs), and fence rows older than the newest; returns how many
    // rows went. Records and claims have no index on their expiry (a fresh
    // BEGIN or CLAIM would pay for it): each call examines the next p_batch
    // keys of each after its cursor (idem_cleanup_cursor) and deletes the
    // expired ones among them; a short batch reached the last key, and the
    // next call starts over. The other tables delete by their expiry index,
    // up to p_batch rows each. Two cleanups running at once may sweep the
    // same batch: the deletes are idempotent, only the work is repeated.
    (
        "PROCEDURE",
        "idem_cleanup",
        "CREATE PROCEDURE idem_cleanup(IN p_batch INT)
        MODIFIES SQL DATA
        BEGIN
            DECLARE v_now BIGINT DEFAULT idem_now_ms();
            DECLARE v_n BIGINT DEFAULT 0;
            DECLARE v_max, v_scanned BIGINT;
            DECLARE v_after, v_first, v_last VARBINARY(@KEY_BYTES_MAX@);
            -- Records: the batch of keys after the cursor, first to last.
            SELECT records_after INTO v_after FROM idem_cleanup_cursor WHERE id = 1;
            IF v_after IS NULL THEN
                SELECT MIN(k), MAX(k), COUNT(*) INTO v_first, v_last, v_scanned
                FROM (SELECT `key` AS k FROM idem_records ORDER BY `key` LIMIT p_batch) s;
            ELSE
                SELECT MIN(k), MAX(k), COUNT(*) INTO v_first, v_last, v_scanned
                FROM (SELECT `key` AS k FROM idem_records WHERE `key` > v_after ORDER BY `key` LIMIT p_batch) s;
            END IF;
            DELETE FROM idem_records
            WHERE `key` BETWEEN v_first AND v_last
              AND ((state IN ('done', 'gone') AND expires_at_ms <= v_now - @FORGET_GRACE_MS@)
                   OR (state = 'running' AND expires_at_ms <= v_now - @RUNNING_RETAIN_MS@));
            SET v_n = v_n + ROW_COUNT();
            IF v_scanned < p_batch THEN
                SET v_last = NULL;
            END IF;
            IF NOT (v_last <=> v_after) THEN
                UPDATE idem_cleanup_cursor SET records_after = v_last WHERE id = 1;
            END IF;
            -- Claims, the same way (NULL expiry: until released).
            SELECT claims_after INTO v_after FROM idem_cleanup_cursor WHERE id = 1;
            IF v_after IS NULL THEN
                SELECT MIN(k), MAX(k), COUNT(*) INTO v_first, v_last, v_scanned
                FROM (SELECT `key` AS k FROM idem_claims ORDER BY `key` LIMIT p_batch) s;
            ELSE
                SELECT MIN(k), MAX(k), COUNT(*) INTO v_first, v_last, v_scanned
                FROM (SELECT `key` AS k FROM idem_claims WHERE `key` > v_after ORDER BY `key` LIMIT p_batch) s;
            END IF;
            DELETE FROM idem_claims WHERE `key` BETWEEN v_first AND v_last AND expires_at_ms <= v_now;
            SET v_n = v_n + ROW_COUNT();
            IF v_scanned < p_batch THEN
                SET v_last = NULL;
            END IF;
            IF NOT (v_last <=> v_after) THEN
                UPDATE idem_cleanup_cursor SET claims_after = v_last WHERE id = 1;
            END IF;
            DELETE FROM idem_locks WHERE expires_at_ms <= v_now LIMIT p_batch;
            SET v_n = v_n + ROW_COUNT();
            DELETE FROM idem_tokens WHERE expires_at_ms <= v_now LIMIT p_batch;
            SET v_n = v_n + ROW_COUNT();
            DELETE FROM idem_counter_ops WHERE expires_at_ms <= v_now LIMIT p_batch;
            SET v_n = v_n + ROW_COUNT();
            SELECT MAX(id) INTO v_max FROM idem_fences;
            DELETE FROM idem_fences WHERE id < v_max LIMIT p_batch;
            SET v_n = v_n + ROW_COUNT();
            SELECT v_n AS n;
        END",
    ),
];

#[cfg(test)]
mod tests {
    /// The routines at [`super::SCHEMA_VERSION`], as [`idem_sql::routines_digest`]
    /// of their text with every constant filled in. Changed routines need a
    /// new (possibly empty) step, the version bumped and the digest recorded here.
    const ROUTINES_AT_VERSION: (i32, u64) = (6, 0x81b3_e458_c375_b33e);

    #[test]
    fn changed_routines_come_with_a_new_schema_version() {
        let texts: Vec<String> = super::ROUTINES
            .iter()
            .flat_map(|(_, _, create)| [super::routine_text(create, true), super::routine_text(create, false)])
            .collect();
        assert_eq!(
            (super::SCHEMA_VERSION, idem_sql::routines_digest(texts.iter().map(String::as_str))),
            ROUTINES_AT_VERSION,
            "the routines changed: add a schema step, bump SCHEMA_VERSION and record the new digest (left: this build)"
        );
    }

    #[test]
    fn routines_take_every_constant_from_rust() {
        let grace = idem_core::limits::RUNNING_RETAIN_MS.to_string();
        let mut uses = 0;
        for (_, name, create) in super::ROUTINES {
            let text = super::routine_text(create, true);
            // On MariaDB every fence comes from the sequence; `idem_fences`
            // is only trimmed.
            assert!(!text.contains("idem_fences") || *name == "idem_cleanup", "{name} draws from idem_fences");
            let mysql = super::routine_text(create, false);
            assert!(!mysql.contains("NEXT VALUE"), "{name} uses a sequence on MySQL");
            // A placeholder is `@NAME@` in capitals; `@idem_test_now_ms` is a
            // session variable.
            let left = text.split('@').skip(1).any(|s| s.starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(!left, "a placeholder is left in {name}");
            assert!(!create.contains(&grace), "{name} names the grace by its placeholder");
            uses += text.matches(&grace).count();
        }
        assert_eq!(uses, 3, "the running-record grace appears where the routines use it");
        let cleanup = super::ROUTINES.iter().find(|(_, name, _)| *name == "idem_cleanup").unwrap().2;
        let forget = super::routine_text(cleanup, true);
        assert_eq!(forget.matches(&super::FORGET_GRACE_MS.to_string()).count(), 1, "done records and tombstones");
    }
}
