//! The one decoder of the SQL engines' answers: the rows a PostgreSQL
//! function or a MySQL procedure returns for a command, into that command's
//! typed outcome (`idem_core::outcome`) and then its reply.
//!
//! Both schemas answer each command with the same columns (the status word
//! first), so the engines differ only in how a column is read
//! ([`SqlRow`]). Decoding is strict: a status word outside the command's
//! set, a missing or mistyped column, a negative fence or no row at all is
//! [`unexpected`] (`UNKNOWN`: the statement ran, and idem cannot tell what
//! it did), never a plausible reply.

use bytes::Bytes;
use idem_core::outcome::{
    unexpected, Begin, BeginStatus, ClaimStatus, Claimed, ClaimedAll, Counted, CounterStatus, EndStatus, Ended,
    IdemGetStatus, IdemGot, IdemRenewStatus, IdemRenewed, LockInfo, LockInfoStatus, LockRenewStatus, LockRenewed,
    LockStatus, Locked, MoveStatus, Moved, Reserved, SlotsReserveStatus, ValueSetStatus, ValueWritten,
};
use idem_core::{CmdError, CmdResult, Command, Reply};

use crate::Poll;

/// One result row as an engine crate reads it. Every getter answers `None`
/// for SQL NULL and an error (built with [`unexpected`]) for a missing
/// column or a type the schema does not write there.
pub trait SqlRow {
    /// Column `i` as text (status words).
    fn text(&self, i: usize) -> Result<Option<String>, CmdError>;
    /// Column `i` as an integer (any integer width the schema uses).
    fn int(&self, i: usize) -> Result<Option<i64>, CmdError>;
    /// Column `i` as bytes.
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, CmdError>;
}

/// Reads typed, non-NULL columns of one row for one engine.
struct Cols<'a, R> {
    engine: &'static str,
    row: &'a R,
}

impl<R: SqlRow> Cols<'_, R> {
    fn null(&self, i: usize) -> CmdError {
        unexpected(self.engine, format!("column {i} is NULL"))
    }
    fn text(&self, i: usize) -> Result<String, CmdError> {
        self.row.text(i)?.ok_or_else(|| self.null(i))
    }
    fn int(&self, i: usize) -> Result<i64, CmdError> {
        self.row.int(i)?.ok_or_else(|| self.null(i))
    }
    /// A fence, count or milliseconds left: never negative by the schema.
    fn uint(&self, i: usize) -> Result<u64, CmdError> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| unexpected(self.engine, format!("column {i} is negative ({v})")))
    }
    /// Milliseconds left of a lease: the engine's clock may have passed the
    /// end between the row's read and this answer, which means none left.
    fn left_ms(&self, i: usize) -> Result<u64, CmdError> {
        Ok(u64::try_from(self.int(i)?).unwrap_or(0))
    }
    fn bytes(&self, i: usize) -> Result<Bytes, CmdError> {
        self.row.bytes(i)?.map(Bytes::from).ok_or_else(|| self.null(i))
    }
    fn opt_bytes(&self, i: usize) -> Result<Option<Bytes>, CmdError> {
        Ok(self.row.bytes(i)?.map(Bytes::from))
    }
    fn status<S>(&self, parse: fn(&str, &str) -> Result<S, CmdError>) -> Result<S, CmdError> {
        parse(self.engine, &self.text(0)?)
    }
}

fn stale(fence: u64) -> CmdResult {
    Err(CmdError::stale(format!("fence {fence} is not the current one")))
}

/// Decodes the rows `engine` returned for `cmd` (one statement) into its
/// reply: `Poll::Blocked` for a `running` IDEM.BEGIN or a `busy` LOCK (the
/// caller decides whether to wait), `Poll::Final` otherwise. The reads
/// whose answer is "no row" (VALUE.GET, FSM.GET) and TOKEN.NEW (whose reply
/// is the token the caller made) are decoded by the engine crates, as their
/// statements differ; every command with a status word comes here.
pub fn decode<R: SqlRow>(engine: &'static str, cmd: &Command, rows: &[R]) -> Result<Poll, CmdError> {
    let one = || match rows {
        [row] => Ok(Cols { engine, row }),
        _ => Err(unexpected(engine, format!("{} rows where one was expected", rows.len()))),
    };
    let reply: CmdResult = match cmd {
        Command::IdemBegin { .. } => match begin(engine, one()?.row)? {
            Some(Begin::Running { fence, left_ms }) => {
                let reply = Begin::Running { fence, left_ms }.into_reply();
                return Ok(Poll::Blocked { reply, left_ms });
            }
            Some(begun) => Ok(begun.into_reply()),
            None => Err(CmdError::mismatch("this key was begun with a different fingerprint")),
        },
        Command::IdemCommit { fence, .. } | Command::IdemAbort { fence, .. } => {
            match one()?.status(EndStatus::parse)? {
                EndStatus::Ok => Ok(Ended.into_reply()),
                EndStatus::Stale => stale(*fence),
            }
        }
        Command::IdemRenew { fence, .. } => match one()?.status(IdemRenewStatus::parse)? {
            IdemRenewStatus::Renewed => Ok(IdemRenewed { fence: *fence }.into_reply()),
            IdemRenewStatus::Stale => stale(*fence),
        },
        Command::IdemGet { .. } => {
            let c = one()?;
            match c.status(IdemGetStatus::parse)? {
                IdemGetStatus::Running => {
                    Ok(IdemGot::Running { fence: c.uint(1)?, left_ms: c.left_ms(2)? }.into_reply())
                }
                IdemGetStatus::Done => Ok(IdemGot::Done { result: c.bytes(3)? }.into_reply()),
                IdemGetStatus::Absent => Ok(IdemGot::Absent.into_reply()),
            }
        }
        Command::IdemDel { .. }
        | Command::Release { .. }
        | Command::Unlock { .. }
        | Command::TokenUse { .. }
        | Command::SlotsRelease { .. } => Ok(Reply::uint(one()?.uint(0)?)),
        Command::Claim { .. } => {
            let c = one()?;
            match c.status(ClaimStatus::parse)? {
                ClaimStatus::Claimed => Ok(Claimed::Claimed.into_reply()),
                ClaimStatus::Held => Ok(Claimed::Held { owner: c.bytes(1)? }.into_reply()),
            }
        }
        Command::ClaimAll { .. } => claim_all(engine, rows),
        Command::Owner { .. } => Ok(one()?.opt_bytes(0)?.map_or(Reply::Nil, Reply::Bulk)),
        Command::Lock { .. } => {
            let c = one()?;
            match c.status(LockStatus::parse)? {
                LockStatus::Acquired => Ok(Locked::Acquired { fence: c.uint(1)? }.into_reply()),
                LockStatus::Busy => {
                    let left_ms = c.left_ms(3)?;
                    let reply = Locked::Busy { holder: c.bytes(2)?, left_ms }.into_reply();
                    return Ok(Poll::Blocked { reply, left_ms });
                }
            }
        }
        Command::Renew { .. } => {
            let c = one()?;
            match c.status(LockRenewStatus::parse)? {
                LockRenewStatus::Renewed => Ok(LockRenewed::Renewed { fence: c.uint(1)? }.into_reply()),
                LockRenewStatus::Lost => Ok(LockRenewed::Lost.into_reply()),
            }
        }
        Command::LockInfo { .. } => {
            let c = one()?;
            match c.status(LockInfoStatus::parse)? {
                // The waiter count (0 here) is this process's, filled in by
                // `execute_batch`: the engine does not know it.
                LockInfoStatus::Held => {
                    Ok(LockInfo::Held { owner: c.bytes(1)?, fence: c.uint(2)?, left_ms: c.left_ms(3)?, waiters: 0 }
                        .into_reply())
                }
                LockInfoStatus::Free => Ok(LockInfo::Free.into_reply()),
            }
        }
        Command::CounterAdd { .. } => {
            let c = one()?;
            Ok(Counted::of(c.status(CounterStatus::parse)?, c.int(1)?).into_reply())
        }
        // No row: a counter never written is 0.
        Command::CounterGet { .. } if rows.is_empty() => Ok(Reply::Int(0)),
        Command::CounterGet { .. } => Ok(Reply::Int(one()?.int(0)?)),
        Command::ValueSet { .. } => {
            let c = one()?;
            Ok(ValueWritten { status: c.status(ValueSetStatus::parse)?, version: c.uint(1)? }.into_reply())
        }
        Command::FsmMove { .. } => {
            let c = one()?;
            Ok(Moved { status: c.status(MoveStatus::parse)?, state: c.bytes(1)? }.into_reply())
        }
        Command::SlotsReserve { last, size, .. } => slots_reserve(engine, rows, *last, *size),
        Command::SlotsGet { .. } => slots_get(engine, rows),
        other => return Err(unexpected(engine, format!("no row decoder for {}", other.name()))),
    };
    Ok(Poll::Final(reply))
}

/// IDEM.BEGIN's row (status, fence, n, result) as its outcome: `None` for
/// `mismatch` (the key was begun with a different fingerprint). The
/// backends' [`decode`] and the engine crates' in-transaction `tx::idem_begin`
/// both read the row through this, so both are equally strict: a negative
/// fence, an attempt beyond `u32`, an unknown status word or a NULL where a
/// value belongs is [`unexpected`]. Only a negative `left_ms` of a
/// `running` row is read as 0 (the engine's clock passed the lease's end).
pub fn begin<R: SqlRow>(engine: &'static str, row: &R) -> Result<Option<Begin>, CmdError> {
    let c = Cols { engine, row };
    Ok(Some(match c.status(BeginStatus::parse)? {
        BeginStatus::Started => {
            let attempt = c.uint(2)?;
            let attempt =
                u32::try_from(attempt).map_err(|_| unexpected(engine, format!("attempt {attempt} is out of range")))?;
            Begin::Started { fence: c.uint(1)?, attempt }
        }
        BeginStatus::Running => Begin::Running { fence: c.uint(1)?, left_ms: c.left_ms(2)? },
        BeginStatus::Done => Begin::Done { result: c.bytes(3)? },
        BeginStatus::Mismatch => return Ok(None),
    }))
}

/// CLAIM.ALL: one `claimed` row, or one `held` row (key, owner) per key
/// another owner holds.
fn claim_all<R: SqlRow>(engine: &'static str, rows: &[R]) -> CmdResult {
    if rows.is_empty() {
        return Err(unexpected(engine, "CLAIM.ALL returned no row"));
    }
    let mut held = Vec::with_capacity(rows.len());
    for row in rows {
        let c = Cols { engine, row };
        match c.status(ClaimStatus::parse)? {
            ClaimStatus::Claimed if rows.len() == 1 => return Ok(ClaimedAll::Claimed.into_reply()),
            ClaimStatus::Claimed => return Err(unexpected(engine, "CLAIM.ALL mixed 'claimed' with other rows")),
            ClaimStatus::Held => held.push((c.bytes(1)?, c.bytes(2)?)),
        }
    }
    Ok(ClaimedAll::Held(held).into_reply())
}

/// SLOTS.RESERVE: one `reserved`, `outside` (size) or `size` (size) row, or
/// one `conflict` row (slot, holder) per slot another holder has.
fn slots_reserve<R: SqlRow>(engine: &'static str, rows: &[R], last: u32, asked: Option<u32>) -> CmdResult {
    if rows.is_empty() {
        return Err(unexpected(engine, "SLOTS.RESERVE returned no row"));
    }
    let mut conflicts = Vec::with_capacity(rows.len());
    for row in rows {
        let c = Cols { engine, row };
        match c.status(SlotsReserveStatus::parse)? {
            SlotsReserveStatus::Reserved if rows.len() == 1 => return Ok(Reserved::Reserved.into_reply()),
            SlotsReserveStatus::Outside => {
                let size = c.int(1)?;
                return Err(CmdError::syntax(format!("SLOTS.RESERVE: slot {last} is outside SIZE {size}")));
            }
            SlotsReserveStatus::Size => {
                let size = c.int(1)?;
                let asked = asked.map_or(size, i64::from);
                return Err(CmdError::syntax(format!(
                    "SLOTS.RESERVE: SIZE {asked} differs from the resource's size {size}"
                )));
            }
            SlotsReserveStatus::Conflict => conflicts.push((c.uint(1)?, c.bytes(2)?)),
            SlotsReserveStatus::Reserved => {
                return Err(unexpected(engine, "SLOTS.RESERVE mixed 'reserved' with other rows"))
            }
        }
    }
    Ok(Reserved::Conflict(conflicts).into_reply())
}

/// SLOTS.GET: rows (size, slot, holder), slot and holder NULL for a
/// resource with no reservation; no row for no resource.
fn slots_get<R: SqlRow>(engine: &'static str, rows: &[R]) -> CmdResult {
    let Some(first) = rows.first() else {
        return Ok(Reply::Array(Vec::new()));
    };
    let size = Cols { engine, row: first }.uint(0)?;
    let size = usize::try_from(size).map_err(|_| unexpected(engine, format!("slots size {size}")))?;
    let mut out = vec![Reply::Nil; size];
    for row in rows {
        let c = Cols { engine, row };
        match (row.int(1)?, c.opt_bytes(2)?) {
            (Some(slot), Some(holder)) => {
                let cell = usize::try_from(slot).ok().and_then(|s| out.get_mut(s));
                *cell.ok_or_else(|| unexpected(engine, format!("slot {slot} outside size {size}")))? =
                    Reply::Bulk(holder);
            }
            (None, None) => {}
            _ => return Err(unexpected(engine, "a slot without a holder, or a holder without a slot")),
        }
    }
    Ok(Reply::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::ErrorCode;

    use crate::test_row::{R, V};

    fn begin() -> Command {
        Command::IdemBegin { key: Bytes::from_static(b"k"), fingerprint: None, lease_ms: 1000, wait_ms: 0 }
    }

    fn final_reply(p: Result<Poll, CmdError>) -> CmdResult {
        match p? {
            Poll::Final(r) => r,
            Poll::Blocked { reply, .. } => Ok(reply),
        }
    }

    #[test]
    fn known_words_decode_to_the_documented_replies() {
        let started = R(vec![V::T("started"), V::I(7), V::I(1), V::Null]);
        assert_eq!(
            final_reply(decode("t", &begin(), &[started])),
            Ok(Reply::status_with("started", [Reply::Int(7), Reply::Int(1)]))
        );
        let running = R(vec![V::T("running"), V::I(7), V::I(250), V::Null]);
        assert!(matches!(decode("t", &begin(), &[running]), Ok(Poll::Blocked { left_ms: 250, .. })));
        let mismatch = R(vec![V::T("mismatch"), V::Null, V::Null, V::Null]);
        assert_eq!(final_reply(decode("t", &begin(), &[mismatch])).unwrap_err().code, ErrorCode::Mismatch);
        let claim = Command::Claim { key: Bytes::from_static(b"k"), owner: Bytes::from_static(b"o"), ttl_ms: None };
        assert_eq!(
            final_reply(decode("t", &claim, &[R(vec![V::T("held"), V::B(b"w")])])),
            Ok(Reply::status_with("held", [Reply::Bulk(Bytes::from_static(b"w"))]))
        );
    }

    #[test]
    fn anything_else_is_unknown_never_a_plausible_reply() {
        let code = |r: Result<Poll, CmdError>| final_reply(r).unwrap_err().code;
        // A status word the command does not have.
        assert_eq!(
            code(decode("t", &begin(), &[R(vec![V::T("stale"), V::Null, V::Null, V::Null])])),
            ErrorCode::Unknown
        );
        let commit = Command::IdemCommit {
            key: Bytes::from_static(b"k"),
            fence: 3,
            result: Bytes::from_static(b"r"),
            keep_ms: 1000,
        };
        assert_eq!(code(decode("t", &commit, &[R(vec![V::T("okay")])])), ErrorCode::Unknown);
        // No row, two rows, a NULL where a value belongs, a negative fence.
        assert_eq!(code(decode::<R>("t", &commit, &[])), ErrorCode::Unknown);
        assert_eq!(code(decode("t", &commit, &[R(vec![V::T("ok")]), R(vec![V::T("ok")])])), ErrorCode::Unknown);
        assert_eq!(
            code(decode("t", &begin(), &[R(vec![V::T("done"), V::Null, V::Null, V::Null])])),
            ErrorCode::Unknown
        );
        assert_eq!(
            code(decode("t", &begin(), &[R(vec![V::T("started"), V::I(-1), V::I(1), V::Null])])),
            ErrorCode::Unknown
        );
    }

    #[test]
    fn begin_row_is_strict() {
        let row = |status, fence, n| R(vec![V::T(status), V::I(fence), V::I(n), V::Null]);
        let code = |r: Result<Option<Begin>, CmdError>| r.unwrap_err().code;
        assert_eq!(super::begin("t", &row("started", 7, 2)), Ok(Some(Begin::Started { fence: 7, attempt: 2 })));
        assert_eq!(super::begin("t", &row("running", 7, 250)), Ok(Some(Begin::Running { fence: 7, left_ms: 250 })));
        // The lease ended between the engine's read and its answer: none left.
        assert_eq!(super::begin("t", &row("running", 7, -3)), Ok(Some(Begin::Running { fence: 7, left_ms: 0 })));
        assert_eq!(super::begin("t", &R(vec![V::T("mismatch"), V::Null, V::Null, V::Null])), Ok(None));
        assert_eq!(
            super::begin("t", &R(vec![V::T("done"), V::Null, V::Null, V::B(b"r")])),
            Ok(Some(Begin::Done { result: Bytes::from_static(b"r") }))
        );
        // A negative fence, an attempt beyond u32, a negative attempt, an
        // unknown word, a NULL result: never 0, u32::MAX or a guess.
        assert_eq!(code(super::begin("t", &row("started", -1, 1))), ErrorCode::Unknown);
        assert_eq!(code(super::begin("t", &row("running", -1, 250))), ErrorCode::Unknown);
        assert_eq!(code(super::begin("t", &row("started", 7, i64::from(u32::MAX) + 1))), ErrorCode::Unknown);
        assert_eq!(code(super::begin("t", &row("started", 7, -1))), ErrorCode::Unknown);
        assert_eq!(code(super::begin("t", &row("begun", 7, 1))), ErrorCode::Unknown);
        assert_eq!(code(super::begin("t", &R(vec![V::T("done"), V::Null, V::Null, V::Null]))), ErrorCode::Unknown);
        assert_eq!(code(super::begin("t", &R(vec![V::T("started"), V::I(7)]))), ErrorCode::Unknown);
    }
}
