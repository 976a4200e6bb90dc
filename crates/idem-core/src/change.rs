//! `Change`: the unit of state change. Every mutation the machine makes is
//! described by one or more `Change`s; the durable store writes them to its
//! log before the reply is released, and replays them on recovery. A change
//! carries absolute engine times (milliseconds on the engine's clock), never
//! durations, so replaying it gives the same state whenever it happens.

use bytes::Bytes;

/// The state of one idempotency record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdemState {
    /// An attempt holds the key until `lease_until_ms`.
    Running {
        /// The fence of the current attempt.
        fence: u64,
        /// 1 for the first attempt; +1 for each takeover after a lease ran out.
        attempt: u32,
        /// Engine time at which the lease runs out.
        lease_until_ms: u64,
    },
    /// The operation completed; its result is replayed until `keep_until_ms`.
    Done {
        /// The committed result.
        result: Bytes,
        /// Engine time at which the record is forgotten.
        keep_until_ms: u64,
    },
}

/// One idempotency record: the fingerprint of the first BEGIN, and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemRecord {
    /// The FP of the first BEGIN, if it gave one.
    pub fingerprint: Option<Bytes>,
    /// Running or done.
    pub state: IdemState,
}

/// One logged state change. `*Put` carries the whole new record; slot changes
/// carry the range they set, because a resource may hold thousands of slots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Change {
    IdemPut {
        key: Bytes,
        record: IdemRecord,
    },
    IdemDel {
        key: Bytes,
    },
    ClaimPut {
        key: Bytes,
        owner: Bytes,
        expires_at_ms: Option<u64>,
    },
    ClaimDel {
        key: Bytes,
    },
    LockPut {
        name: Bytes,
        owner: Bytes,
        fence: u64,
        lease_until_ms: u64,
    },
    LockDel {
        name: Bytes,
    },
    TokenPut {
        scope: Bytes,
        token: Bytes,
        expires_at_ms: u64,
    },
    TokenDel {
        scope: Bytes,
        token: Bytes,
    },
    CounterPut {
        key: Bytes,
        value: i64,
    },
    CounterOpPut {
        key: Bytes,
        op: Bytes,
        value: i64,
        expires_at_ms: u64,
    },
    ValuePut {
        key: Bytes,
        value: Bytes,
        version: u64,
    },
    FsmPut {
        key: Bytes,
        state: Bytes,
    },
    /// Slots `first..=last` of `resource` (created with `size` slots if absent) now belong to `holder`.
    SlotsReserve {
        resource: Bytes,
        size: u32,
        first: u32,
        last: u32,
        holder: Bytes,
    },
    /// The slots in `first..=last` held by `holder` are free again.
    SlotsRelease {
        resource: Bytes,
        first: u32,
        last: u32,
        holder: Bytes,
    },
}

impl Change {
    /// The highest fence this change carries, if any. Recovery takes the
    /// maximum over the log so that fences keep growing after a restart.
    pub fn fence(&self) -> Option<u64> {
        match self {
            Change::IdemPut { record: IdemRecord { state: IdemState::Running { fence, .. }, .. }, .. } => Some(*fence),
            Change::LockPut { fence, .. } => Some(*fence),
            _ => None,
        }
    }

    /// The key whose shard this change belongs to (the same key as the
    /// command's route key).
    pub fn route_key(&self) -> &Bytes {
        match self {
            Change::IdemPut { key, .. }
            | Change::IdemDel { key }
            | Change::ClaimPut { key, .. }
            | Change::ClaimDel { key }
            | Change::CounterPut { key, .. }
            | Change::CounterOpPut { key, .. }
            | Change::ValuePut { key, .. }
            | Change::FsmPut { key, .. } => key,
            Change::LockPut { name, .. } | Change::LockDel { name } => name,
            Change::TokenPut { scope, .. } | Change::TokenDel { scope, .. } => scope,
            Change::SlotsReserve { resource, .. } | Change::SlotsRelease { resource, .. } => resource,
        }
    }
}
