//! idem's primitives inside the caller's own MySQL / MariaDB transaction.
//!
//! Each function runs one `CALL idem_*` (the procedures [`super::migrate`]
//! installs) on the caller's transaction, so a claim or an idempotency record
//! commits or rolls back together with the business rows written beside it
//! (docs/scenarios.md S2, S3). The answer types are shared with
//! `idem-postgres`'s `tx` (they live in [`idem_core::outcome`]).
//!
//! ```no_run
//! # async fn demo(pool: &mysql_async::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! use idem_mysql::tx::{self, Claimed};
//! use mysql_async::prelude::Queryable;
//! let mut conn = pool.get_conn().await?;
//! let mut t = conn.start_transaction(mysql_async::TxOpts::default()).await?;
//! match tx::claim(&mut t, b"user:openid-1", b"req-42", None).await? {
//!     Claimed::Claimed => {
//!         t.exec_drop("INSERT INTO users (openid) VALUES (?)", ("openid-1",)).await?;
//!         t.commit().await?;
//!     }
//!     Claimed::Held { owner } => { /* a replay: answer with the first response */ }
//! }
//! # Ok(()) }
//! ```
//!
//! Concurrency, at any isolation level including REPEATABLE READ (InnoDB's
//! default): the procedures read with locking reads, never the transaction's
//! snapshot. Two transactions claiming one key serialise on its row: the
//! second waits until the first commits or rolls back, then gets `Held` (or
//! `Claimed`), never a duplicate-key error. A deadlock (error 1213, rare:
//! claim several keys in a fixed order) rolls back the caller's whole
//! transaction: [`Error::is_retryable`] says so; retry the transaction.
//!
//! On MySQL the procedures that draw a fence (`idem_begin`, and `idem_lock`)
//! change the session's `LAST_INSERT_ID()`: read your own insert's id before
//! calling them (MariaDB draws fences from a sequence instead).
//!
//! A fence from [`idem_begin`] is provisional until the transaction
//! commits: if it rolls back, the grant never took effect, and a backend's
//! IDEM.BEGIN of the key that was already under way (on MariaDB it draws
//! its fence before it reaches the key) may be granted a lower fence. Hand
//! the fence to a resource outside the transaction only after COMMIT. Fences
//! of grants that took effect strictly increase per key.

use bytes::Bytes;
use mysql_async::{Transaction, Value};

use idem_core::outcome::{unexpected, ClaimStatus, CounterStatus, EndStatus, IdemRenewStatus};
pub use idem_core::outcome::{Begin, Claimed, Counted};
use idem_core::CmdError;
use idem_sql::{to_i64, SqlRow};

use super::{call_one, col, MyRow, ENGINE, ER_LOCK_DEADLOCK};

/// Why an in-transaction call failed.
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
    #[error("mysql: {0}")]
    Db(#[from] mysql_async::Error),
    /// The engine answered with a shape these procedures do not write (a
    /// schema from another idem version).
    #[error("mysql: unexpected reply: {0}")]
    Unexpected(String),
}

impl Error {
    /// Whether retrying the whole transaction may succeed: a deadlock, after
    /// which InnoDB has rolled the transaction back.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Db(mysql_async::Error::Server(s)) if s.code == ER_LOCK_DEADLOCK)
    }
}

fn bytes(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
}

fn opt_i64(v: Option<i64>) -> Value {
    v.map_or(Value::NULL, Value::Int)
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

/// CLAIM inside `t`: claims `key` for `owner`, until released (`ttl_ms`
/// None) or for `ttl_ms` milliseconds. Claiming a key one already owns
/// succeeds again (and sets the new TTL).
pub async fn claim(t: &mut Transaction<'_>, key: &[u8], owner: &[u8], ttl_ms: Option<u64>) -> Result<Claimed, Error> {
    let row =
        call_one(t, "CALL idem_claim(?, ?, ?)", vec![bytes(key), bytes(owner), opt_i64(ttl_ms.map(to_i64))]).await?;
    Ok(match status(ClaimStatus::parse, &col::<String>(&row, 0)?)? {
        ClaimStatus::Claimed => Claimed::Claimed,
        ClaimStatus::Held => Claimed::Held { owner: Bytes::from(col::<Vec<u8>>(&row, 1)?) },
    })
}

/// RELEASE inside `t`: true if `owner`'s live claim on `key` was removed.
pub async fn release(t: &mut Transaction<'_>, key: &[u8], owner: &[u8]) -> Result<bool, Error> {
    let row = call_one(t, "CALL idem_release(?, ?)", vec![bytes(key), bytes(owner)]).await?;
    released(col::<i64>(&row, 0)?)
}

/// OWNER inside `t`: who holds a live claim on `key` (the newest committed
/// claim, or this transaction's own).
pub async fn owner(t: &mut Transaction<'_>, key: &[u8]) -> Result<Option<Bytes>, Error> {
    let row = call_one(t, "CALL idem_owner(?)", vec![bytes(key)]).await?;
    Ok(col::<Option<Vec<u8>>>(&row, 0)?.map(Bytes::from))
}

/// IDEM.BEGIN inside `t` (without WAIT: a `Running` answer returns at once).
pub async fn idem_begin(
    t: &mut Transaction<'_>,
    key: &[u8],
    fingerprint: Option<&[u8]>,
    lease_ms: u64,
) -> Result<Begin, Error> {
    let fp = fingerprint.map_or(Value::NULL, bytes);
    let row = call_one(t, "CALL idem_begin(?, ?, ?)", vec![bytes(key), fp, Value::Int(to_i64(lease_ms))]).await?;
    begun(&MyRow(&row))
}

/// IDEM.COMMIT inside `t`: stores `result` for `keep_ms` milliseconds.
pub async fn idem_commit(
    t: &mut Transaction<'_>,
    key: &[u8],
    fence: u64,
    result: &[u8],
    keep_ms: u64,
) -> Result<(), Error> {
    let params = vec![bytes(key), Value::Int(to_i64(fence)), bytes(result), Value::Int(to_i64(keep_ms))];
    let row = call_one(t, "CALL idem_commit(?, ?, ?, ?)", params).await?;
    match status(EndStatus::parse, &col::<String>(&row, 0)?)? {
        EndStatus::Ok => Ok(()),
        EndStatus::Stale => Err(Error::Stale(fence)),
    }
}

/// IDEM.RENEW inside `t`: the running record's lease now ends `lease_ms`
/// from now (on the database clock). `Error::Stale` when `fence` no longer
/// holds the key.
pub async fn idem_renew(t: &mut Transaction<'_>, key: &[u8], fence: u64, lease_ms: u64) -> Result<(), Error> {
    let params = vec![bytes(key), Value::Int(to_i64(fence)), Value::Int(to_i64(lease_ms))];
    let row = call_one(t, "CALL idem_record_renew(?, ?, ?)", params).await?;
    match status(IdemRenewStatus::parse, &col::<String>(&row, 0)?)? {
        IdemRenewStatus::Renewed => Ok(()),
        IdemRenewStatus::Stale => Err(Error::Stale(fence)),
    }
}

/// IDEM.ABORT inside `t`: removes the running record so it may be retried.
pub async fn idem_abort(t: &mut Transaction<'_>, key: &[u8], fence: u64) -> Result<(), Error> {
    let row = call_one(t, "CALL idem_abort(?, ?)", vec![bytes(key), Value::Int(to_i64(fence))]).await?;
    match status(EndStatus::parse, &col::<String>(&row, 0)?)? {
        EndStatus::Ok => Ok(()),
        EndStatus::Stale => Err(Error::Stale(fence)),
    }
}

/// COUNTER.ADD inside `t`: adds `delta` unless the result would leave
/// `[min, max]`; with `op`, at most once per op id within `keep_ms`.
pub async fn counter_add(
    t: &mut Transaction<'_>,
    key: &[u8],
    delta: i64,
    min: Option<i64>,
    max: Option<i64>,
    op: Option<&[u8]>,
    keep_ms: u64,
) -> Result<Counted, Error> {
    let op = op.map_or(Value::NULL, bytes);
    let params = vec![bytes(key), Value::Int(delta), opt_i64(min), opt_i64(max), op, Value::Int(to_i64(keep_ms))];
    let row = call_one(t, "CALL idem_counter_add(?, ?, ?, ?, ?, ?)", params).await?;
    let value: i64 = col(&row, 1)?;
    Ok(Counted::of(status(CounterStatus::parse, &col::<String>(&row, 0)?)?, value))
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
