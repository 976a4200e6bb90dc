//! idem on PostgreSQL.
//!
//! Every primitive is one PL/pgSQL function (`schema.rs`), so every command is
//! one statement and one round trip, atomic on its own; the same functions
//! are what [`tx`] and other languages call inside their own transactions
//! (docs/backends-sql.md).
//!
//! Guarantees, and where they come from:
//! - **Time** is the database's: `clock_timestamp()` inside the functions
//!   (real time at the statement, also inside a long transaction). Leases,
//!   TTLs and KEEPs are compared with it in the same statement that acts on
//!   them; the client's clock is never used for them. A jump of the database
//!   host's clock shortens or lengthens them; fences stay safe.
//! - **Fences** come from the one sequence `idem_fence_seq`, drawn while the
//!   key's row is locked: strictly increasing across the whole database (so
//!   per key too), never reused, also after a crash, because the sequence is
//!   WAL-logged ahead of use and a grant's transaction commits before its
//!   reply. Gaps are normal.
//! - **WAIT** on IDEM.BEGIN and LOCK: parked callers poll (see
//!   `idem-sql`), woken by `LISTEN idem_wake` when another process ends a
//!   watched attempt or lock. Typical latency: a NOTIFY round (about a
//!   millisecond) after COMMIT/ABORT/DEL/UNLOCK, 1 ms after a lease runs out;
//!   at worst [`POLL_BACKOFF_MAX_LISTENING`] (or 50 ms while the LISTEN
//!   connection is down). Waiters are served first come, first served among
//!   the callers of one idem process; across processes, whoever polls first.
//! - A pipeline (`execute_batch`) is sent on one connection without waiting
//!   for each reply; the server runs the statements in order, each in its own
//!   transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command, Limits, Reply};
use rustls::pki_types::pem::PemObject;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use idem_core::BackendError;

mod schema;
pub mod tx;

use idem_sql::{to_i64, uint, BackendWaiters, Poll, SqlRow, SqlRunner, WaitKind};

// The pool's size, its checkout wait and `lock_timeout` (how long a command
// waits for a row that a caller's long transaction using [`tx`] locked
// before replying `BUSY`) are settings of the URL: [`idem_sql::PoolSettings`]
// (one more connection, for LISTEN, is not counted in the pool's size).
/// Longest pause between two polls of a parked WAIT while LISTEN works:
/// NOTIFY normally wakes waiters first; this catches a missed one.
pub const POLL_BACKOFF_MAX_LISTENING: Duration = Duration::from_millis(250);
/// How often expired rows are deleted.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(2);
/// Most rows deleted per table per cleanup statement.
pub const CLEANUP_BATCH_ROWS: i32 = 1_000;
/// Most cleanup statements in one round (a backlog drains over several rounds).
const CLEANUP_ROUNDS_MAX: usize = 16;
/// Times a command is retried after a serialization failure or deadlock.
const RETRIES_MAX: usize = 3;
/// Pause before the LISTEN connection is opened again after it failed.
const LISTEN_RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// The NOTIFY channel that wakes parked callers.
const WAKE_CHANNEL: &str = "idem_wake";
/// Session advisory lock that serialises concurrent migrations ("idemmigr").
const MIGRATE_LOCK_KEY: i64 = 0x6964_656d_6d69_6772;

const SQL_BEGIN: &str =
    "SELECT status, fence, n, result FROM idem_begin($1::bytea, $2::bytea, $3::bigint, $4::boolean)";
/// IDEM.BEGIN's first try, one statement (for a caller that does not WAIT).
/// A live record is answered from the statement's snapshot without a row
/// lock (`running`, `done` or `mismatch`, as `idem_begin` would): no
/// transaction id, no WAL, no commit flush. An absent key is granted by one
/// INSERT that carries its fence and lease, one row version, under the key's
/// fence lock (`idem_key_lock`, see the schema), taken before the fence is
/// drawn. No row comes back when the record's lease or retention ran out
/// (a takeover, or a forgotten key), or when the key was inserted after the
/// snapshot: then [`SQL_BEGIN`] decides under the locks.
const SQL_BEGIN_FAST: &str = "WITH cur AS (
         SELECT r.state, r.fingerprint, r.fence, r.expires_at_ms, r.result, idem_now_ms() AS now
         FROM idem_records r WHERE r.key = $1::bytea),
     lk AS (SELECT idem_key_lock($1::bytea) WHERE NOT EXISTS (SELECT 1 FROM cur)),
     ins AS (
         INSERT INTO idem_records (key, fingerprint, state, fence, attempt, expires_at_ms)
         SELECT $1::bytea, $2::bytea, 'running', nextval('idem_fence_seq'), 1, idem_now_ms() + $3::bigint FROM lk
         ON CONFLICT (key) DO NOTHING RETURNING fence),
     live AS (
         SELECT c.*, ($2::bytea IS NOT NULL AND c.fingerprint IS NOT NULL AND c.fingerprint <> $2::bytea) AS mismatch
         FROM cur c WHERE c.expires_at_ms > c.now)
     SELECT 'started'::text AS status, ins.fence, 1::bigint AS n, NULL::bytea AS result FROM ins
     UNION ALL
     SELECT 'mismatch', NULL, NULL, NULL FROM live WHERE mismatch
     UNION ALL
     SELECT 'done', NULL, NULL, live.result FROM live WHERE NOT mismatch AND state = 'done'
     UNION ALL
     SELECT 'running', live.fence, live.expires_at_ms - live.now, NULL FROM live
     WHERE NOT mismatch AND state = 'running'";
/// IDEM.BEGIN's first try while taken keys are rare
/// ([`idem_sql::InsertFirst::begin`]): the fresh grant of [`SQL_BEGIN_FAST`]
/// alone, one INSERT carrying the fence and the lease, with no read before
/// it and no CTE over the record. The key's fence lock is only *tried*
/// (`pg_try_advisory_xact_lock`, the lock `idem_key_lock` takes): when
/// another transaction holds it, no row comes out of `lk`, no fence is
/// drawn, and the statement returns nothing without waiting. Otherwise the
/// fence is drawn under the lock, as every path that draws one does. A key
/// whose record the statement's snapshot already holds is not inserted at
/// all (`NOT EXISTS`): no fence is drawn for it, so such a
/// duplicate writes nothing. No row back means the key
/// exists or its lock was busy: [`SQL_BEGIN_FAST`] then answers a live
/// record without waiting (or grants under the lock), and [`SQL_BEGIN`]
/// decides when that cannot. The route is taken only while taken keys are
/// under an eighth.
const SQL_BEGIN_INSERT: &str = concat!(
    "WITH lk AS (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM idem_records WHERE key = $1::bytea)
                  AND pg_try_advisory_xact_lock(",
    schema::key_lock_class!(),
    ", hashtext(encode($1::bytea, 'hex'))))
     INSERT INTO idem_records (key, fingerprint, state, fence, attempt, expires_at_ms)
     SELECT $1::bytea, $2::bytea, 'running', nextval('idem_fence_seq'), 1, idem_now_ms() + $3::bigint FROM lk
     ON CONFLICT (key) DO NOTHING
     RETURNING 'started'::text AS status, fence, 1::bigint AS n, NULL::bytea AS result"
);
const SQL_COMMIT: &str = "SELECT idem_commit($1::bytea, $2::bigint, $3::bytea, $4::bigint)";
const SQL_ABORT: &str = "SELECT idem_abort($1::bytea, $2::bigint)";
const SQL_IDEM_RENEW: &str = "SELECT idem_record_renew($1::bytea, $2::bigint, $3::bigint)";
const SQL_GET: &str = "SELECT status, fence, left_ms, result FROM idem_get($1::bytea)";
const SQL_DEL: &str = "SELECT idem_del($1::bytea)";
const SQL_CLAIM: &str = "SELECT status, owner FROM idem_claim($1::bytea, $2::bytea, $3::bigint)";
/// CLAIM's first try, one statement that takes no row lock. It inserts
/// first, as the raw `INSERT … ON CONFLICT DO NOTHING` does: a fresh key is
/// `claimed` by that one heap and index insert and its one commit, with no
/// read before it. On a duplicate, `DO NOTHING`'s pre-check finds the key and
/// writes nothing (no transaction id, no WAL record, no commit flush), and
/// the holder is read from the statement's snapshot: another live owner is
/// answered `held`. `DO NOTHING` still waits for a concurrent inserter of the
/// key, as the locking path does. No row comes back when the claim is the
/// caller's own (its TTL must change), has run out, or was committed after
/// the snapshot (the insert saw it, the read does not): then [`SQL_CLAIM`]
/// decides under the row lock. `$exp` is the new claim's expiry: without a
/// TTL it is NULL and the clock is not read.
macro_rules! sql_claim_fast {
    ($exp:literal) => {
        concat!(
            "WITH ins AS (
                 INSERT INTO idem_claims (key, owner, expires_at_ms) VALUES ($1::bytea, $2::bytea, ",
            $exp,
            ")
                 ON CONFLICT (key) DO NOTHING RETURNING 1)
             SELECT 'claimed'::text AS status, NULL::bytea AS owner FROM ins
             UNION ALL
             SELECT 'held'::text, c.owner FROM idem_claims c
             WHERE NOT EXISTS (SELECT 1 FROM ins) AND c.key = $1::bytea AND c.owner <> $2::bytea
               AND (c.expires_at_ms IS NULL OR c.expires_at_ms > idem_now_ms())"
        )
    };
}
const SQL_CLAIM_FAST: &str = sql_claim_fast!("idem_now_ms() + $3::bigint");
const SQL_CLAIM_FAST_NO_TTL: &str = sql_claim_fast!("NULL::bigint");
/// CLAIM's first try while duplicates are rare ([`idem_sql::InsertFirst`]): the raw
/// statement itself, `INSERT … ON CONFLICT DO NOTHING`, which answers a
/// fresh key with no read and no CTE. No row back means the key exists:
/// [`SQL_CLAIM_HOLDER`] then reads the holder, and [`SQL_CLAIM`] decides
/// only when that finds no other live owner. A duplicate thus costs two or
/// three statements, none of which writes.
macro_rules! sql_claim_insert {
    ($exp:literal) => {
        concat!(
            "INSERT INTO idem_claims (key, owner, expires_at_ms) VALUES ($1::bytea, $2::bytea, ",
            $exp,
            ") ON CONFLICT (key) DO NOTHING RETURNING 'claimed'::text AS status, NULL::bytea AS owner"
        )
    };
}
const SQL_CLAIM_INSERT: &str = sql_claim_insert!("idem_now_ms() + $3::bigint");
const SQL_CLAIM_INSERT_NO_TTL: &str = sql_claim_insert!("NULL::bigint");
/// Another live owner of a claim, read after [`SQL_CLAIM_INSERT`] found the
/// key taken; no row when the claim is the caller's own, has run out or is
/// gone again (then [`SQL_CLAIM`] decides under the row lock).
const SQL_CLAIM_HOLDER: &str = "SELECT 'held'::text AS status, c.owner FROM idem_claims c
     WHERE c.key = $1::bytea AND c.owner <> $2::bytea
       AND (c.expires_at_ms IS NULL OR c.expires_at_ms > idem_now_ms())";
const SQL_CLAIM_ALL: &str = "SELECT status, key, owner FROM idem_claim_all($1::bytea, $2::bytea[])";
const SQL_RELEASE: &str = "SELECT idem_release($1::bytea, $2::bytea)";
const SQL_OWNER: &str = "SELECT idem_owner($1::bytea)";
const SQL_LOCK: &str =
    "SELECT status, fence, holder, left_ms FROM idem_lock($1::bytea, $2::bytea, $3::bigint, $4::boolean)";
const SQL_RENEW: &str = "SELECT status, fence FROM idem_renew($1::bytea, $2::bytea, $3::bigint)";
const SQL_UNLOCK: &str = "SELECT idem_unlock($1::bytea, $2::bytea)";
const SQL_LOCK_INFO: &str = "SELECT status, owner, fence, left_ms FROM idem_lock_info($1::bytea)";
const SQL_TOKEN_NEW: &str = "SELECT idem_token_new($1::bytea, $2::bytea, $3::bigint)";
const SQL_TOKEN_USE: &str = "SELECT idem_token_use($1::bytea, $2::bytea)";
const SQL_COUNTER_ADD: &str =
    "SELECT status, value FROM idem_counter_add($1::bytea, $2::bigint, $3::bigint, $4::bigint, $5::bytea, $6::bigint)";
const SQL_COUNTER_GET: &str = "SELECT idem_counter_get($1::bytea)";
const SQL_VALUE_GET: &str = "SELECT value, version FROM idem_values WHERE key = $1::bytea";
const SQL_VALUE_SET: &str = "SELECT status, version FROM idem_value_set($1::bytea, $2::bytea, $3::bigint)";
const SQL_FSM_MOVE: &str = "SELECT status, state FROM idem_fsm_move($1::bytea, $2::bytea, $3::bytea[])";
const SQL_FSM_GET: &str = "SELECT state FROM idem_fsm WHERE key = $1::bytea";
const SQL_SLOTS_RESERVE: &str =
    "SELECT status, slot, holder FROM idem_slots_reserve($1::bytea, $2::integer, $3::integer, $4::bytea, $5::integer)";
const SQL_SLOTS_RELEASE: &str = "SELECT idem_slots_release($1::bytea, $2::integer, $3::integer, $4::bytea)";
const SQL_SLOTS_GET: &str = "SELECT size, slot, holder FROM idem_slots_get($1::bytea)";
const SQL_CLEANUP: &str = "SELECT idem_cleanup($1::integer)";
const SQL_DBSIZE: &str = "SELECT idem_dbsize()";
/// The inspector's read of one record, by the engine's clock (as the
/// functions that write it).
const SQL_INSPECT_IDEM: &str = "SELECT state, fence, attempt::bigint, expires_at_ms - idem_now_ms(), \
     COALESCE(octet_length(result), 0)::bigint FROM idem_records WHERE key = $1::bytea";

/// The PostgreSQL backend: a connection pool, a LISTEN connection that wakes
/// parked callers, and a task that deletes expired rows.
pub struct PgBackend {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    pool: Pool,
    waits: Arc<BackendWaiters>,
    /// Whether the LISTEN connection is up (NOTIFY wake-ups arrive).
    listening: Arc<AtomicBool>,
    /// Recent CLAIMs' share of taken keys: picks CLAIM's first statement.
    claim_mix: idem_sql::InsertFirst,
    /// Picks IDEM.BEGIN's first statement: [`SQL_BEGIN_INSERT`] while taken
    /// keys are rare, [`SQL_BEGIN_FAST`] otherwise.
    begin_mix: idem_sql::InsertFirst,
}

/// Why a command failed, by whether it may have run: `BUSY` only when it
/// certainly did not, `UNKNOWN` when the connection broke after its
/// statement was sent (docs/commands.md).
enum ExecError {
    /// No connection from the pool: nothing was sent.
    Pool(deadpool_postgres::PoolError),
    /// Failed before the statement was sent (while preparing it, or on a
    /// connection already closed).
    NotSent(Option<tokio_postgres::Error>),
    /// Failed after the statement was sent.
    Db(tokio_postgres::Error),
    /// The engine answered something the contract does not allow.
    Reply(CmdError),
}

impl From<tokio_postgres::Error> for ExecError {
    fn from(e: tokio_postgres::Error) -> Self {
        ExecError::Db(e)
    }
}

impl From<CmdError> for ExecError {
    fn from(e: CmdError) -> Self {
        ExecError::Reply(e)
    }
}

impl ExecError {
    /// Whether running the same command again may succeed at once.
    fn retryable(&self) -> bool {
        matches!(self, ExecError::Db(e) if is_retryable(e))
    }

    fn into_cmd_error(self) -> CmdError {
        match self {
            ExecError::Pool(e) => CmdError::busy(format!("postgres unreachable: {e}")),
            ExecError::NotSent(Some(e)) => db_cmd_error(&e),
            ExecError::NotSent(None) => CmdError::busy("postgres: the connection is closed"),
            ExecError::Db(e) => sent_cmd_error(&e),
            ExecError::Reply(e) => e,
        }
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// An error the engine answered with is `BUSY`: the statement rolled back,
/// so the request changed nothing and may be retried. Without an answer
/// (the connection broke) it is `BUSY` too, for callers that know nothing
/// was sent; after a send, see [`sent_cmd_error`].
fn db_cmd_error(e: &tokio_postgres::Error) -> CmdError {
    match e.code() {
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => {
            CmdError::busy("postgres: the key is locked by a transaction still in progress; retry later")
        }
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            CmdError::busy("postgres: too much contention on this key; retry")
        }
        _ => match e.as_db_error() {
            Some(db) => CmdError::busy(format!("postgres: {}", db.message())),
            None => CmdError::busy(format!("postgres unreachable: {e}")),
        },
    }
}

/// A failure after the statement was sent: an error the engine answered
/// with rolled the statement back (`BUSY`); anything else (the connection
/// broke, a reply that cannot be read) leaves its outcome unknown: the
/// statement may have committed (`UNKNOWN`).
fn sent_cmd_error(e: &tokio_postgres::Error) -> CmdError {
    if e.as_db_error().is_some() {
        db_cmd_error(e)
    } else {
        CmdError::unknown(format!("postgres: {e}; the command may or may not have taken effect"))
    }
}

fn engine_err(message: impl std::fmt::Display) -> BackendError {
    BackendError::Engine { engine: "postgres", message: message.to_string() }
}

/// [`engine_err`] with the error's causes: tokio-postgres says only "error
/// connecting to server" or "db error" and keeps the reason (connection
/// refused, database "x" does not exist) in its source.
fn engine_err_of(e: impl std::error::Error + 'static) -> BackendError {
    engine_err(with_causes(&e))
}

/// `e` and its sources, each once, joined by ": ".
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !message.contains(&m) {
            message.push_str(": ");
            message.push_str(&m);
        }
        cause = c.source();
    }
    message
}

/// Where and how to connect: the engine's settings, and the TLS connector
/// built from the URL's `sslmode` and `sslrootcert`.
#[derive(Clone)]
struct Target {
    cfg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pool: idem_sql::PoolSettings,
}

/// Parses a `postgres://` URL. TLS follows libpq's `sslmode`: absent or
/// `disable`, no TLS (as before TLS support); `prefer`, TLS when the server
/// offers it; `require`, `verify-ca` and `verify-full`, TLS or no
/// connection. Whenever TLS is used the server's certificate is verified
/// (chain and host name), against the CA certificates in `sslrootcert`
/// or else the system's roots: idem never encrypts to an unverified peer.
///
/// `pool_size`, `pool_wait_ms` and `lock_timeout_ms` are idem's
/// ([`idem_sql::PoolSettings`]).
fn parse_config(url: &str) -> Result<Target, BackendError> {
    let (url, pool) = idem_sql::PoolSettings::take_from(url).map_err(engine_err)?;
    let (rest, mode) = idem_core::store_url::take_param(&url, "sslmode");
    let (rest, root) = idem_core::store_url::take_param(&rest, "sslrootcert");
    let mut cfg =
        rest.parse::<tokio_postgres::Config>().map_err(|e| engine_err(format!("bad URL: {}", with_causes(&e))))?;
    cfg.ssl_mode(match mode.as_deref() {
        None | Some("disable") => SslMode::Disable,
        Some("prefer") => SslMode::Prefer,
        Some("require" | "verify-ca" | "verify-full") => SslMode::Require,
        Some(other) => {
            return Err(engine_err(format!(
                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
            )))
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    match &root {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| engine_err(format!("sslrootcert {path}: {e}")))?;
            for cert in <rustls::pki_types::CertificateDer as PemObject>::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| engine_err(format!("sslrootcert {path}: {e}")))?;
                roots.add(cert).map_err(|e| engine_err(format!("sslrootcert {path}: {e}")))?;
            }
        }
        None if cfg.get_ssl_mode() != SslMode::Disable => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot parse is skipped, as a browser would.
                let _ = roots.add(cert);
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(engine_err_of)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Target { cfg, tls: MakeRustlsConnect::new(tls), pool })
}

impl PgBackend {
    /// Whether the next CLAIM tries the bare insert first ([`idem_sql::InsertFirst`]): for
    /// tests that must reach both of CLAIM's first statements.
    #[doc(hidden)]
    pub fn claim_tries_insert_first(&self) -> bool {
        self.inner.claim_mix.bare()
    }

    /// Whether the next IDEM.BEGIN (without WAIT) tries the bare insert
    /// first ([`idem_sql::InsertFirst::begin`]): for tests that must reach
    /// both of its first statements.
    #[doc(hidden)]
    pub fn begin_tries_insert_first(&self) -> bool {
        self.inner.begin_mix.bare()
    }

    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// creating or upgrading idem's schema first when it is missing or older
    /// than this build's, and starts the LISTEN and cleanup tasks. Must be
    /// called inside a Tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::connect_clocked(url, None).await
    }

    /// [`PgBackend::connect`], with engine time set by `clock` instead of
    /// the database's: every connection the backend takes from its pool
    /// first sets the session variable `idem.test_now_ms`, which
    /// `idem_now_ms()` reads. Only this backend's sessions see that time;
    /// it runs no expired-row cleanup (which would delete by the test's
    /// time rows of other clients). Test-only: the `test-clock` feature.
    #[cfg(feature = "test-clock")]
    pub async fn connect_with_test_clock(url: &str, clock: idem_core::TestClock) -> Result<Self, BackendError> {
        Self::connect_clocked(url, Some(clock)).await
    }

    async fn connect_clocked(url: &str, test_clock: Option<idem_core::TestClock>) -> Result<Self, BackendError> {
        let target = parse_config(url)?;
        let version = schema_version(&target).await?;
        if version > schema::SCHEMA_VERSION {
            return Err(engine_err(format!(
                "the schema is at version {version}, newer than this build's {}; upgrade idem",
                schema::SCHEMA_VERSION
            )));
        }
        if version < schema::SCHEMA_VERSION {
            migrate_config(&target).await?;
        }
        let listen_target = target.clone();
        let Target { mut cfg, tls, pool: settings } = target;
        // Commands must not wait forever on a row that a caller's own long
        // transaction has locked; `lock_timeout` turns that into BUSY.
        let options =
            format!("{} -c lock_timeout={}", cfg.get_options().unwrap_or(""), settings.lock_timeout.as_millis());
        cfg.options(options.trim());
        if cfg.get_application_name().is_none() {
            cfg.application_name("idem");
        }
        let mgr = Manager::from_config(cfg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let mut builder = Pool::builder(mgr)
            .max_size(settings.size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.wait))
            .create_timeout(Some(settings.wait));
        if let Some(clock) = &test_clock {
            // New and recycled connections alike: a hook runs on every `get`.
            let (a, b) = (clock.clone(), clock.clone());
            builder = builder
                .post_create(Hook::async_fn(move |c, _| set_test_now(c, a.now_ms())))
                .post_recycle(Hook::async_fn(move |c, _| set_test_now(c, b.now_ms())));
        }
        let pool = builder.build().map_err(engine_err_of)?;
        // Fail now, not on the first command, when the engine is unreachable.
        let first = pool.get().await.map_err(|e| match e {
            // A new connection must be made within the pool wait too: name
            // the setting, since "Timeout occurred" alone does not.
            deadpool_postgres::PoolError::Timeout(_) => engine_err(format!(
                "no connection within pool_wait_ms = {} ms (it bounds making a connection too): {}",
                settings.wait.as_millis(),
                with_causes(&e)
            )),
            e => engine_err_of(e),
        })?;
        drop(first);
        let inner = Arc::new(Inner {
            pool: pool.clone(),
            waits: Arc::new(BackendWaiters::new(Limits::default().waiters_per_key_max)),
            listening: Arc::new(AtomicBool::new(false)),
            claim_mix: idem_sql::InsertFirst::claim(),
            begin_mix: idem_sql::InsertFirst::begin(),
        });
        let mut tasks = vec![tokio::spawn(listen_loop(listen_target, inner.waits.clone(), inner.listening.clone()))];
        if test_clock.is_none() {
            tasks.push(tokio::spawn(cleanup_loop(pool)));
        }
        Ok(PgBackend { inner, tasks })
    }
}

/// Sets the engine time of one session (a test clock, see
/// [`PgBackend::connect_with_test_clock`]): `idem_now_ms()` returns it.
fn set_test_now(
    client: &mut deadpool_postgres::ClientWrapper,
    now_ms: u64,
) -> futures::future::BoxFuture<'_, Result<(), HookError>> {
    Box::pin(async move {
        let now = now_ms.to_string();
        client
            .execute("SELECT set_config('idem.test_now_ms', $1, false)", &[&now])
            .await
            .map_err(HookError::Backend)?;
        Ok(())
    })
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Creates or upgrades idem's schema in the database at `url`. Idempotent;
/// concurrent runs (several idem processes starting at once) serialise on a
/// session advisory lock, and each step commits together with its version.
pub async fn migrate(url: &str) -> Result<(), BackendError> {
    migrate_config(&parse_config(url)?).await
}

async fn connect_one(target: &Target) -> Result<tokio_postgres::Client, BackendError> {
    let (client, conn) = target.cfg.connect(target.tls.clone()).await.map_err(engine_err_of)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres: migration connection ended");
        }
    });
    Ok(client)
}

/// The version in `idem_schema_version`, 0 when the schema is absent.
async fn schema_version(target: &Target) -> Result<i32, BackendError> {
    let client = connect_one(target).await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('idem_schema_version') IS NOT NULL", &[])
        .await
        .map_err(engine_err_of)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row =
        client.query_opt("SELECT version FROM idem_schema_version WHERE id = 1", &[]).await.map_err(engine_err_of)?;
    Ok(row.map_or(0, |r| r.get(0)))
}

async fn migrate_config(target: &Target) -> Result<(), BackendError> {
    let client = connect_one(target).await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY]).await.map_err(engine_err_of)?;
    let result = apply_migrations(&client).await;
    // The lock also ends with the session; unlocking early lets waiters go.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK_KEY]).await;
    result
}

async fn apply_migrations(client: &tokio_postgres::Client) -> Result<(), BackendError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS idem_schema_version (
                 id integer PRIMARY KEY CHECK (id = 1),
                 version integer NOT NULL)",
        )
        .await
        .map_err(engine_err_of)?;
    let current: i32 = client
        .query_opt("SELECT version FROM idem_schema_version WHERE id = 1", &[])
        .await
        .map_err(engine_err_of)?
        .map_or(0, |r| r.get(0));
    if current > schema::SCHEMA_VERSION {
        return Err(engine_err(format!(
            "the schema is at version {current}, newer than this build's {}",
            schema::SCHEMA_VERSION
        )));
    }
    if current == schema::SCHEMA_VERSION {
        return Ok(());
    }
    let steps: String =
        schema::MIGRATIONS.iter().filter(|(v, _)| *v > current).map(|(_, sql)| *sql).collect::<Vec<_>>().join("\n");
    let upgrade = format!(
        "BEGIN;\n{steps}\n{routines}\nINSERT INTO idem_schema_version (id, version) VALUES (1, {version})
         ON CONFLICT (id) DO UPDATE SET version = excluded.version;\nCOMMIT;",
        routines = schema::routines(),
        version = schema::SCHEMA_VERSION,
    );
    if let Err(e) = client.batch_execute(&upgrade).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(engine_err(format!("migration from version {current} to {} failed: {e}", schema::SCHEMA_VERSION)));
    }
    tracing::info!(from = current, to = schema::SCHEMA_VERSION, "postgres: idem schema migrated");
    Ok(())
}

/// Keeps one connection LISTENing on [`WAKE_CHANNEL`] and wakes the parked
/// callers whose key a NOTIFY names; reconnects after failures.
async fn listen_loop(cfg: Target, waits: Arc<BackendWaiters>, listening: Arc<AtomicBool>) {
    loop {
        if let Err(e) = listen_once(&cfg, &waits, &listening).await {
            tracing::warn!(error = %e, "postgres: LISTEN connection failed; parked waits fall back to polling");
        }
        listening.store(false, Ordering::Relaxed);
        // Notifications may have been lost while the connection was down.
        waits.wake_all();
        tokio::time::sleep(LISTEN_RECONNECT_PAUSE).await;
    }
}

async fn listen_once(
    cfg: &Target,
    waits: &Arc<BackendWaiters>,
    listening: &AtomicBool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = cfg.cfg.connect(cfg.tls.clone()).await?;
    let waits_for_driver = waits.clone();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(msg) = messages.next().await {
            if let AsyncMessage::Notification(n) = msg? {
                if let Some((kind, key)) = parse_wake(n.payload()) {
                    waits_for_driver.wake(kind, &key);
                }
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    client.batch_execute(&format!("LISTEN {WAKE_CHANNEL}")).await?;
    listening.store(true, Ordering::Relaxed);
    waits.wake_all();
    let ended = driver.await;
    drop(client);
    match ended {
        Ok(r) => r,
        Err(join) => {
            tracing::warn!(error = %join, "postgres: LISTEN driver task ended abnormally");
            Ok(())
        }
    }
}

/// Parses a NOTIFY payload: `i` (idempotency record) or `l` (lock), then
/// the key in hex.
fn parse_wake(payload: &str) -> Option<(WaitKind, Bytes)> {
    let kind = match payload.as_bytes().first()? {
        b'i' => WaitKind::Idem,
        b'l' => WaitKind::Lock,
        _ => return None,
    };
    let hex = payload.get(1..)?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16);
    let key: Option<Vec<u8>> = hex.chunks(2).map(|p| Some((nibble(p[0])? as u8) << 4 | nibble(p[1])? as u8)).collect();
    Some((kind, Bytes::from(key?)))
}

/// Deletes expired rows in bounded batches, every [`CLEANUP_INTERVAL`].
async fn cleanup_loop(pool: Pool) {
    loop {
        tokio::time::sleep(CLEANUP_INTERVAL).await;
        for _ in 0..CLEANUP_ROUNDS_MAX {
            let deleted = async {
                let client = pool.get().await.map_err(ExecError::Pool)?;
                let stmt = client.prepare_cached(SQL_CLEANUP).await?;
                let row = client.query_one(&stmt, &[&CLEANUP_BATCH_ROWS]).await?;
                Ok::<i64, ExecError>(row.try_get(0)?)
            }
            .await;
            match deleted {
                Ok(n) if n >= i64::from(CLEANUP_BATCH_ROWS) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e.into_cmd_error(), "postgres: cleanup failed; will retry");
                    break;
                }
            }
        }
    }
}

impl Inner {
    /// One command, retried after a serialization failure or deadlock (its
    /// statement rolled back, so running it again is safe).
    async fn run_retrying(
        &self,
        client: &deadpool_postgres::Client,
        cmd: &Command,
        mark_wait: bool,
    ) -> Result<Poll, CmdError> {
        let mut tries = 0;
        let mix = match cmd {
            Command::Claim { .. } => Some(&self.claim_mix),
            Command::IdemBegin { .. } if !mark_wait => Some(&self.begin_mix),
            _ => None,
        };
        let path = Path::Fast { insert_first: mix.is_some_and(|m| m.bare()) };
        loop {
            match run_cmd(client, cmd, mark_wait, path).await {
                Ok(p) => {
                    if let Some(mix) = mix {
                        mix.note(found_taken(cmd, &p));
                    }
                    return Ok(p);
                }
                Err(e) if e.retryable() && tries < RETRIES_MAX => tries += 1,
                Err(e) => return Err(e.into_cmd_error()),
            }
        }
    }

    /// Runs commands pipelined on one connection.
    async fn run_pipeline(&self, cmds: &[Command]) -> Vec<CmdResult> {
        let client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                let err = ExecError::Pool(e).into_cmd_error();
                return cmds.iter().map(|_| Err(err.clone())).collect();
            }
        };
        if let [cmd] = cmds {
            return vec![self.run_retrying(&client, cmd, false).await.and_then(final_reply)];
        }
        // Prepare first, so that every statement below is sent in its
        // future's first poll, which `join_in_order` makes the batch order.
        // Pipelined commands are not retried: a retry would run out of order.
        for cmd in cmds {
            if let Err(e) = client.prepare_cached(sql_of(cmd, Path::Strict)).await {
                let err = db_cmd_error(&e);
                return cmds.iter().map(|_| Err(err.clone())).collect();
            }
        }
        let futs: Vec<BoxFuture<'_, CmdResult>> = cmds
            .iter()
            .map(|cmd| {
                let client = &client;
                Box::pin(async move {
                    run_cmd(client, cmd, false, Path::Strict)
                        .await
                        .map_err(ExecError::into_cmd_error)
                        .and_then(final_reply)
                }) as BoxFuture<'_, CmdResult>
            })
            .collect();
        join_in_order(futs).await
    }
}

impl SqlRunner for Inner {
    fn waits(&self) -> &BackendWaiters {
        &self.waits
    }

    fn poll_cap(&self) -> Duration {
        if self.listening.load(Ordering::Relaxed) {
            POLL_BACKOFF_MAX_LISTENING
        } else {
            idem_sql::POLL_BACKOFF_MAX
        }
    }

    fn run_plain<'a>(&'a self, cmds: &'a [Command]) -> BoxFuture<'a, Vec<CmdResult>> {
        Box::pin(self.run_pipeline(cmds))
    }

    fn poll_once<'a>(&'a self, cmd: &'a Command, mark_wait: bool) -> BoxFuture<'a, Result<Poll, CmdError>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(|e| ExecError::Pool(e).into_cmd_error())?;
            self.run_retrying(&client, cmd, mark_wait).await
        })
    }
}

/// The reply of a command that does not park (a blocked IDEM.BEGIN or LOCK
/// without WAIT answers `running` or `busy` at once).
fn final_reply(p: Poll) -> CmdResult {
    match p {
        Poll::Final(r) => r,
        Poll::Blocked { reply, .. } => Ok(reply),
    }
}

/// Polls every future in index order until all are ready, so that futures
/// which send their request on their first poll send them in that order.
async fn join_in_order<T>(mut futs: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    futures::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in out.iter_mut().zip(futs.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Whether a CLAIM or IDEM.BEGIN found its key taken, for the
/// [`idem_sql::InsertFirst`] mixes: another owner holds the claim, or the
/// record exists (running, done or mismatch).
fn found_taken(cmd: &Command, reply: &Poll) -> bool {
    let word = match reply {
        Poll::Final(Ok(Reply::Array(v))) => v.first(),
        _ => None,
    };
    match cmd {
        Command::Claim { .. } => matches!(word, Some(Reply::Word("held"))),
        _ => !matches!(word, Some(Reply::Word("started"))),
    }
}

/// Which statement a command with a fast path sends first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The lock-free first try (e.g. [`SQL_CLAIM_FAST`]), and the function
    /// only when it cannot answer: two statements in the worst case (three
    /// for a CLAIM or an IDEM.BEGIN sent as the bare insert).
    Fast {
        /// CLAIM tries [`SQL_CLAIM_INSERT`] first instead of
        /// [`SQL_CLAIM_FAST`], IDEM.BEGIN [`SQL_BEGIN_INSERT`] instead of
        /// [`SQL_BEGIN_FAST`].
        insert_first: bool,
    },
    /// The function alone: one statement, as a pipelined batch needs, whose
    /// statements must run in the batch's order.
    Strict,
}

fn sql_of(cmd: &Command, path: Path) -> &'static str {
    match cmd {
        Command::Claim { ttl_ms, .. } => match (path, ttl_ms) {
            (Path::Fast { insert_first: true }, None) => SQL_CLAIM_INSERT_NO_TTL,
            (Path::Fast { insert_first: true }, Some(_)) => SQL_CLAIM_INSERT,
            (Path::Fast { insert_first: false }, None) => SQL_CLAIM_FAST_NO_TTL,
            (Path::Fast { insert_first: false }, Some(_)) => SQL_CLAIM_FAST,
            (Path::Strict, _) => SQL_CLAIM,
        },
        Command::IdemBegin { .. } if path == (Path::Fast { insert_first: true }) => SQL_BEGIN_INSERT,
        Command::IdemBegin { .. } if path != Path::Strict => SQL_BEGIN_FAST,
        Command::IdemBegin { .. } => SQL_BEGIN,
        Command::IdemCommit { .. } => SQL_COMMIT,
        Command::IdemAbort { .. } => SQL_ABORT,
        Command::IdemRenew { .. } => SQL_IDEM_RENEW,
        Command::IdemGet { .. } => SQL_GET,
        Command::IdemDel { .. } => SQL_DEL,
        Command::ClaimAll { .. } => SQL_CLAIM_ALL,
        Command::Release { .. } => SQL_RELEASE,
        Command::Owner { .. } => SQL_OWNER,
        Command::Lock { .. } => SQL_LOCK,
        Command::Renew { .. } => SQL_RENEW,
        Command::Unlock { .. } => SQL_UNLOCK,
        Command::LockInfo { .. } => SQL_LOCK_INFO,
        Command::TokenNew { .. } => SQL_TOKEN_NEW,
        Command::TokenUse { .. } => SQL_TOKEN_USE,
        Command::CounterAdd { .. } => SQL_COUNTER_ADD,
        Command::CounterGet { .. } => SQL_COUNTER_GET,
        Command::ValueGet { .. } => SQL_VALUE_GET,
        Command::ValueSet { .. } => SQL_VALUE_SET,
        Command::FsmMove { .. } => SQL_FSM_MOVE,
        Command::FsmGet { .. } => SQL_FSM_GET,
        Command::SlotsReserve { .. } => SQL_SLOTS_RESERVE,
        Command::SlotsRelease { .. } => SQL_SLOTS_RELEASE,
        Command::SlotsGet { .. } => SQL_SLOTS_GET,
    }
}

fn bulk(b: Vec<u8>) -> Reply {
    Reply::Bulk(Bytes::from(b))
}

/// This crate's name in errors.
const ENGINE: &str = "postgres";

/// A result row as the shared decoder reads it.
struct PgRow<'a>(&'a Row);

impl PgRow<'_> {
    fn get<'r, T: tokio_postgres::types::FromSql<'r>>(&'r self, i: usize) -> Result<T, CmdError> {
        self.0.try_get(i).map_err(|e| idem_core::outcome::unexpected(ENGINE, format!("column {i}: {e}")))
    }
}

impl SqlRow for PgRow<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, CmdError> {
        self.get(i)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, CmdError> {
        // The functions answer counts as `integer` and fences, values and
        // durations as `bigint`.
        match self.0.columns().get(i).map(|c| c.type_().clone()) {
            Some(t) if t == tokio_postgres::types::Type::INT4 => Ok(self.get::<Option<i32>>(i)?.map(i64::from)),
            _ => self.get(i),
        }
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, CmdError> {
        self.get(i)
    }
}

/// Runs one command as one statement. `mark_wait` (IDEM.BEGIN and LOCK only)
/// flags the row as watched by a parked caller. LOCK.INFO's waiter count is
/// filled in by [`idem_sql::execute_batch`].
async fn run_cmd(
    client: &deadpool_postgres::Client,
    cmd: &Command,
    mark_wait: bool,
    path: Path,
) -> Result<Poll, ExecError> {
    // Marking the record as watched is a write: the locking path does it.
    let path = if mark_wait { Path::Strict } else { path };
    let stmt = client.prepare_cached(sql_of(cmd, path)).await.map_err(|e| ExecError::NotSent(Some(e)))?;
    if client.is_closed() {
        // Nothing was sent: the command certainly did not run.
        return Err(ExecError::NotSent(None));
    }
    let rows = match cmd {
        Command::IdemBegin { key, fingerprint, lease_ms, .. } => {
            let (key, fp, lease) = (key.as_ref(), fingerprint.as_deref(), to_i64(*lease_ms));
            if path != Path::Strict {
                let mut rows = client.query(&stmt, &[&key, &fp, &lease]).await?;
                if rows.is_empty() && path == (Path::Fast { insert_first: true }) {
                    // The key exists: the one-statement form reads its record.
                    let stmt = client.prepare_cached(SQL_BEGIN_FAST).await.map_err(|e| ExecError::NotSent(Some(e)))?;
                    rows = client.query(&stmt, &[&key, &fp, &lease]).await?;
                }
                if !rows.is_empty() {
                    let rows: Vec<PgRow<'_>> = rows.iter().map(PgRow).collect();
                    return Ok(idem_sql::decode(ENGINE, cmd, &rows)?);
                }
                // The first try wrote nothing: decide under the locks.
                let stmt = client.prepare_cached(SQL_BEGIN).await.map_err(|e| ExecError::NotSent(Some(e)))?;
                client.query(&stmt, &[&key, &fp, &lease, &mark_wait]).await?
            } else {
                client.query(&stmt, &[&key, &fp, &lease, &mark_wait]).await?
            }
        }
        Command::IdemCommit { key, fence, result, keep_ms } => {
            client.query(&stmt, &[&key.as_ref(), &to_i64(*fence), &result.as_ref(), &to_i64(*keep_ms)]).await?
        }
        Command::IdemAbort { key, fence } => client.query(&stmt, &[&key.as_ref(), &to_i64(*fence)]).await?,
        Command::IdemRenew { key, fence, lease_ms } => {
            client.query(&stmt, &[&key.as_ref(), &to_i64(*fence), &to_i64(*lease_ms)]).await?
        }
        Command::IdemGet { key } | Command::IdemDel { key } | Command::Owner { key } | Command::CounterGet { key } => {
            client.query(&stmt, &[&key.as_ref()]).await?
        }
        Command::Claim { key, owner, ttl_ms } => {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&key.as_ref(), &owner.as_ref(), &ttl_ms.map(to_i64)];
            let mut rows = match (path, ttl_ms) {
                (Path::Fast { .. }, None) => client.query(&stmt, &params[..2]).await?,
                _ => client.query(&stmt, &params).await?,
            };
            if rows.is_empty() && path == (Path::Fast { insert_first: true }) {
                // The key is taken: another live owner answers `held`.
                let stmt = client.prepare_cached(SQL_CLAIM_HOLDER).await.map_err(|e| ExecError::NotSent(Some(e)))?;
                rows = client.query(&stmt, &params[..2]).await?;
            }
            if rows.is_empty() && path != Path::Strict {
                // The first try wrote nothing: decide under the row lock.
                let stmt = client.prepare_cached(SQL_CLAIM).await.map_err(|e| ExecError::NotSent(Some(e)))?;
                client.query(&stmt, &params).await?
            } else {
                rows
            }
        }
        Command::ClaimAll { owner, keys } => {
            let keys = idem_sql::distinct_keys(keys);
            let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
            client.query(&stmt, &[&owner.as_ref(), &key_refs]).await?
        }
        Command::Release { key, owner } => client.query(&stmt, &[&key.as_ref(), &owner.as_ref()]).await?,
        Command::Lock { name, owner, lease_ms, .. } => {
            client.query(&stmt, &[&name.as_ref(), &owner.as_ref(), &to_i64(*lease_ms), &mark_wait]).await?
        }
        Command::Renew { name, owner, lease_ms } => {
            client.query(&stmt, &[&name.as_ref(), &owner.as_ref(), &to_i64(*lease_ms)]).await?
        }
        Command::Unlock { name, owner } => client.query(&stmt, &[&name.as_ref(), &owner.as_ref()]).await?,
        Command::LockInfo { name } => client.query(&stmt, &[&name.as_ref()]).await?,
        Command::TokenNew { scope, ttl_ms } => {
            let token = idem_sql::new_token();
            client.query_one(&stmt, &[&scope.as_ref(), &token.as_ref(), &to_i64(*ttl_ms)]).await?;
            return Ok(Poll::Final(Ok(Reply::Bulk(token))));
        }
        Command::TokenUse { scope, token } => client.query(&stmt, &[&scope.as_ref(), &token.as_ref()]).await?,
        Command::CounterAdd { key, delta, min, max, op, keep_ms } => {
            client.query(&stmt, &[&key.as_ref(), delta, min, max, &op.as_deref(), &to_i64(*keep_ms)]).await?
        }
        Command::ValueGet { key } => {
            let reply = match client.query_opt(&stmt, &[&key.as_ref()]).await? {
                Some(row) => Reply::Array(vec![bulk(row.try_get(0)?), uint(row.try_get(1)?)]),
                None => Reply::Nil,
            };
            return Ok(Poll::Final(Ok(reply)));
        }
        Command::ValueSet { key, value, if_version } => {
            client.query(&stmt, &[&key.as_ref(), &value.as_ref(), &if_version.map(to_i64)]).await?
        }
        Command::FsmMove { key, to, from } => {
            let from_refs: Vec<&[u8]> = from.iter().map(|s| s.as_ref()).collect();
            client.query(&stmt, &[&key.as_ref(), &to.as_ref(), &from_refs]).await?
        }
        Command::FsmGet { key } => {
            let reply = match client.query_opt(&stmt, &[&key.as_ref()]).await? {
                Some(row) => bulk(row.try_get(0)?),
                None => Reply::Nil,
            };
            return Ok(Poll::Final(Ok(reply)));
        }
        Command::SlotsReserve { resource, first, last, holder, size } => {
            let size = size.map(|s| i32::try_from(s).unwrap_or(i32::MAX));
            let (first, last) = (slot_i32(*first), slot_i32(*last));
            client.query(&stmt, &[&resource.as_ref(), &first, &last, &holder.as_ref(), &size]).await?
        }
        Command::SlotsRelease { resource, first, last, holder } => {
            let (first, last) = (slot_i32(*first), slot_i32(*last));
            client.query(&stmt, &[&resource.as_ref(), &first, &last, &holder.as_ref()]).await?
        }
        Command::SlotsGet { resource } => client.query(&stmt, &[&resource.as_ref()]).await?,
    };
    let rows: Vec<PgRow<'_>> = rows.iter().map(PgRow).collect();
    Ok(idem_sql::decode(ENGINE, cmd, &rows)?)
}

fn slot_i32(v: u32) -> i32 {
    // Slots are below `Limits::slots_size_max` (65 536 by default), far below i32::MAX.
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(idem_sql::execute_batch(&*self.inner, cmds))
    }

    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async move {
            let client = self.inner.pool.get().await.map_err(|e| ExecError::Pool(e).into_cmd_error())?;
            let row = client.query_one(SQL_DBSIZE, &[]).await.map_err(|e| db_cmd_error(&e))?;
            let n: i64 = row.try_get(0).map_err(|e| db_cmd_error(&e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn inspect_idem<'a>(
        &'a self,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<idem_core::machine::IdemView>, CmdError>> {
        Box::pin(async move {
            let client = self.inner.pool.get().await.map_err(|e| ExecError::Pool(e).into_cmd_error())?;
            let row = client.query_opt(SQL_INSPECT_IDEM, &[&key]).await.map_err(|e| db_cmd_error(&e))?;
            let stored = match row {
                Some(r) => {
                    let get = |i: usize| r.try_get::<_, i64>(i).map_err(|e| db_cmd_error(&e));
                    let state: String = r.try_get(0).map_err(|e| db_cmd_error(&e))?;
                    Some(idem_sql::stored_idem(&state, get(1)?, get(2)?, get(3)?, get(4)?)?)
                }
                None => None,
            };
            Ok(Some(idem_sql::idem_view(&self.inner.waits, key, stored)))
        })
    }

    fn info(&self) -> Vec<(String, String)> {
        let status = self.inner.pool.status();
        vec![
            ("postgres_pool_size".into(), status.size.to_string()),
            ("postgres_pool_available".into(), status.available.to_string()),
            ("postgres_listening".into(), self.inner.listening.load(Ordering::Relaxed).to_string()),
            ("postgres_schema_version".into(), schema::SCHEMA_VERSION.to_string()),
            // This server's parked callers: the only ones it can count.
            ("parked_waiters".into(), self.inner.waits.total().to_string()),
        ]
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for t in &self.tasks {
                t.abort();
            }
            self.inner.pool.close();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_payloads_parse() {
        assert_eq!(parse_wake("i6b31"), Some((WaitKind::Idem, Bytes::from_static(b"k1"))));
        assert_eq!(parse_wake("l00ff"), Some((WaitKind::Lock, Bytes::from_static(&[0, 255]))));
        assert_eq!(parse_wake("x00"), None);
        assert_eq!(parse_wake("i0"), None);
        assert_eq!(parse_wake("izz"), None);
        assert_eq!(parse_wake(""), None);
    }
}
