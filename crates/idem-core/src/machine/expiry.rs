//! The ordered index of record deadlines (idempotency records have their
//! own, more compact one in `idem_table.rs`). Each record with a deadline has
//! exactly one entry `(deadline_ms, kind, key)`; the owner of the record
//! removes the old entry before it changes the deadline, so `tick` pops only
//! entries that are really due and never scans the keyspace.

use std::collections::BTreeSet;

use bytes::Bytes;

/// Which map a deadline belongs to. The order only breaks ties between
/// entries with the same deadline, so that reclaiming is deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    /// A claim with a TTL.
    Claim,
    /// A lock's lease.
    Lock,
    /// A one-time token (key: scope and token, see `pair_key`).
    Token,
    /// A counter op id (key: counter key and op id, see `pair_key`).
    CounterOp,
}

/// Record deadlines in time order.
#[derive(Debug, Default)]
pub(super) struct Expiry {
    set: BTreeSet<(u64, Kind, Bytes)>,
}

impl Expiry {
    /// Adds the entry of a record whose deadline is `at_ms`.
    pub(super) fn insert(&mut self, at_ms: u64, kind: Kind, key: &Bytes) {
        let fresh = self.set.insert((at_ms, kind, key.clone()));
        debug_assert!(fresh, "a record has one deadline entry");
    }

    /// Removes the entry of a record whose deadline was `at_ms`.
    pub(super) fn remove(&mut self, at_ms: u64, kind: Kind, key: &Bytes) {
        let found = self.set.remove(&(at_ms, kind, key.clone()));
        debug_assert!(found, "a record's deadline entry must exist until the record changes");
    }

    /// Takes the earliest entry whose deadline is at or before `now_ms`.
    pub(super) fn pop_due(&mut self, now_ms: u64) -> Option<(u64, Kind, Bytes)> {
        if self.set.first()?.0 > now_ms {
            return None;
        }
        self.set.pop_first()
    }

    /// The earliest deadline.
    pub(super) fn first_ms(&self) -> Option<u64> {
        self.set.first().map(|e| e.0)
    }
}
