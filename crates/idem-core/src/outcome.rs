//! Typed outcomes of the commands whose reply carries a status word, with
//! the one encoder of each into a [`Reply`] and one strict decoder of the
//! status words the external engines (SQL functions and procedures, Lua
//! scripts) answer with.
//!
//! Every backend on an external engine decodes a row or a script reply into
//! one of these types, then encodes it with [`Begin::into_reply`] and its
//! siblings, so the reply shapes of docs/commands.md are written here once.
//! A status word outside a command's closed set is an error
//! ([`unexpected`]), never a plausible reply: it means the engine's schema or
//! script is not the one this build installs.

use bytes::Bytes;

use crate::error::{CmdError, ErrorCode};
use crate::reply::Reply;

/// The error for an engine answer that the contract does not allow: a status
/// word outside the command's set, a missing column, a negative fence. The
/// statement ran, but idem cannot tell what it did (the engine's schema or
/// script is not this build's), so it is `UNKNOWN` with what was seen,
/// never turned into a plausible reply.
pub fn unexpected(engine: &str, what: impl std::fmt::Display) -> CmdError {
    CmdError::new(ErrorCode::Unknown, format!("{engine}: unexpected answer from the engine: {what}"))
}

/// Declares a closed set of status words with a strict parser.
macro_rules! status_words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every word of the set, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word as the engines write it.
            pub fn word(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The status `word` names; any other word is an error naming
            /// `engine` and the command's set.
            pub fn parse(engine: &str, word: &str) -> Result<Self, CmdError> {
                match word {
                    $($word => Ok($name::$variant),)+
                    other => Err(unexpected(
                        engine,
                        format!("status {other:?} where {} allows {:?}", stringify!($name), [$($word,)+]),
                    )),
                }
            }
        }
    };
}

status_words! {
    /// IDEM.BEGIN's status words.
    BeginStatus {
        /// A new attempt: fence and attempt number follow.
        Started = "started",
        /// Another attempt holds a live lease: its fence and lease left follow.
        Running = "running",
        /// Completed earlier: the result follows.
        Done = "done",
        /// Begun with a different fingerprint.
        Mismatch = "mismatch",
    }
}

status_words! {
    /// IDEM.COMMIT's and IDEM.ABORT's status words.
    EndStatus {
        /// Committed (or aborted).
        Ok = "ok",
        /// The fence is not the key's current one.
        Stale = "stale",
    }
}

status_words! {
    /// IDEM.RENEW's status words.
    IdemRenewStatus {
        /// The lease was moved.
        Renewed = "renewed",
        /// The fence no longer holds the key.
        Stale = "stale",
    }
}

status_words! {
    /// IDEM.GET's status words (the SQL engines write `absent` for no record).
    IdemGetStatus {
        /// A running attempt: fence and lease left follow.
        Running = "running",
        /// Completed: the result follows.
        Done = "done",
        /// No record.
        Absent = "absent",
    }
}

status_words! {
    /// CLAIM's (and CLAIM.ALL's per-key) status words.
    ClaimStatus {
        /// The caller owns the key.
        Claimed = "claimed",
        /// Another owner holds it.
        Held = "held",
    }
}

status_words! {
    /// LOCK's status words.
    LockStatus {
        /// Acquired: the fence follows.
        Acquired = "acquired",
        /// Held by another owner: holder and lease left follow.
        Busy = "busy",
    }
}

status_words! {
    /// RENEW's (lock renewal) status words.
    LockRenewStatus {
        /// Renewed: the fence follows.
        Renewed = "renewed",
        /// The caller no longer holds the lock.
        Lost = "lost",
    }
}

status_words! {
    /// LOCK.INFO's status words.
    LockInfoStatus {
        /// Held: holder, fence, lease left follow.
        Held = "held",
        /// Nobody holds it.
        Free = "free",
    }
}

status_words! {
    /// COUNTER.ADD's status words.
    CounterStatus {
        /// Applied.
        Ok = "ok",
        /// Outside MIN/MAX or an overflow: unchanged.
        Refused = "refused",
        /// This op id was applied before.
        Replayed = "replayed",
    }
}

status_words! {
    /// VALUE.SET's status words.
    ValueSetStatus {
        /// Written: the new version follows.
        Ok = "ok",
        /// IFVERSION did not match: the current version follows.
        Conflict = "conflict",
    }
}

status_words! {
    /// FSM.MOVE's status words.
    MoveStatus {
        /// Moved: the new state follows.
        Moved = "moved",
        /// Already in the target state.
        Already = "already",
        /// The current state is not one of FROM: it follows.
        Refused = "refused",
    }
}

status_words! {
    /// SLOTS.RESERVE's status words as the SQL engines answer them (a
    /// refusal is a row too there; the reply makes it an error).
    SlotsReserveStatus {
        /// Reserved.
        Reserved = "reserved",
        /// Another holder has a slot: slot and holder follow.
        Conflict = "conflict",
        /// A slot lies outside the resource: its size follows.
        Outside = "outside",
        /// SIZE differs from the resource's: its size follows.
        Size = "size",
    }
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The caller owns the key now (or already did).
    Claimed,
    /// Another owner holds the key.
    Held {
        /// Who holds it.
        owner: Bytes,
    },
}

impl Claimed {
    /// CLAIM's reply: `[claimed]` or `[held, owner]`.
    pub fn into_reply(self) -> Reply {
        match self {
            Claimed::Claimed => Reply::status("claimed"),
            Claimed::Held { owner } => Reply::status_with("held", [Reply::Bulk(owner)]),
        }
    }
}

/// The answer to an IDEM.BEGIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The caller must do the work, then commit or abort with `fence`.
    Started {
        /// The fence of this attempt.
        fence: u64,
        /// 1, or more when earlier attempts' leases ran out (check for half-done work).
        attempt: u32,
    },
    /// Another attempt holds a live lease.
    Running {
        /// That attempt's fence.
        fence: u64,
        /// Milliseconds until its lease runs out.
        left_ms: u64,
    },
    /// Completed earlier: replay this result.
    Done {
        /// The committed result.
        result: Bytes,
    },
}

impl Begin {
    /// IDEM.BEGIN's reply: `[started, fence, attempt]`, `[running, fence,
    /// left_ms]` or `[done, result]`.
    pub fn into_reply(self) -> Reply {
        match self {
            Begin::Started { fence, attempt } => {
                Reply::status_with("started", [Reply::uint(fence), Reply::uint(u64::from(attempt))])
            }
            Begin::Running { fence, left_ms } => {
                Reply::status_with("running", [Reply::uint(fence), Reply::uint(left_ms)])
            }
            Begin::Done { result } => Reply::status_with("done", [Reply::Bulk(result)]),
        }
    }
}

/// The answer to a counter addition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Applied; the new value.
    Ok(i64),
    /// Refused (outside MIN/MAX, or overflow); the unchanged value.
    Refused(i64),
    /// This op id was applied before; the value its first application produced.
    Replayed(i64),
}

impl Counted {
    /// From COUNTER.ADD's status word and the value beside it.
    pub fn of(status: CounterStatus, value: i64) -> Self {
        match status {
            CounterStatus::Ok => Counted::Ok(value),
            CounterStatus::Refused => Counted::Refused(value),
            CounterStatus::Replayed => Counted::Replayed(value),
        }
    }

    /// COUNTER.ADD's reply: `[ok|refused|replayed, value]`.
    pub fn into_reply(self) -> Reply {
        let (word, value) = match self {
            Counted::Ok(v) => ("ok", v),
            Counted::Refused(v) => ("refused", v),
            Counted::Replayed(v) => ("replayed", v),
        };
        Reply::status_with(word, [Reply::Int(value)])
    }
}

/// The answer to a LOCK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locked {
    /// Acquired with this fence.
    Acquired {
        /// The lock's new fence.
        fence: u64,
    },
    /// Another owner holds it.
    Busy {
        /// Who holds it.
        holder: Bytes,
        /// Milliseconds until its lease runs out.
        left_ms: u64,
    },
}

impl Locked {
    /// LOCK's reply: `[acquired, fence]` or `[busy, holder, left_ms]`.
    pub fn into_reply(self) -> Reply {
        match self {
            Locked::Acquired { fence } => Reply::status_with("acquired", [Reply::uint(fence)]),
            Locked::Busy { holder, left_ms } => Reply::status_with("busy", [Reply::Bulk(holder), Reply::uint(left_ms)]),
        }
    }
}

/// The answer to an FSM.MOVE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Which of the three it was.
    pub status: MoveStatus,
    /// The state after the call.
    pub state: Bytes,
}

impl Moved {
    /// FSM.MOVE's reply: `[moved|already|refused, state]`.
    pub fn into_reply(self) -> Reply {
        Reply::status_with(self.status.word(), [Reply::Bulk(self.state)])
    }
}

/// The answer to a VALUE.SET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueWritten {
    /// Written or refused.
    pub status: ValueSetStatus,
    /// The version after the call.
    pub version: u64,
}

impl ValueWritten {
    /// VALUE.SET's reply: `[ok|conflict, version]`.
    pub fn into_reply(self) -> Reply {
        Reply::status_with(self.status.word(), [Reply::uint(self.version)])
    }
}

/// The answer to an IDEM.COMMIT or IDEM.ABORT that took effect (a stale
/// fence is the error `STALE`, not an outcome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended;

impl Ended {
    /// IDEM.COMMIT's and IDEM.ABORT's reply: `[ok]`.
    pub fn into_reply(self) -> Reply {
        Reply::status("ok")
    }
}

/// The answer to an IDEM.RENEW that moved the lease (a stale fence is the
/// error `STALE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdemRenewed {
    /// The attempt's fence, unchanged.
    pub fence: u64,
}

impl IdemRenewed {
    /// IDEM.RENEW's reply: `[renewed, fence]`.
    pub fn into_reply(self) -> Reply {
        Reply::status_with("renewed", [Reply::uint(self.fence)])
    }
}

/// The answer to an IDEM.GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdemGot {
    /// An attempt holds a live lease.
    Running {
        /// Its fence.
        fence: u64,
        /// Milliseconds until its lease runs out.
        left_ms: u64,
    },
    /// Completed: the stored result.
    Done {
        /// The committed result.
        result: Bytes,
    },
    /// No record, or one whose lease ran out (the key is available).
    Absent,
}

impl IdemGot {
    /// IDEM.GET's reply: `[running, fence, left_ms]`, `[done, result]` or
    /// `[absent]` (the first two shaped as IDEM.BEGIN's).
    pub fn into_reply(self) -> Reply {
        match self {
            IdemGot::Running { fence, left_ms } => Begin::Running { fence, left_ms }.into_reply(),
            IdemGot::Done { result } => Begin::Done { result }.into_reply(),
            IdemGot::Absent => Reply::status("absent"),
        }
    }
}

/// The answer to a lock RENEW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockRenewed {
    /// The caller still holds the lock; its fence, unchanged.
    Renewed {
        /// The lock's fence.
        fence: u64,
    },
    /// The caller no longer holds it.
    Lost,
}

impl LockRenewed {
    /// RENEW's reply: `[renewed, fence]` or `[lost]`.
    pub fn into_reply(self) -> Reply {
        match self {
            LockRenewed::Renewed { fence } => Reply::status_with("renewed", [Reply::uint(fence)]),
            LockRenewed::Lost => Reply::status("lost"),
        }
    }
}

/// The answer to a LOCK.INFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockInfo {
    /// Held by `owner`.
    Held {
        /// Who holds it.
        owner: Bytes,
        /// The holder's fence.
        fence: u64,
        /// Milliseconds until its lease runs out.
        left_ms: u64,
        /// Callers parked on it.
        waiters: u64,
    },
    /// Nobody holds it.
    Free,
}

impl LockInfo {
    /// LOCK.INFO's reply: `[held, owner, fence, left_ms, waiters]` or `[free]`.
    pub fn into_reply(self) -> Reply {
        match self {
            LockInfo::Held { owner, fence, left_ms, waiters } => Reply::status_with(
                "held",
                [Reply::Bulk(owner), Reply::uint(fence), Reply::uint(left_ms), Reply::uint(waiters)],
            ),
            LockInfo::Free => Reply::status("free"),
        }
    }
}

/// The answer to a CLAIM.ALL: all claimed, or every key another owner holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimedAll {
    /// The caller owns every key now.
    Claimed,
    /// Nothing was claimed: (key, owner) of each key held by another owner,
    /// never empty.
    Held(Vec<(Bytes, Bytes)>),
}

impl ClaimedAll {
    /// CLAIM.ALL's reply: `[claimed]` or `[held, key, owner, key, owner, ...]`.
    pub fn into_reply(self) -> Reply {
        match self {
            ClaimedAll::Claimed => Reply::status("claimed"),
            ClaimedAll::Held(held) => Reply::status_with(
                "held",
                held.into_iter().flat_map(|(key, owner)| [Reply::Bulk(key), Reply::Bulk(owner)]),
            ),
        }
    }
}

/// The answer to a SLOTS.RESERVE that was not refused as an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// The caller holds every slot of the range now.
    Reserved,
    /// Nothing was reserved: (slot, holder) of each slot another holder has,
    /// never empty.
    Conflict(Vec<(u64, Bytes)>),
}

impl Reserved {
    /// SLOTS.RESERVE's reply: `[reserved]` or `[conflict, slot, holder, ...]`.
    pub fn into_reply(self) -> Reply {
        match self {
            Reserved::Reserved => Reply::status("reserved"),
            Reserved::Conflict(held) => Reply::status_with(
                "conflict",
                held.into_iter().flat_map(|(slot, holder)| [Reply::uint(slot), Reply::Bulk(holder)]),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back_and_others_are_errors() {
        for s in BeginStatus::ALL {
            assert_eq!(BeginStatus::parse("t", s.word()).ok(), Some(*s));
        }
        for s in MoveStatus::ALL {
            assert_eq!(MoveStatus::parse("t", s.word()).ok(), Some(*s));
        }
        let e = CounterStatus::parse("postgres", "okay").unwrap_err();
        assert_eq!(e.code, ErrorCode::Unknown);
        assert!(e.to_string().contains("\"okay\""), "{e}");
        assert!(EndStatus::parse("t", "").is_err());
        assert!(ClaimStatus::parse("t", "Claimed").is_err());
    }

    #[test]
    fn encoders_write_the_documented_shapes() {
        assert_eq!(
            Begin::Started { fence: 7, attempt: 2 }.into_reply(),
            Reply::status_with("started", [Reply::Int(7), Reply::Int(2)])
        );
        assert_eq!(Claimed::Claimed.into_reply(), Reply::status("claimed"));
        assert_eq!(Counted::Refused(-3).into_reply(), Reply::status_with("refused", [Reply::Int(-3)]));
        assert_eq!(
            Locked::Busy { holder: Bytes::from_static(b"w"), left_ms: 5 }.into_reply(),
            Reply::status_with("busy", [Reply::Bulk(Bytes::from_static(b"w")), Reply::Int(5)])
        );
    }
}
