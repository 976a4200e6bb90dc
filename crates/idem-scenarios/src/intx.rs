//! The in-transaction idem API on MariaDB, as S2 and S3 use it: claims and
//! idempotency records written by the caller's own transaction, so they
//! commit or roll back together with the business rows.
//!
//! This thin layer maps `idem_backends::mysql::tx` onto the few outcomes the
//! scenarios act on.

use anyhow::bail;

/// The outcome of claiming a unique key inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This transaction now owns the key (until it rolls back or releases).
    Claimed,
    /// Another owner holds the key (committed).
    Held(String),
}

/// The outcome of `idem_begin` inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TxBegin {
    /// Do the work in this transaction, then `idem_commit` with this fence.
    Started { fence: u64 },
    /// Done earlier: the stored result.
    Done(Vec<u8>),
    /// Another attempt holds a live lease.
    Running,
}

/// Creates idem's tables in the database `url` names (idempotent).
pub(crate) async fn migrate(url: &str) -> anyhow::Result<()> {
    let _ = url;
    bail!("idem_backends::mysql::tx is not available yet")
}

pub(crate) async fn claim(tx: &mut mysql_async::Transaction<'_>, key: &str, owner: &str) -> anyhow::Result<Claim> {
    let _ = (tx, key, owner);
    bail!("idem_backends::mysql::tx is not available yet")
}

pub(crate) async fn release(tx: &mut mysql_async::Transaction<'_>, key: &str, owner: &str) -> anyhow::Result<bool> {
    let _ = (tx, key, owner);
    bail!("idem_backends::mysql::tx is not available yet")
}

pub(crate) async fn idem_begin(
    tx: &mut mysql_async::Transaction<'_>,
    key: &str,
    fp: &str,
    lease_ms: u64,
) -> anyhow::Result<TxBegin> {
    let _ = (tx, key, fp, lease_ms);
    bail!("idem_backends::mysql::tx is not available yet")
}

pub(crate) async fn idem_commit(
    tx: &mut mysql_async::Transaction<'_>,
    key: &str,
    fence: u64,
    result: &[u8],
) -> anyhow::Result<()> {
    let _ = (tx, key, fence, result);
    bail!("idem_backends::mysql::tx is not available yet")
}
