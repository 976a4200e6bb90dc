//! Read-only views for operators: how many records each primitive holds,
//! and the full state of one idempotency key (attempt and waiters, which
//! no command reply carries). Nothing here changes the machine, reclaims
//! an expired record or logs a change.

use super::idem_table::EntryState;
use super::waiters::Prim;
use super::Machine;

/// Live records per primitive in one shard (expired records count until a
/// tick reclaims them, as in [`Machine::len`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineCounts {
    /// Idempotency records, running or done.
    pub idem: u64,
    /// Unique claims.
    pub claims: u64,
    /// Held locks.
    pub locks: u64,
    /// Unspent one-time tokens.
    pub tokens: u64,
    /// Counters not at 0, plus the op ids they remember.
    pub counters: u64,
    /// Versioned values.
    pub values: u64,
    /// State machine keys.
    pub fsm: u64,
    /// Slot resources with at least one held slot.
    pub slots: u64,
}

impl MachineCounts {
    /// Adds `other` field by field (for a sum over shards).
    pub fn add(&mut self, other: &MachineCounts) {
        self.idem += other.idem;
        self.claims += other.claims;
        self.locks += other.locks;
        self.tokens += other.tokens;
        self.counters += other.counters;
        self.values += other.values;
        self.fsm += other.fsm;
        self.slots += other.slots;
    }
}

/// The state of one idempotency key, as an operator wants to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdemView {
    /// No record (or one whose lease ran out: the key is available, and
    /// `attempt` is what the last attempt was, 0 when there is no record).
    Absent {
        /// The attempt number of the expired record kept for the next BEGIN.
        attempt: u32,
    },
    /// An attempt holds the key.
    Running {
        /// The fence the holder must COMMIT or ABORT with.
        fence: u64,
        /// 1 for the first attempt, +1 each time a lease ran out.
        attempt: u32,
        /// Milliseconds until the lease runs out.
        lease_left_ms: u64,
        /// Callers parked with WAIT on this key.
        waiters: u64,
    },
    /// Completed: BEGIN replays the result.
    Done {
        /// The length of the stored result.
        result_bytes: u64,
        /// Milliseconds until the result is forgotten.
        keep_left_ms: u64,
    },
}

impl Machine {
    /// Live records per primitive.
    pub fn counts(&self) -> MachineCounts {
        MachineCounts {
            idem: self.idem.len() as u64,
            claims: self.claims.len() as u64,
            locks: self.locks.len() as u64,
            tokens: self.tokens.len() as u64,
            counters: (self.counters.len() + self.counter_ops.len()) as u64,
            values: self.values.len() as u64,
            fsm: self.fsm.len() as u64,
            slots: self.slots.len() as u64,
        }
    }

    /// The state of idempotency key `key` at `now_ms`.
    pub fn inspect_idem(&self, now_ms: u64, key: &[u8]) -> IdemView {
        let Some(rec) = self.idem.get(key) else { return IdemView::Absent { attempt: 0 } };
        match rec.state() {
            EntryState::Running { fence, attempt, lease_until_ms } if now_ms < lease_until_ms => IdemView::Running {
                fence,
                attempt,
                lease_left_ms: lease_until_ms - now_ms,
                waiters: self.waiters.count(Prim::Idem, key) as u64,
            },
            EntryState::Running { attempt, .. } => IdemView::Absent { attempt },
            EntryState::Done { keep_until_ms } if now_ms < keep_until_ms => {
                IdemView::Done { result_bytes: rec.result().len() as u64, keep_left_ms: keep_until_ms - now_ms }
            }
            EntryState::Done { .. } => IdemView::Absent { attempt: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::testkit::T;

    #[test]
    fn views_follow_the_record() {
        let mut t = T::new();
        assert_eq!(t.m.inspect_idem(t.now, b"k"), IdemView::Absent { attempt: 0 });
        let started = t.cmd("IDEM.BEGIN k LEASE 1000");
        assert!(started.starts_with("[started"), "{started}");
        match t.m.inspect_idem(t.now, b"k") {
            IdemView::Running { attempt: 1, lease_left_ms: 1000, waiters: 0, .. } => {}
            other => panic!("{other:?}"),
        }
        t.now += 1500;
        assert_eq!(t.m.inspect_idem(t.now, b"k"), IdemView::Absent { attempt: 1 });
        t.cmd("IDEM.BEGIN k LEASE 1000");
        let fence = match t.m.inspect_idem(t.now, b"k") {
            IdemView::Running { attempt: 2, fence, .. } => fence,
            other => panic!("{other:?}"),
        };
        t.cmd(&format!("IDEM.COMMIT k {fence} abc KEEP 5000"));
        assert_eq!(t.m.inspect_idem(t.now, b"k"), IdemView::Done { result_bytes: 3, keep_left_ms: 5000 });
        t.cmd("CLAIM c o");
        let counts = t.m.counts();
        assert_eq!((counts.idem, counts.claims, counts.locks), (1, 1, 0));
    }
}
