//! The typed replies of each primitive, decoded from a [`Reply`] that
//! [`crate::wire`] has already checked against the contract. The conversions
//! still refuse any other shape (as [`Error::Protocol`]) instead of
//! assuming it away.

use bytes::Bytes;
use idem_core::Reply;

use crate::error::Error;

/// The reply to `IDEM.BEGIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The caller does the work, then commits or aborts with this fence.
    Started {
        /// The fence of this attempt.
        fence: u64,
        /// 1, or more when earlier attempts' leases ran out (check for half-done work).
        attempt: u64,
    },
    /// Another attempt holds a live lease.
    Running {
        /// Its fence.
        fence: u64,
        /// Milliseconds left on its lease.
        left_ms: u64,
    },
    /// Completed earlier: the stored result, to replay.
    Done(Bytes),
}

impl Begin {
    /// Decodes an `IDEM.BEGIN` reply that was sent another way (in a
    /// pipeline through [`crate::RemoteBackend`]), as strictly as
    /// [`crate::Client::begin`] does.
    pub fn from_reply(r: Reply) -> Result<Begin, Error> {
        let mut p = Parts::new("IDEM.BEGIN", r)?;
        let r = match p.word() {
            "started" => Begin::Started { fence: p.uint()?, attempt: p.uint()? },
            "running" => Begin::Running { fence: p.uint()?, left_ms: p.uint()? },
            "done" => Begin::Done(p.bytes()?),
            _ => return p.unexpected(),
        };
        p.end(r)
    }
}

/// Decodes the reply of a command whose only success is `ok`
/// (`IDEM.COMMIT`, `IDEM.ABORT`, ...) that was sent another way (in a
/// pipeline through [`crate::RemoteBackend`]).
pub fn ok_reply(command: &'static str, r: Reply) -> Result<(), Error> {
    let p = Parts::new(command, r)?;
    match p.word() {
        "ok" => p.end(()),
        _ => p.unexpected(),
    }
}

/// Decodes an `IDEM.RENEW` reply that was sent another way (in a pipeline
/// through [`crate::RemoteBackend`], or by any [`idem_core::Backend`]) for
/// `fence`, as strictly as [`crate::Client::idem_renew`] does: returns the
/// renewed fence, which must be `fence`.
pub fn renew_reply(r: Reply, fence: u64) -> Result<u64, Error> {
    let mut p = Parts::new("IDEM.RENEW", r)?;
    let renewed = match p.word() {
        "renewed" => p.uint()?,
        _ => return p.unexpected(),
    };
    if renewed != fence {
        return Err(protocol("IDEM.RENEW", format!("renewed fence {renewed}, asked for {fence}")));
    }
    p.end(renewed)
}

/// The reply to `IDEM.GET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdemState {
    /// No record, or one whose lease ran out (the key is available).
    Absent,
    /// An attempt holds a live lease.
    Running {
        /// Its fence.
        fence: u64,
        /// Milliseconds left on its lease.
        left_ms: u64,
    },
    /// Completed: the stored result.
    Done(Bytes),
}

/// The reply to `CLAIM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the key (now or already).
    Claimed,
    /// Someone else owns it.
    Held {
        /// The current owner.
        owner: Bytes,
    },
}

/// The reply to `CLAIM.ALL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimAll {
    /// The caller owns every key.
    Claimed,
    /// Nothing was claimed: every key held by someone else, with its owner.
    Held(Vec<Held>),
}

/// A key held by someone else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The key.
    pub key: Bytes,
    /// Its owner.
    pub owner: Bytes,
}

/// The reply to `LOCK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockReply {
    /// The caller holds the lock; a protected resource checks this fence.
    Acquired {
        /// The fence of this grant.
        fence: u64,
    },
    /// Someone else holds it (and WAIT, if any, passed).
    Busy {
        /// The holder.
        holder: Bytes,
        /// Milliseconds left on its lease.
        left_ms: u64,
    },
}

/// The reply to `RENEW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renew {
    /// The lease now ends `LEASE` ms from now; the fence is unchanged.
    Renewed {
        /// The holder's fence.
        fence: u64,
    },
    /// The caller no longer holds the lock.
    Lost,
}

/// The reply to `LOCK.INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockInfo {
    /// Nobody holds the lock.
    Free,
    /// Held.
    Held {
        /// The holder.
        owner: Bytes,
        /// Its fence.
        fence: u64,
        /// Milliseconds left on its lease.
        left_ms: u64,
        /// Callers parked in `LOCK ... WAIT`.
        waiters: u64,
    },
}

/// The reply to `COUNTER.ADD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterAdd {
    /// Applied: the new value.
    Applied(i64),
    /// Outside [MIN, MAX] (or overflow): nothing changed; the current value.
    Refused(i64),
    /// The OP id was applied before: the value its first application produced.
    Replayed(i64),
}

/// A value and its version (`VALUE.GET`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The bytes stored.
    pub value: Bytes,
    /// Its version (1 for the first SET, then one more per SET).
    pub version: u64,
}

/// The reply to `VALUE.SET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSet {
    /// Stored: the new version.
    Stored {
        /// The new version.
        version: u64,
    },
    /// IFVERSION did not match: nothing changed.
    Conflict {
        /// The current version (0 when absent).
        version: u64,
    },
}

/// The reply to `FSM.MOVE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsmMove {
    /// Moved to the target state.
    Moved(Bytes),
    /// Already in the target state (a replayed transition is harmless).
    Already(Bytes),
    /// The current state is not among FROM: nothing changed.
    Refused {
        /// The current state; `None` when the key is absent.
        current: Option<Bytes>,
    },
}

/// The reply to `SLOTS.RESERVE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// Every slot of the range is the holder's.
    Reserved,
    /// Nothing taken: every slot of the range held by someone else, in slot order.
    Conflict(Vec<SlotHeld>),
}

/// A slot held by someone else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotHeld {
    /// The slot number.
    pub slot: u32,
    /// Its holder.
    pub holder: Bytes,
}

/// The items of a checked status reply, read in order.
pub(crate) struct Parts {
    command: &'static str,
    word: &'static str,
    items: std::vec::IntoIter<Reply>,
}

impl Parts {
    pub(crate) fn new(command: &'static str, r: Reply) -> Result<Parts, Error> {
        match r {
            Reply::Array(v) => {
                let mut items = v.into_iter();
                match items.next() {
                    Some(Reply::Word(word)) => Ok(Parts { command, word, items }),
                    other => Err(protocol(command, format!("expected a status word, got {other:?}"))),
                }
            }
            other => Err(protocol(command, format!("expected a status reply, got {other:?}"))),
        }
    }

    pub(crate) fn word(&self) -> &'static str {
        self.word
    }

    pub(crate) fn has_more(&self) -> bool {
        self.items.len() > 0
    }

    pub(crate) fn int(&mut self) -> Result<i64, Error> {
        match self.items.next() {
            Some(Reply::Int(n)) => Ok(n),
            other => Err(protocol(self.command, format!("expected an integer, got {other:?}"))),
        }
    }

    pub(crate) fn uint(&mut self) -> Result<u64, Error> {
        let n = self.int()?;
        u64::try_from(n).map_err(|_| protocol(self.command, format!("expected a non-negative integer, got {n}")))
    }

    pub(crate) fn bytes(&mut self) -> Result<Bytes, Error> {
        match self.items.next() {
            Some(Reply::Bulk(b)) => Ok(b),
            other => Err(protocol(self.command, format!("expected bytes, got {other:?}"))),
        }
    }

    /// Fails unless every item was read.
    pub(crate) fn end<T>(self, value: T) -> Result<T, Error> {
        if self.has_more() {
            return Err(protocol(self.command, format!("'{}' has items left over", self.word)));
        }
        Ok(value)
    }

    pub(crate) fn unexpected<T>(&self) -> Result<T, Error> {
        Err(protocol(self.command, format!("status word '{}'", self.word)))
    }
}

pub(crate) fn protocol(command: &'static str, detail: String) -> Error {
    Error::Protocol { command, detail }
}

pub(crate) fn int(command: &'static str, r: Reply) -> Result<i64, Error> {
    match r {
        Reply::Int(n) => Ok(n),
        other => Err(protocol(command, format!("expected an integer, got {other:?}"))),
    }
}

pub(crate) fn flag(command: &'static str, r: Reply) -> Result<bool, Error> {
    match int(command, r)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(protocol(command, format!("expected 0 or 1, got {n}"))),
    }
}

pub(crate) fn bytes_or_nil(command: &'static str, r: Reply) -> Result<Option<Bytes>, Error> {
    match r {
        Reply::Bulk(b) => Ok(Some(b)),
        Reply::Nil => Ok(None),
        other => Err(protocol(command, format!("expected bytes or nil, got {other:?}"))),
    }
}
