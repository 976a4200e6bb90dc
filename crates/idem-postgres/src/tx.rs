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

use idem_core::outcome::{unexpected, ClaimStatus, CounterStatus, EndStatus, IdemRenewStatus};
pub use idem_core::outcome::{Begin, Claimed, Counted};
use idem_core::CmdError;
use idem_sql::{to_i64, SqlRow};

use super::{PgRow, ENGINE};

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

/// An answer the contract does not allow ([`unexpected`], `UNKNOWN` on the
/// backend's path) as [`Error::Unexpected`].
fn unexpected_reply(e: CmdError) -> Error {
    Error::Unexpected(e.message)
}

/// The status word `word` as one of a command's closed set; any other is
/// [`Error::Unexpected`].
fn status<S>(parse: fn(&str, &str) -> Result<S, CmdError>, word: &str) -> Result<S, Error> {
    parse(ENGINE, word).map_err(unexpected_reply)
}

/// RELEASE's count of removed claims: 0 or 1 (one key), nothing else.
fn released(n: i64) -> Result<bool, Error> {
    match n {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(unexpected_reply(unexpected(ENGINE, format!("RELEASE removed {n} claims")))),
    }
}

/// IDEM.BEGIN's row through the backend's own decoder
/// ([`idem_sql::decode::begin`]): a negative fence, an attempt beyond `u32`,
/// an unknown status word or a missing value is [`Error::Unexpected`].
fn begun<R: SqlRow>(row: &R) -> Result<Begin, Error> {
    idem_sql::decode::begin(ENGINE, row).map_err(unexpected_reply)?.ok_or(Error::Mismatch)
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
    released(i64::from(row.try_get::<_, i32>(0)?))
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
    begun(&PgRow(&row))
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

#[cfg(test)]
mod tests {
    use super::*;

    use idem_sql::test_row::{R, V};

    fn row(status: &'static str, fence: i64, n: i64) -> R {
        R(vec![V::T(status), V::I(fence), V::I(n), V::Null])
    }

    #[test]
    fn begin_rows_the_contract_allows_decode() {
        assert_eq!(begun(&row("started", 7, 2)).unwrap(), Begin::Started { fence: 7, attempt: 2 });
        assert_eq!(begun(&row("running", 7, 250)).unwrap(), Begin::Running { fence: 7, left_ms: 250 });
        let done = R(vec![V::T("done"), V::Null, V::Null, V::T("r")]);
        assert_eq!(begun(&done).unwrap(), Begin::Done { result: Bytes::from_static(b"r") });
        assert!(matches!(begun(&R(vec![V::T("mismatch"), V::Null, V::Null, V::Null])), Err(Error::Mismatch)));
    }

    #[test]
    fn begin_rows_the_contract_forbids_are_unexpected() {
        // The backend's decoder (idem_sql::decode::begin, tested in full
        // there) decides; here, that its refusals become Error::Unexpected.
        let unexpected = |r: R| matches!(begun(&r), Err(Error::Unexpected(_)));
        // Was fence 0, attempt u32::MAX: plausible answers to a caller.
        assert!(unexpected(row("started", -1, 1)), "negative fence");
        assert!(unexpected(row("started", 7, i64::from(u32::MAX) + 1)), "attempt beyond u32");
        assert!(unexpected(row("begun", 7, 1)), "unknown status word");
    }

    #[test]
    fn release_counts_other_than_0_or_1_are_unexpected() {
        assert!(!released(0).unwrap());
        assert!(released(1).unwrap());
        assert!(matches!(released(2), Err(Error::Unexpected(_))));
        assert!(matches!(released(-1), Err(Error::Unexpected(_))));
    }

    #[test]
    fn unknown_status_words_are_unexpected() {
        assert!(matches!(status(EndStatus::parse, "ok"), Ok(EndStatus::Ok)));
        assert!(matches!(status(EndStatus::parse, "okay"), Err(Error::Unexpected(_))));
        assert!(matches!(status(CounterStatus::parse, ""), Err(Error::Unexpected(_))));
    }
}
