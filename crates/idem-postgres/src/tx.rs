//! idem's primitives inside the caller's own PostgreSQL transaction.
//!
//! Each function runs one statement (one of the `idem_*` functions that
//! [`super::migrate`] installs) on the caller's transaction, so a claim or an
//! idempotency record commits or rolls back together with the business rows
//! written beside it: a rolled-back insert leaves no claim behind, and a
//! committed one cannot exist without its claim (docs/scenarios.md S2, S3).
//!
//! ```no_run
//! # async fn demo(client: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use idem_postgres::tx::{self, Claimed};
//! let t = client.transaction().await?;
//! match tx::claim(&t, b"product:acme:X1", b"req-42", None).await? {
//!     Claimed::Claimed => {
//!         t.execute("INSERT INTO products (name, model) VALUES ('acme', 'X1')", &[]).await?;
//!         t.commit().await?;
//!     }
//!     Claimed::Held { owner } => { /* a duplicate: answer with the existing product */ }
//! }
//! # Ok(()) }
//! ```
//!
//! Concurrency: two transactions claiming the same key serialise on the
//! claim row; the second waits until the first commits or rolls back, then
//! gets `Held` or `Claimed` (never a duplicate-key error). This holds under
//! READ COMMITTED, PostgreSQL's default. Under REPEATABLE READ or
//! SERIALIZABLE the second instead fails with a serialization error (SQLSTATE
//! 40001, [`Error::is_retryable`]): retry the whole transaction, as always at
//! those levels.
//!
//! Time and fences are the database's, as in the backend (see
//! [`super`]). A row these functions wrote stays locked until the caller's
//! transaction ends, so keep such transactions short: other callers of the
//! same key wait for it.

use bytes::Bytes;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Transaction};

pub use idem_core::outcome::{Begin, Claimed, Counted};
use idem_core::outcome::{BeginStatus, ClaimStatus, CounterStatus, EndStatus, IdemRenewStatus};
use idem_sql::to_i64;

/// Why an in-transaction call failed. After [`Error::Db`] the transaction is
/// aborted (PostgreSQL refuses further statements): roll it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key was begun with a different fingerprint.
    #[error("MISMATCH this key was begun with a different fingerprint")]
    Mismatch,
    /// The fence is not the current one of the key.
    #[error("STALE fence {0} is not the current one")]
    Stale(u64),
    /// The statement failed (including a missing schema: run `migrate` first).
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The engine answered with a shape these functions do not write (a
    /// schema from another idem version).
    #[error("postgres: unexpected reply: {0}")]
    Unexpected(String),
}

impl Error {
    /// Whether retrying the whole transaction may succeed: a serialization
    /// failure or a deadlock.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Db(e) if super::is_retryable(e))
    }
}

async fn one(tx: &Transaction<'_>, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Row, Error> {
    // `query_typed` sends parse, bind and execute at once: one round trip.
    let rows = tx.query_typed(sql, params).await?;
    rows.into_iter().next().ok_or(Error::Unexpected("no row".into()))
}

/// The status word `word` as one of a command's closed set; any other is
/// [`Error::Unexpected`].
fn status<S>(parse: fn(&str, &str) -> Result<S, idem_core::CmdError>, word: &str) -> Result<S, Error> {
    parse("postgres", word).map_err(|e| Error::Unexpected(e.message))
}

/// CLAIM inside `tx`: claims `key` for `owner`, until released (`ttl_ms`
/// None) or for `ttl_ms` milliseconds. Claiming a key one already owns
/// succeeds again (and sets the new TTL).
pub async fn claim(tx: &Transaction<'_>, key: &[u8], owner: &[u8], ttl_ms: Option<u64>) -> Result<Claimed, Error> {
    let ttl = ttl_ms.map(to_i64);
    let row = one(
        tx,
        "SELECT status, owner FROM idem_claim($1, $2, $3)",
        &[(&key, Type::BYTEA), (&owner, Type::BYTEA), (&ttl, Type::INT8)],
    )
    .await?;
    Ok(match status(ClaimStatus::parse, row.try_get::<_, &str>(0)?)? {
        ClaimStatus::Claimed => Claimed::Claimed,
        ClaimStatus::Held => Claimed::Held { owner: Bytes::from(row.try_get::<_, Vec<u8>>(1)?) },
    })
}

/// RELEASE inside `tx`: true if `owner`'s live claim on `key` was removed.
pub async fn release(tx: &Transaction<'_>, key: &[u8], owner: &[u8]) -> Result<bool, Error> {
    let row = one(tx, "SELECT idem_release($1, $2)", &[(&key, Type::BYTEA), (&owner, Type::BYTEA)]).await?;
    Ok(row.try_get::<_, i32>(0)? == 1)
}

/// OWNER inside `tx`: who holds a live claim on `key`.
pub async fn owner(tx: &Transaction<'_>, key: &[u8]) -> Result<Option<Bytes>, Error> {
    let row = one(tx, "SELECT idem_owner($1)", &[(&key, Type::BYTEA)]).await?;
    Ok(row.try_get::<_, Option<Vec<u8>>>(0)?.map(Bytes::from))
}

/// IDEM.BEGIN inside `tx` (without WAIT: a `Running` answer returns at once).
pub async fn idem_begin(
    tx: &Transaction<'_>,
    key: &[u8],
    fingerprint: Option<&[u8]>,
    lease_ms: u64,
) -> Result<Begin, Error> {
    let lease = to_i64(lease_ms);
    let wait = false;
    let row = one(
        tx,
        "SELECT status, fence, n, result FROM idem_begin($1, $2, $3, $4)",
        &[(&key, Type::BYTEA), (&fingerprint, Type::BYTEA), (&lease, Type::INT8), (&wait, Type::BOOL)],
    )
    .await?;
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(match status(BeginStatus::parse, row.try_get::<_, &str>(0)?)? {
        BeginStatus::Started => Begin::Started {
            fence: u(row.try_get(1)?),
            attempt: u32::try_from(row.try_get::<_, i64>(2)?).unwrap_or(u32::MAX),
        },
        BeginStatus::Running => Begin::Running { fence: u(row.try_get(1)?), left_ms: u(row.try_get(2)?) },
        BeginStatus::Done => Begin::Done { result: Bytes::from(row.try_get::<_, Vec<u8>>(3)?) },
        BeginStatus::Mismatch => return Err(Error::Mismatch),
    })
}

/// IDEM.COMMIT inside `tx`: stores `result` for `keep_ms` milliseconds.
pub async fn idem_commit(
    tx: &Transaction<'_>,
    key: &[u8],
    fence: u64,
    result: &[u8],
    keep_ms: u64,
) -> Result<(), Error> {
    let (f, keep) = (to_i64(fence), to_i64(keep_ms));
    let row = one(
        tx,
        "SELECT idem_commit($1, $2, $3, $4)",
        &[(&key, Type::BYTEA), (&f, Type::INT8), (&result, Type::BYTEA), (&keep, Type::INT8)],
    )
    .await?;
    match status(EndStatus::parse, row.try_get::<_, &str>(0)?)? {
        EndStatus::Ok => Ok(()),
        EndStatus::Stale => Err(Error::Stale(fence)),
    }
}

/// IDEM.RENEW inside `tx`: the running record's lease now ends `lease_ms`
/// from now (on the database clock). `Error::Stale` when `fence` no longer
/// holds the key.
pub async fn idem_renew(tx: &Transaction<'_>, key: &[u8], fence: u64, lease_ms: u64) -> Result<(), Error> {
    let (f, lease) = (to_i64(fence), to_i64(lease_ms));
    let row =
        one(tx, "SELECT idem_record_renew($1, $2, $3)", &[(&key, Type::BYTEA), (&f, Type::INT8), (&lease, Type::INT8)])
            .await?;
    match status(IdemRenewStatus::parse, row.try_get::<_, &str>(0)?)? {
        IdemRenewStatus::Renewed => Ok(()),
        IdemRenewStatus::Stale => Err(Error::Stale(fence)),
    }
}

/// IDEM.ABORT inside `tx`: removes the running record so it may be retried.
pub async fn idem_abort(tx: &Transaction<'_>, key: &[u8], fence: u64) -> Result<(), Error> {
    let f = to_i64(fence);
    let row = one(tx, "SELECT idem_abort($1, $2)", &[(&key, Type::BYTEA), (&f, Type::INT8)]).await?;
    match status(EndStatus::parse, row.try_get::<_, &str>(0)?)? {
        EndStatus::Ok => Ok(()),
        EndStatus::Stale => Err(Error::Stale(fence)),
    }
}

/// COUNTER.ADD inside `tx`: adds `delta` unless the result would leave
/// `[min, max]`; with `op`, at most once per op id within `keep_ms`.
pub async fn counter_add(
    tx: &Transaction<'_>,
    key: &[u8],
    delta: i64,
    min: Option<i64>,
    max: Option<i64>,
    op: Option<&[u8]>,
    keep_ms: u64,
) -> Result<Counted, Error> {
    let keep = to_i64(keep_ms);
    let row = one(
        tx,
        "SELECT status, value FROM idem_counter_add($1, $2, $3, $4, $5, $6)",
        &[
            (&key, Type::BYTEA),
            (&delta, Type::INT8),
            (&min, Type::INT8),
            (&max, Type::INT8),
            (&op, Type::BYTEA),
            (&keep, Type::INT8),
        ],
    )
    .await?;
    let value: i64 = row.try_get(1)?;
    Ok(Counted::of(status(CounterStatus::parse, row.try_get::<_, &str>(0)?)?, value))
}
