//! idem on MySQL 8.0+ and MariaDB 10.6+ (InnoDB).
//!
//! Every primitive is one stored procedure (`schema.rs`); the backend runs
//! each command as `START TRANSACTION; CALL idem_x(...); COMMIT` on a pooled
//! connection (reads run without a transaction), except CLAIM and IDEM.BEGIN
//! on MariaDB: one autocommit `INSERT … ON DUPLICATE KEY UPDATE … RETURNING`
//! each ([`FastSql`]), which makes the procedure's decision, or hands it to
//! the procedure when it cannot (an IDEM.BEGIN whose lease ran out). The
//! same procedures are what [`tx`] and other languages call inside their own
//! transactions (docs/backends-sql.md).
//!
//! Guarantees, and where they come from:
//! - **Time** is the database's: `UTC_TIMESTAMP(6)` inside the procedures
//!   (`idem_now_ms()`) and the fast statements, compared in the same
//!   statement that acts on it; the client's clock is never used for
//!   leases, TTLs or KEEPs.
//! - **Fences** come from the sequence `idem_fence_seq` on MariaDB and from
//!   AUTO_INCREMENT ids of `idem_fences` on MySQL: strictly increasing
//!   across the whole database, never handed out twice, also when the
//!   transaction that drew one rolls back or the server crashes (a
//!   sequence skips its unused cache). A key's fence is drawn while the key's
//!   row is locked, except by MariaDB's one-statement IDEM.BEGIN, which
//!   draws before InnoDB looks the key up; ABORT and IDEM.DEL leave
//!   tombstones and cleanup waits a grace before it forgets a record, so that
//!   fence still follows every grant of the key that took effect (the
//!   argument is in `schema.rs`). Gaps are normal.
//! - **WAIT** on IDEM.BEGIN and LOCK: parked callers poll (see
//!   `idem-sql`) with backoff from 2 ms doubling to
//!   50 ms, woken at once when this process ends the attempt or lock, and at
//!   the holder's lease end. Latency: immediate within one idem process, at
//!   most 50 ms across processes, 1 ms after a lease runs out. Waiters are
//!   served first come, first served among the callers of one idem process.
//! - Backend connections use READ COMMITTED (fewer gap locks, so fewer
//!   deadlocks) and `innodb_lock_wait_timeout` = the URL's
//!   `lock_timeout_ms` ([`idem_sql::PoolSettings`], 5 s by default); the
//!   procedures are also correct under REPEATABLE READ (every deciding read
//!   locks). A deadlock (error 1213) rolls the command back and it is retried
//!   up to [`RETRIES_MAX`] times.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command, Limits, Reply};
use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row, TxOpts, Value};
use tokio::task::JoinHandle;

use idem_core::outcome::{Begin, Claimed};
use idem_core::BackendError;
use idem_sql::{to_i64, BackendWaiters, Poll, SqlRow, SqlRunner};

mod schema;
pub mod tx;

/// How long after its time (a done record's KEEP, a tombstone's ABORT or
/// IDEM.DEL) cleanup keeps an idempotency record before deleting it, so
/// that a fence still in flight never follows a forgotten one.
pub use schema::FORGET_GRACE_MS;

// The pool's size, how long a command waits for a connection and
// `innodb_lock_wait_timeout` (how long a command waits for a row that a
// caller's own long transaction, see [`tx`], has locked before replying
// `BUSY`) are settings of the URL: [`idem_sql::PoolSettings`].

/// How long an idle pooled connection is kept before it is closed.
pub const POOL_IDLE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Times a command is retried after a deadlock (error 1213).
pub const RETRIES_MAX: usize = 3;
/// How often expired rows are deleted.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(2);
/// Most rows deleted per table per cleanup call; for idempotency records
/// and claims, which have no expiry index, also the keys each call examines
/// (a sweep in key order, `idem_cleanup` in `schema.rs`). So an expired
/// record or claim is deleted within about `rows / CLEANUP_BATCH_ROWS`
/// intervals of its time (one sweep of the table), and every command reads
/// it as absent meanwhile.
pub const CLEANUP_BATCH_ROWS: i64 = 1_000;
/// Most cleanup calls in one round (a backlog drains over several rounds).
const CLEANUP_ROUNDS_MAX: usize = 16;
/// How long `migrate` waits for another process's migration.
const MIGRATE_LOCK_WAIT_S: u32 = 60;
/// Prepared statements kept per connection (the backend uses about 25).
const STMT_CACHE_SIZE: usize = 64;

/// MySQL's error code for a deadlock, after which the transaction is rolled back.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// MySQL's error code for a lock wait timeout.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

/// The MySQL / MariaDB backend: a connection pool and a cleanup task.
pub struct MySqlBackend {
    inner: Arc<Inner>,
    cleanup: JoinHandle<()>,
}

struct Inner {
    pool: Pool,
    /// How long a command waits for a pooled connection (`pool_wait_ms`).
    pool_wait: Duration,
    waits: BackendWaiters,
    /// Set only by [`MySqlBackend::connect_with_test_clock`].
    test_clock: Option<idem_core::TestClock>,
    /// MariaDB (`INSERT … RETURNING` and sequences): CLAIM and IDEM.BEGIN
    /// first try one autocommit statement ([`FastSql`]); `None` on MySQL,
    /// where every write is START TRANSACTION / CALL / COMMIT.
    fast: Option<FastSql>,
    /// Picks CLAIM's first statement on MariaDB: [`CLAIM_INSERT`] while
    /// taken keys are rare, [`CLAIM_UPSERT`] otherwise.
    claim_mix: idem_sql::InsertFirst,
    /// Recent IDEM.BEGINs' share of taken keys: picks BEGIN's first statement.
    begin_mix: idem_sql::InsertFirst,
}

/// The one-statement fast paths, their text built once (the prepared
/// statement cache is keyed by it).
struct FastSql {
    /// CLAIM with a TTL ([`CLAIM_UPSERT`]).
    claim_ttl: String,
    /// CLAIM without a TTL: the new row's expiry is NULL, no clock read.
    claim_no_ttl: String,
    /// CLAIM's bare insert with a TTL ([`CLAIM_INSERT`]).
    claim_insert_ttl: String,
    /// CLAIM's bare insert without a TTL.
    claim_insert_no_ttl: String,
    /// IDEM.BEGIN ([`BEGIN_FAST`]).
    begin: String,
    /// IDEM.BEGIN's bare insert ([`BEGIN_INSERT`]).
    begin_insert: String,
}

impl FastSql {
    fn new() -> FastSql {
        let now = schema::NOW_MS_SQL;
        FastSql {
            claim_ttl: CLAIM_UPSERT.replace("@EXP@", &format!("{now} + ?")).replace("@NOW_MS@", now),
            claim_no_ttl: CLAIM_UPSERT.replace("@EXP@", "NULL").replace("@NOW_MS@", now),
            claim_insert_ttl: CLAIM_INSERT.replace("@EXP@", &format!("{now} + ?")),
            claim_insert_no_ttl: CLAIM_INSERT.replace("@EXP@", "NULL"),
            begin: BEGIN_FAST.replace("@NOW_MS@", now),
            begin_insert: BEGIN_INSERT.replace("@NOW_MS@", now),
        }
    }
}

/// CLAIM as one autocommit statement (MariaDB 10.5+, which has `INSERT …
/// RETURNING`); the same decision as the `idem_claim` procedure: the row is
/// inserted, or taken over when it is the caller's own or its TTL ran out
/// (owner first, then the expiry, which reads the updated owner), and the
/// final owner comes back. A duplicate from another live holder changes no
/// column, so InnoDB writes nothing for it (no undo, no redo, no commit
/// flush), as for the raw `INSERT IGNORE`. `@EXP@` is the new expiry:
/// `NULL` without a TTL (no clock read), else now + the TTL; the clock is
/// read on a duplicate only when the row has an expiry.
const CLAIM_UPSERT: &str = "INSERT INTO idem_claims (`key`, owner, expires_at_ms) VALUES (?, ?, @EXP@)
     ON DUPLICATE KEY UPDATE
       owner = IF(owner = VALUES(owner)
                  OR (expires_at_ms IS NOT NULL AND expires_at_ms <= @NOW_MS@), VALUES(owner), owner),
       expires_at_ms = IF(owner = VALUES(owner), VALUES(expires_at_ms), expires_at_ms)
     RETURNING owner";

/// CLAIM's first try while taken keys are rare ([`idem_sql::InsertFirst`]): the
/// raw statement's insert, which answers a fresh key with an OK packet (one
/// row affected) and no result set. `ON DUPLICATE KEY UPDATE `key` = `key``
/// changes no column of an existing row, so a taken key writes nothing and
/// reports no row affected (the pool never asks for `CLIENT_FOUND_ROWS`,
/// under which it would report one); then [`CLAIM_UPSERT`] decides. Unlike
/// `INSERT IGNORE`, every other error stays an error.
const CLAIM_INSERT: &str = "INSERT INTO idem_claims (`key`, owner, expires_at_ms) VALUES (?, ?, @EXP@)
     ON DUPLICATE KEY UPDATE `key` = `key`";

/// IDEM.BEGIN as one autocommit statement (MariaDB): a new fence is drawn
/// and the record inserted with it and its lease: one row version, one
/// commit, the raw insert's durability. The fence is drawn before InnoDB
/// looks the key up; it still follows every grant of the key that took
/// effect, because records leave tombstones and cleanup forgets them only
/// after a grace (`schema.rs`). When the key exists, `ON DUPLICATE KEY
/// UPDATE` changes nothing (no undo, no redo) and locks the row, and
/// `RETURNING` reads it: a live record answers `running`, `done` or
/// `mismatch` as the procedure would (the drawn fence is then a gap). The
/// status is NULL when the procedure must decide (the lease or retention
/// ran out: a takeover, or a forgotten record; or a tombstone), which draws
/// its fence under the row lock; the columns are the procedure's (status,
/// fence, n, result; `n` cast, as the clock expression's type is not an
/// integer). The statement clock (`UTC_TIMESTAMP`) is one value for the
/// whole statement. Parameters: key, fingerprint, lease, fingerprint,
/// fingerprint.
const BEGIN_FAST: &str = "INSERT INTO idem_records (`key`, fingerprint, state, fence, attempt, expires_at_ms)
     VALUES (?, ?, 'running', NEXT VALUE FOR idem_fence_seq, 1, @NOW_MS@ + ?)
     ON DUPLICATE KEY UPDATE `key` = `key`
     RETURNING
       CASE WHEN fence = PREVIOUS VALUE FOR idem_fence_seq THEN 'started'
            WHEN expires_at_ms <= @NOW_MS@ OR state NOT IN ('running', 'done') THEN NULL
            WHEN ? IS NOT NULL AND fingerprint IS NOT NULL AND fingerprint <> ? THEN 'mismatch'
            ELSE state END AS status,
       fence,
       CAST(IF(fence = PREVIOUS VALUE FOR idem_fence_seq, 1, expires_at_ms - @NOW_MS@) AS SIGNED) AS n,
       IF(state = 'done', result, NULL) AS result";

/// IDEM.BEGIN's first try while taken keys are rare
/// ([`idem_sql::InsertFirst::begin`]): [`BEGIN_FAST`]'s insert with none of
/// its reading of an existing record, so the fresh grant costs what the
/// bare insert of a fenced lease costs. The fence drawn and the one the row
/// holds come back: equal, the row is this statement's (`started`, attempt
/// 1); different, the key existed, `ON DUPLICATE KEY UPDATE` changed nothing
/// (the drawn fence is a gap), and [`BEGIN_FAST`] answers. The fence rule
/// is [`BEGIN_FAST`]'s (drawn before the lookup, stored only when the key
/// has no row). Parameters: key, fingerprint, lease.
const BEGIN_INSERT: &str = "INSERT INTO idem_records (`key`, fingerprint, state, fence, attempt, expires_at_ms)
     VALUES (?, ?, 'running', NEXT VALUE FOR idem_fence_seq, 1, @NOW_MS@ + ?)
     ON DUPLICATE KEY UPDATE `key` = `key`
     RETURNING fence, PREVIOUS VALUE FOR idem_fence_seq";

fn engine_err(message: impl std::fmt::Display) -> BackendError {
    BackendError::Engine { engine: "mysql", message: message.to_string() }
}

/// `mariadb://` is accepted as a synonym of `mysql://`.
///
/// TLS follows the MySQL client's `ssl-mode` and `ssl-ca` (read here and
/// removed from the URL): absent or `DISABLED`, no TLS (as before TLS
/// support); `REQUIRED` and `VERIFY_IDENTITY`, TLS with the server's
/// certificate verified (chain and host name); `VERIFY_CA`, chain only.
/// The chain is checked against the CA certificates in `ssl-ca`, or else
/// the built-in web roots: idem never encrypts to an unverified peer.
///
/// `pool_size`, `pool_wait_ms` and `lock_timeout_ms` are idem's
/// ([`idem_sql::PoolSettings`]); mysql_async's own pool parameters
/// (`pool_min`, `pool_max`, …) are overridden by them.
fn parse_opts(url: &str) -> Result<(Opts, idem_sql::PoolSettings), BackendError> {
    let (url, settings) = idem_sql::PoolSettings::take_from(url).map_err(engine_err)?;
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_string(),
    };
    let (url, mode) = idem_core::store_url::take_param(&url, "ssl-mode");
    let (url, ca) = idem_core::store_url::take_param(&url, "ssl-ca");
    let opts = Opts::from_url(&url).map_err(|e| engine_err(format!("bad URL: {e}")))?;
    let skip_domain = match mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("DISABLED") => {
            if ca.is_some() {
                return Err(engine_err("ssl-ca needs ssl-mode=REQUIRED, VERIFY_CA or VERIFY_IDENTITY"));
            }
            return Ok((opts, settings));
        }
        Some("REQUIRED" | "VERIFY_IDENTITY") => false,
        Some("VERIFY_CA") => true,
        Some(other) => {
            return Err(engine_err(format!(
                "ssl-mode={other}: expected DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
            )))
        }
    };
    let mut ssl = mysql_async::SslOpts::default().with_danger_skip_domain_validation(skip_domain);
    if let Some(path) = ca {
        ssl = ssl.with_root_certs(vec![std::path::PathBuf::from(path).into()]).with_disable_built_in_roots(true);
    }
    Ok((mysql_async::OptsBuilder::from_opts(opts).ssl_opts(ssl).into(), settings))
}

fn is_deadlock(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == ER_LOCK_DEADLOCK)
}

/// A failure before COMMIT is `BUSY`: the command's transaction rolled back
/// (or never began), so it changed nothing and may be retried. A COMMIT cut
/// off with its connection is `UNKNOWN` instead (`Inner::run_one`).
fn cmd_error(e: &mysql_async::Error) -> CmdError {
    match e {
        mysql_async::Error::Server(s) if s.code == ER_LOCK_WAIT_TIMEOUT => {
            CmdError::busy("mysql: the key is locked by a transaction still in progress; retry later")
        }
        mysql_async::Error::Server(s) if s.code == ER_LOCK_DEADLOCK => {
            CmdError::busy("mysql: too much contention on this key; retry")
        }
        mysql_async::Error::Server(s) => CmdError::busy(format!("mysql: {}", s.message)),
        other => CmdError::busy(format!("mysql unreachable: {other}")),
    }
}

impl MySqlBackend {
    /// Whether the next CLAIM tries the bare insert first
    /// ([`idem_sql::InsertFirst`]; MariaDB only): for tests that must reach
    /// both of CLAIM's first statements.
    #[doc(hidden)]
    pub fn claim_tries_insert_first(&self) -> bool {
        self.inner.fast.is_some() && self.inner.claim_mix.bare()
    }

    /// Whether the next IDEM.BEGIN tries the bare insert first (MariaDB
    /// only): for tests that must reach both of BEGIN's first statements.
    #[doc(hidden)]
    pub fn begin_tries_insert_first(&self) -> bool {
        self.inner.fast.is_some() && self.inner.begin_mix.bare()
    }

    /// Connects to the database at `url` (`mysql://user:pass@host:port/db`,
    /// or `mariadb://…`), creating or upgrading idem's schema first when it is
    /// missing or older than this build's, and starts the cleanup task. Must
    /// be called inside a Tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::connect_clocked(url, None).await
    }

    /// [`MySqlBackend::connect`], with engine time set by `clock` instead
    /// of the database's: before each command the backend sets the session
    /// variable `@idem_test_now_ms` on its connection, which
    /// `idem_now_ms()` reads. Only this backend's sessions see that time;
    /// it runs no expired-row cleanup (which would delete by the test's
    /// time rows of other clients). Test-only: the `test-clock` feature.
    #[cfg(feature = "test-clock")]
    pub async fn connect_with_test_clock(url: &str, clock: idem_core::TestClock) -> Result<Self, BackendError> {
        Self::connect_clocked(url, Some(clock)).await
    }

    async fn connect_clocked(url: &str, test_clock: Option<idem_core::TestClock>) -> Result<Self, BackendError> {
        let (opts, settings) = parse_opts(url)?;
        let version = {
            let mut conn = Conn::new(opts.clone()).await.map_err(engine_err)?;
            let v = schema_version(&mut conn).await;
            let _ = conn.disconnect().await;
            v?
        };
        if version > schema::SCHEMA_VERSION {
            return Err(engine_err(format!(
                "the schema is at version {version}, newer than this build's {}; upgrade idem",
                schema::SCHEMA_VERSION
            )));
        }
        if version < schema::SCHEMA_VERSION {
            migrate_opts(opts.clone()).await?;
        }
        let constraints = PoolConstraints::new(0, settings.size).ok_or_else(|| engine_err("bad pool bounds"))?;
        // No COM_RESET_CONNECTION when a connection goes back to the pool:
        // every command ends its transaction, and a reset would drop the
        // session settings and the prepared statements.
        //
        // Idle connections are kept for a minute: mysql_async's default
        // inactive TTL is 0, which with a lower bound of 0 closes every
        // connection as it comes back, so each command would pay a connect.
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_reset_connection(false)
            .with_inactive_connection_ttl(POOL_IDLE_TTL);
        // CLAIM's bare insert reads "no row affected" as a taken key
        // ([`CLAIM_INSERT`]); `CLIENT_FOUND_ROWS` would report one.
        let opts = OptsBuilder::from_opts(opts)
            .pool_opts(pool_opts)
            .stmt_cache_size(STMT_CACHE_SIZE)
            .client_found_rows(false)
            .init(vec![
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_string(),
                // Whole seconds, rounded up.
                format!("SET SESSION innodb_lock_wait_timeout = {}", settings.lock_timeout.as_millis().div_ceil(1000)),
            ]);
        let pool = Pool::new(opts);
        // Fail now, not on the first command, when the engine is unreachable.
        let fast = {
            let mut conn = pool.get_conn().await.map_err(engine_err)?;
            is_mariadb(&mut conn).await?.then(FastSql::new)
        };
        let waits = BackendWaiters::new(Limits::default().waiters_per_key_max);
        let inner = Arc::new(Inner {
            pool: pool.clone(),
            pool_wait: settings.wait,
            waits,
            fast,
            claim_mix: idem_sql::InsertFirst::claim(),
            begin_mix: idem_sql::InsertFirst::begin(),
            test_clock: test_clock.clone(),
        });
        let cleanup = match test_clock {
            None => tokio::spawn(cleanup_loop(pool)),
            Some(_) => tokio::spawn(async {}),
        };
        Ok(MySqlBackend { inner, cleanup })
    }
}

impl Drop for MySqlBackend {
    fn drop(&mut self) {
        self.cleanup.abort();
    }
}

/// Creates or upgrades idem's schema in the database at `url`. Idempotent;
/// concurrent runs serialise on `GET_LOCK('idem_migrate')`.
pub async fn migrate(url: &str) -> Result<(), BackendError> {
    migrate_opts(parse_opts(url)?.0).await
}

/// Whether the server is MariaDB (sequences, `INSERT … RETURNING`) rather
/// than MySQL.
async fn is_mariadb(conn: &mut Conn) -> Result<bool, BackendError> {
    let v: Option<String> = conn.query_first("SELECT VERSION()").await.map_err(engine_err)?;
    Ok(v.is_some_and(|v| v.contains("MariaDB")))
}

/// Creates MariaDB's fence sequence, unless it exists, starting above every
/// fence `idem_fences` handed out (its next AUTO_INCREMENT id) by
/// [`schema::FENCE_SEQ_MARGIN`], so fences keep growing across the switch.
async fn create_fence_seq(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    let next: Option<Option<u64>> = conn
        .query_first(
            "SELECT AUTO_INCREMENT FROM information_schema.tables
             WHERE table_schema = DATABASE() AND table_name = 'idem_fences'",
        )
        .await?;
    let max: Option<Option<u64>> = conn.query_first("SELECT MAX(id) FROM idem_fences").await?;
    let last = next.flatten().unwrap_or(1).max(max.flatten().unwrap_or(0).saturating_add(1));
    let start = last.saturating_add(schema::FENCE_SEQ_MARGIN);
    conn.query_drop(format!(
        "CREATE SEQUENCE IF NOT EXISTS idem_fence_seq START WITH {start} CACHE {} NOCYCLE",
        schema::FENCE_SEQ_CACHE
    ))
    .await
}

async fn schema_version(conn: &mut Conn) -> Result<i32, BackendError> {
    let exists: Option<i64> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = DATABASE() AND table_name = 'idem_schema_version'",
        )
        .await
        .map_err(engine_err)?;
    if exists.unwrap_or(0) == 0 {
        return Ok(0);
    }
    let v: Option<i32> =
        conn.query_first("SELECT version FROM idem_schema_version WHERE id = 1").await.map_err(engine_err)?;
    Ok(v.unwrap_or(0))
}

async fn migrate_opts(opts: Opts) -> Result<(), BackendError> {
    let mut conn = Conn::new(opts).await.map_err(engine_err)?;
    let locked: Option<i64> = conn
        .query_first(format!("SELECT GET_LOCK('idem_migrate', {MIGRATE_LOCK_WAIT_S})"))
        .await
        .map_err(engine_err)?;
    if locked != Some(1) {
        let _ = conn.disconnect().await;
        return Err(engine_err("another migration holds the lock 'idem_migrate'; try again"));
    }
    let result = apply_migrations(&mut conn).await;
    // The lock also ends with the session; releasing early lets waiters go.
    let _ = conn.query_drop("DO RELEASE_LOCK('idem_migrate')").await;
    let _ = conn.disconnect().await;
    result
}

async fn apply_migrations(conn: &mut Conn) -> Result<(), BackendError> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS idem_schema_version (
             id INT NOT NULL PRIMARY KEY,
             version INT NOT NULL
         ) ENGINE = InnoDB",
    )
    .await
    .map_err(engine_err)?;
    let current = schema_version(conn).await?;
    if current > schema::SCHEMA_VERSION {
        return Err(engine_err(format!(
            "the schema is at version {current}, newer than this build's {}",
            schema::SCHEMA_VERSION
        )));
    }
    if current == schema::SCHEMA_VERSION {
        return Ok(());
    }
    let step_err = |what: &str, e: mysql_async::Error| engine_err(format!("migration: {what} failed: {e}"));
    for (_, statements) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        for sql in *statements {
            let sql = schema::statement_text(sql);
            conn.query_drop(&sql).await.map_err(|e| step_err(sql.lines().next().unwrap_or(&sql), e))?;
        }
    }
    let mariadb = is_mariadb(conn).await?;
    if mariadb {
        create_fence_seq(conn).await.map_err(|e| step_err("CREATE SEQUENCE idem_fence_seq", e))?;
    }
    for (kind, name, create) in schema::ROUTINES {
        conn.query_drop(format!("DROP {kind} IF EXISTS {name}")).await.map_err(|e| step_err(name, e))?;
        conn.query_drop(schema::routine_text(create, mariadb)).await.map_err(|e| step_err(name, e))?;
    }
    conn.exec_drop(
        "INSERT INTO idem_schema_version (id, version) VALUES (1, ?)
         ON DUPLICATE KEY UPDATE version = VALUES(version)",
        (schema::SCHEMA_VERSION,),
    )
    .await
    .map_err(engine_err)?;
    tracing::info!(from = current, to = schema::SCHEMA_VERSION, "mysql: idem schema migrated");
    Ok(())
}

/// Deletes expired rows in bounded batches, every [`CLEANUP_INTERVAL`].
async fn cleanup_loop(pool: Pool) {
    loop {
        tokio::time::sleep(CLEANUP_INTERVAL).await;
        for _ in 0..CLEANUP_ROUNDS_MAX {
            let deleted = async {
                let mut conn = pool.get_conn().await?;
                let n: Option<i64> = conn.exec_first("CALL idem_cleanup(?)", (CLEANUP_BATCH_ROWS,)).await?;
                Ok::<i64, mysql_async::Error>(n.unwrap_or(0))
            }
            .await;
            match deleted {
                Ok(n) if n >= CLEANUP_BATCH_ROWS => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "mysql: cleanup failed; will retry");
                    break;
                }
            }
        }
    }
}

impl Inner {
    /// A pooled connection, or an error after the URL's `pool_wait_ms`.
    async fn get_conn(&self) -> Result<Conn, mysql_async::Error> {
        match tokio::time::timeout(self.pool_wait, self.pool.get_conn()).await {
            Ok(conn) => conn,
            Err(_) => Err(mysql_async::Error::Other("no pooled connection came free within pool_wait_ms".into())),
        }
    }

    /// Runs one command in its own short transaction (reads without one),
    /// retrying after a deadlock, which rolled it back.
    async fn run_one(&self, conn: &mut Conn, cmd: &Command) -> Result<Poll, CmdError> {
        if let Some(clock) = &self.test_clock {
            // Nothing of the command was sent yet: a failure here is BUSY.
            let set = format!("SET @idem_test_now_ms = {}", clock.now_ms());
            conn.query_drop(set).await.map_err(|e| cmd_error(&e))?;
        }
        let mut tries = 0;
        loop {
            let fast = match (&self.fast, cmd) {
                (Some(sql), Command::Claim { key, owner, ttl_ms }) => {
                    let claimed = claim_fast(conn, sql, self.claim_mix.bare(), key, owner, *ttl_ms).await;
                    Some(claimed.map(|(poll, held)| {
                        self.claim_mix.note(held);
                        poll
                    }))
                }
                // `None` when the record's lease or retention ran out: the
                // procedure decides (below).
                (Some(sql), Command::IdemBegin { key, fingerprint, lease_ms, .. }) => {
                    let bare = self.begin_mix.bare();
                    match begin_fast(conn, sql, bare, cmd, key, fingerprint.as_deref(), *lease_ms).await {
                        Ok((poll, taken)) => {
                            self.begin_mix.note(taken);
                            poll.map(Ok)
                        }
                        Err(e) => Some(Err(e)),
                    }
                }
                _ => None,
            };
            let attempt = if let Some(done) = fast {
                done
            } else if cmd.is_write() {
                async {
                    let mut t = conn.start_transaction(TxOpts::default()).await?;
                    match call(&mut t, cmd).await {
                        Ok(p) => match t.commit().await {
                            Ok(()) => Ok(p),
                            // The COMMIT was sent: without an answer it may
                            // have committed.
                            Err(e) => Err(after_sent(e)),
                        },
                        Err(e) => {
                            // Until COMMIT nothing is durable: a transaction
                            // cut off with its connection rolls back.
                            let _ = t.rollback().await;
                            Err(e)
                        }
                    }
                }
                .await
            } else {
                call(conn, cmd).await
            };
            match attempt {
                Ok(p) => return Ok(p),
                Err(CallError::Db(e)) if is_deadlock(&e) && tries < RETRIES_MAX => tries += 1,
                Err(CallError::Db(e)) => return Err(cmd_error(&e)),
                Err(CallError::Reply(e)) => return Err(e),
            }
        }
    }
}

impl SqlRunner for Inner {
    fn waits(&self) -> &BackendWaiters {
        &self.waits
    }

    fn poll_cap(&self) -> Duration {
        idem_sql::POLL_BACKOFF_MAX
    }

    fn run_plain<'a>(&'a self, cmds: &'a [Command]) -> BoxFuture<'a, Vec<CmdResult>> {
        Box::pin(async move {
            let mut conn = match self.get_conn().await {
                Ok(c) => c,
                Err(e) => {
                    let err = cmd_error(&e);
                    return cmds.iter().map(|_| Err(err.clone())).collect();
                }
            };
            // mysql_async has no pipelining: one command after the other.
            let mut out = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                out.push(self.run_one(&mut conn, cmd).await.and_then(|p| match p {
                    Poll::Final(r) => r,
                    Poll::Blocked { reply, .. } => Ok(reply),
                }));
            }
            out
        })
    }

    fn poll_once<'a>(&'a self, cmd: &'a Command, _mark_wait: bool) -> BoxFuture<'a, Result<Poll, CmdError>> {
        // MySQL has no NOTIFY, so there is nothing to mark: waiters poll.
        Box::pin(async move {
            let mut conn = self.get_conn().await.map_err(|e| cmd_error(&e))?;
            self.run_one(&mut conn, cmd).await
        })
    }
}

impl Backend for MySqlBackend {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(idem_sql::execute_batch(&*self.inner, cmds))
    }

    fn inspect_idem<'a>(
        &'a self,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<idem_core::machine::IdemView>, CmdError>> {
        Box::pin(async move {
            let mut conn = self.inner.get_conn().await.map_err(|e| cmd_error(&e))?;
            // By the engine's clock, as the procedures that write the row.
            let row: Option<(String, i64, i64, i64, i64)> = conn
                .exec_first(
                    // A tombstone (ABORT, IDEM.DEL) is no record.
                    "SELECT state, fence, attempt, expires_at_ms - idem_now_ms(), COALESCE(LENGTH(result), 0)
                     FROM idem_records WHERE `key` = ? AND state <> 'gone'",
                    (key,),
                )
                .await
                .map_err(|e| cmd_error(&e))?;
            let stored = match row {
                Some((state, fence, attempt, left, len)) => {
                    Some(idem_sql::stored_idem(&state, fence, attempt, left, len)?)
                }
                None => None,
            };
            Ok(Some(idem_sql::idem_view(&self.inner.waits, key, stored)))
        })
    }

    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async move {
            let mut conn = self.inner.get_conn().await.map_err(|e| cmd_error(&e))?;
            let n: Option<i64> = conn
                .query_first(
                    "SELECT (SELECT COUNT(*) FROM idem_records WHERE state <> 'gone') + (SELECT COUNT(*) FROM idem_claims)
                          + (SELECT COUNT(*) FROM idem_locks) + (SELECT COUNT(*) FROM idem_tokens)
                          + (SELECT COUNT(*) FROM idem_counters) + (SELECT COUNT(*) FROM idem_values)
                          + (SELECT COUNT(*) FROM idem_fsm) + (SELECT COUNT(*) FROM idem_slot_resources)",
                )
                .await
                .map_err(|e| cmd_error(&e))?;
            Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
        })
    }

    fn info(&self) -> Vec<(String, String)> {
        vec![
            ("mysql_schema_version".into(), schema::SCHEMA_VERSION.to_string()),
            // This server's parked callers: the only ones it can count.
            ("parked_waiters".into(), self.inner.waits.total().to_string()),
        ]
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.cleanup.abort();
            let _ = self.inner.pool.clone().disconnect().await;
        })
    }
}

// ------------------------------------------------------------ one command

/// Column `i` of a result row.
pub(crate) fn col<T: FromValue>(row: &Row, i: usize) -> Result<T, mysql_async::Error> {
    match row.get_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(mysql_async::Error::Other(Box::new(e))),
        None => Err(unexpected("a column is missing")),
    }
}

pub(crate) fn unexpected(what: &'static str) -> mysql_async::Error {
    mysql_async::Error::Other(what.into())
}

/// Calls a procedure that returns one row.
pub(crate) async fn call_one<Q: Queryable>(
    q: &mut Q,
    sql: &str,
    params: Vec<Value>,
) -> Result<Row, mysql_async::Error> {
    let row: Option<Row> = q.exec_first(sql, Params::Positional(params)).await?;
    row.ok_or_else(|| unexpected("the procedure returned no row"))
}

fn bytes(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
}

fn opt_i64(v: Option<i64>) -> Value {
    v.map_or(Value::NULL, Value::Int)
}

fn bulk(b: Vec<u8>) -> Reply {
    Reply::Bulk(Bytes::from(b))
}

/// This crate's name in errors.
const ENGINE: &str = "mysql";

/// A result row as the shared decoder reads it.
struct MyRow<'a>(&'a Row);

impl MyRow<'_> {
    fn get<T: FromValue>(&self, i: usize) -> Result<Option<T>, CmdError> {
        match self.0.as_ref(i) {
            None => Err(idem_core::outcome::unexpected(ENGINE, format!("column {i} is missing"))),
            Some(Value::NULL) => Ok(None),
            Some(v) => mysql_async::from_value_opt::<T>(v.clone())
                .map(Some)
                .map_err(|e| idem_core::outcome::unexpected(ENGINE, format!("column {i}: {e}"))),
        }
    }
}

impl SqlRow for MyRow<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, CmdError> {
        self.get(i)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, CmdError> {
        self.get(i)
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, CmdError> {
        self.get(i)
    }
}

/// Why one CALL failed: the engine or the connection, or an answer the
/// contract does not allow.
pub(crate) enum CallError {
    Db(mysql_async::Error),
    Reply(CmdError),
}

impl From<mysql_async::Error> for CallError {
    fn from(e: mysql_async::Error) -> Self {
        CallError::Db(e)
    }
}

impl From<CmdError> for CallError {
    fn from(e: CmdError) -> Self {
        CallError::Reply(e)
    }
}

/// An error from a statement that was sent and commits by itself: the
/// server's answer is the command's error (retried after a deadlock);
/// anything else (the connection broke) leaves the outcome unknown.
fn after_sent(e: mysql_async::Error) -> CallError {
    match e {
        mysql_async::Error::Server(_) => CallError::Db(e),
        e => CallError::Reply(CmdError::unknown(format!("mysql: {e}; the command may or may not have taken effect"))),
    }
}

/// Runs one fast-path statement (autocommit) and returns its one row.
async fn exec_fast(conn: &mut Conn, sql: &str, params: Vec<Value>, what: &str) -> Result<Row, CallError> {
    // Prepared apart from the execution (and cached per connection), so
    // that a connection failing here has sent nothing: `BUSY`.
    let stmt = conn.prep(sql).await?;
    match conn.exec_first(&stmt, Params::Positional(params)).await.map_err(after_sent)? {
        Some(row) => Ok(row),
        None => Err(idem_core::outcome::unexpected(ENGINE, format!("{what} returned no row")).into()),
    }
}

/// [`exec_fast`] for a statement that returns no rows: the rows it
/// affected.
async fn exec_affected(conn: &mut Conn, sql: &str, params: Vec<Value>) -> Result<u64, CallError> {
    let stmt = conn.prep(sql).await?;
    conn.exec_drop(&stmt, Params::Positional(params)).await.map_err(after_sent)?;
    Ok(conn.affected_rows())
}

/// CLAIM in its own autocommit statements: [`CLAIM_INSERT`] first when
/// `bare` (a fresh key ends there), then [`CLAIM_UPSERT`]. Also says whether
/// another owner held the key.
async fn claim_fast(
    conn: &mut Conn,
    sql: &FastSql,
    bare: bool,
    key: &[u8],
    owner: &[u8],
    ttl_ms: Option<u64>,
) -> Result<(Poll, bool), CallError> {
    // Built per statement: a fresh key on the bare route copies key and
    // owner once.
    let params = || {
        let mut p = vec![bytes(key), bytes(owner)];
        p.extend(ttl_ms.map(|t| Value::Int(to_i64(t))));
        p
    };
    if bare {
        let text = if ttl_ms.is_some() { &sql.claim_insert_ttl } else { &sql.claim_insert_no_ttl };
        if exec_affected(conn, text, params()).await? == 1 {
            return Ok((Poll::Final(Ok(Claimed::Claimed.into_reply())), false));
        }
    }
    let text = if ttl_ms.is_some() { &sql.claim_ttl } else { &sql.claim_no_ttl };
    let row = exec_fast(conn, text, params(), "CLAIM").await?;
    let holder: Vec<u8> =
        MyRow(&row).bytes(0)?.ok_or_else(|| idem_core::outcome::unexpected(ENGINE, "CLAIM returned no owner"))?;
    let outcome = if holder == owner { Claimed::Claimed } else { Claimed::Held { owner: Bytes::from(holder) } };
    let held = matches!(outcome, Claimed::Held { .. });
    Ok((Poll::Final(Ok(outcome.into_reply())), held))
}

/// IDEM.BEGIN in its own autocommit statements: [`BEGIN_INSERT`] first when
/// `bare` (a fresh key ends there), then [`BEGIN_FAST`]. `None` when the
/// procedure must decide (nothing was written then). Also says whether the
/// key was taken.
async fn begin_fast(
    conn: &mut Conn,
    sql: &FastSql,
    bare: bool,
    cmd: &Command,
    key: &[u8],
    fingerprint: Option<&[u8]>,
    lease_ms: u64,
) -> Result<(Option<Poll>, bool), CallError> {
    let fp = fingerprint.map_or(Value::NULL, bytes);
    if bare {
        let params = vec![bytes(key), fp.clone(), Value::Int(to_i64(lease_ms))];
        let row = exec_fast(conn, &sql.begin_insert, params, "IDEM.BEGIN").await?;
        let (fence, drawn) = (begin_fence(&row, 0)?, begin_fence(&row, 1)?);
        if fence == drawn {
            let started = Begin::Started { fence, attempt: 1 }.into_reply();
            return Ok((Some(Poll::Final(Ok(started))), false));
        }
    }
    let params = vec![bytes(key), fp.clone(), Value::Int(to_i64(lease_ms)), fp.clone(), fp];
    let row = exec_fast(conn, &sql.begin, params, "IDEM.BEGIN").await?;
    let Some(status) = MyRow(&row).text(0)? else {
        return Ok((None, true));
    };
    // A grant on this route is an absent key's; anything else found it taken.
    let taken = status != idem_core::outcome::BeginStatus::Started.word();
    Ok((Some(idem_sql::decode(ENGINE, cmd, &[MyRow(&row)])?), taken))
}

/// Column `i` of [`BEGIN_INSERT`]'s row: a fence, which is never NULL or negative.
fn begin_fence(row: &Row, i: usize) -> Result<u64, CmdError> {
    let v = MyRow(row)
        .int(i)?
        .ok_or_else(|| idem_core::outcome::unexpected(ENGINE, format!("fence column {i} is NULL")))?;
    u64::try_from(v).map_err(|_| idem_core::outcome::unexpected(ENGINE, format!("fence {v}")))
}

/// Runs one command as one CALL (or SELECT) on `q`: a connection or a
/// transaction the caller commits.
async fn call<Q: Queryable>(q: &mut Q, cmd: &Command) -> Result<Poll, CallError> {
    let p = |v: Vec<Value>| Params::Positional(v);
    let rows: Vec<Row> = match cmd {
        Command::IdemBegin { key, fingerprint, lease_ms, .. } => {
            let fp = fingerprint.as_deref().map_or(Value::NULL, bytes);
            q.exec("CALL idem_begin(?, ?, ?)", p(vec![bytes(key), fp, Value::Int(to_i64(*lease_ms))])).await?
        }
        Command::IdemCommit { key, fence, result, keep_ms } => {
            let params = vec![bytes(key), Value::Int(to_i64(*fence)), bytes(result), Value::Int(to_i64(*keep_ms))];
            q.exec("CALL idem_commit(?, ?, ?, ?)", p(params)).await?
        }
        Command::IdemAbort { key, fence } => {
            q.exec("CALL idem_abort(?, ?)", p(vec![bytes(key), Value::Int(to_i64(*fence))])).await?
        }
        Command::IdemRenew { key, fence, lease_ms } => {
            let params = vec![bytes(key), Value::Int(to_i64(*fence)), Value::Int(to_i64(*lease_ms))];
            q.exec("CALL idem_record_renew(?, ?, ?)", p(params)).await?
        }
        Command::IdemGet { key } => q.exec("CALL idem_get(?)", p(vec![bytes(key)])).await?,
        Command::IdemDel { key } => q.exec("CALL idem_del(?)", p(vec![bytes(key)])).await?,
        Command::Claim { key, owner, ttl_ms } => {
            let params = vec![bytes(key), bytes(owner), opt_i64(ttl_ms.map(to_i64))];
            q.exec("CALL idem_claim(?, ?, ?)", p(params)).await?
        }
        Command::ClaimAll { owner, keys } => {
            let keys = idem_sql::hex_json_array(&idem_sql::distinct_keys(keys));
            q.exec("CALL idem_claim_all(?, ?)", p(vec![bytes(owner), Value::from(keys)])).await?
        }
        Command::Release { key, owner } => q.exec("CALL idem_release(?, ?)", p(vec![bytes(key), bytes(owner)])).await?,
        Command::Owner { key } => q.exec("CALL idem_owner(?)", p(vec![bytes(key)])).await?,
        Command::Lock { name, owner, lease_ms, .. } => {
            let params = vec![bytes(name), bytes(owner), Value::Int(to_i64(*lease_ms))];
            q.exec("CALL idem_lock(?, ?, ?)", p(params)).await?
        }
        Command::Renew { name, owner, lease_ms } => {
            let params = vec![bytes(name), bytes(owner), Value::Int(to_i64(*lease_ms))];
            q.exec("CALL idem_renew(?, ?, ?)", p(params)).await?
        }
        Command::Unlock { name, owner } => q.exec("CALL idem_unlock(?, ?)", p(vec![bytes(name), bytes(owner)])).await?,
        Command::LockInfo { name } => q.exec("CALL idem_lock_info(?)", p(vec![bytes(name)])).await?,
        Command::TokenNew { scope, ttl_ms } => {
            let token = idem_sql::new_token();
            call_one(q, "CALL idem_token_new(?, ?, ?)", vec![bytes(scope), bytes(&token), Value::Int(to_i64(*ttl_ms))])
                .await?;
            return Ok(Poll::Final(Ok(Reply::Bulk(token))));
        }
        Command::TokenUse { scope, token } => {
            q.exec("CALL idem_token_use(?, ?)", p(vec![bytes(scope), bytes(token)])).await?
        }
        Command::CounterAdd { key, delta, min, max, op, keep_ms } => {
            let op = op.as_deref().map_or(Value::NULL, bytes);
            let params =
                vec![bytes(key), Value::Int(*delta), opt_i64(*min), opt_i64(*max), op, Value::Int(to_i64(*keep_ms))];
            q.exec("CALL idem_counter_add(?, ?, ?, ?, ?, ?)", p(params)).await?
        }
        Command::CounterGet { key } => {
            q.exec("SELECT value FROM idem_counters WHERE `key` = ?", p(vec![bytes(key)])).await?
        }
        Command::ValueGet { key } => {
            let row: Option<(Vec<u8>, i64)> = q
                .exec_first("SELECT value, version FROM idem_values WHERE `key` = ? AND version > 0", (key.to_vec(),))
                .await?;
            let reply = row.map_or(Reply::Nil, |(v, ver)| Reply::Array(vec![bulk(v), idem_sql::uint(ver)]));
            return Ok(Poll::Final(Ok(reply)));
        }
        Command::ValueSet { key, value, if_version } => {
            let params = vec![bytes(key), bytes(value), opt_i64(if_version.map(to_i64))];
            q.exec("CALL idem_value_set(?, ?, ?)", p(params)).await?
        }
        Command::FsmMove { key, to, from } => {
            let params = vec![bytes(key), bytes(to), Value::from(idem_sql::hex_json_array(from))];
            q.exec("CALL idem_fsm_move(?, ?, ?)", p(params)).await?
        }
        Command::FsmGet { key } => {
            let v: Option<Vec<u8>> =
                q.exec_first("SELECT state FROM idem_fsm WHERE `key` = ? AND state <> ''", (key.to_vec(),)).await?;
            return Ok(Poll::Final(Ok(v.map_or(Reply::Nil, bulk))));
        }
        Command::SlotsReserve { resource, first, last, holder, size } => {
            let size_v = size.map_or(Value::NULL, |s| Value::Int(i64::from(s)));
            let params = vec![
                bytes(resource),
                Value::Int(i64::from(*first)),
                Value::Int(i64::from(*last)),
                bytes(holder),
                size_v,
            ];
            q.exec("CALL idem_slots_reserve(?, ?, ?, ?, ?)", p(params)).await?
        }
        Command::SlotsRelease { resource, first, last, holder } => {
            let params =
                vec![bytes(resource), Value::Int(i64::from(*first)), Value::Int(i64::from(*last)), bytes(holder)];
            q.exec("CALL idem_slots_release(?, ?, ?, ?)", p(params)).await?
        }
        Command::SlotsGet { resource } => {
            q.exec(
                "SELECT r.size, s.slot, s.holder FROM idem_slot_resources r
                 LEFT JOIN idem_slots s ON s.resource = r.resource
                 WHERE r.resource = ? AND r.size > 0",
                p(vec![bytes(resource)]),
            )
            .await?
        }
    };
    let rows: Vec<MyRow<'_>> = rows.iter().map(MyRow).collect();
    Ok(idem_sql::decode(ENGINE, cmd, &rows)?)
}
