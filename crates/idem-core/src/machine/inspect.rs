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
        /// Callers parked with WAIT on this key, as far as `waiters_scope` sees.
        waiters: u64,
        /// Whose parked callers `waiters` counts.
        waiters_scope: WaitersScope,
    },
    /// Completed: BEGIN replays the result.
    Done {
        /// The length of the stored result.
        result_bytes: u64,
        /// Milliseconds until the result is forgotten.
        keep_left_ms: u64,
    },
}

/// Whose parked callers a count of waiters covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitersScope {
    /// Every caller parked on the key, whichever server it came through:
    /// the store keeps the wait queue (embedded store, Redis).
    Store,
    /// Only the callers parked in this process: each server parks its own
    /// callers and polls the engine (PostgreSQL, MySQL), so callers parked
    /// in other servers sharing the engine are not counted.
    ThisProcess,
}

impl WaitersScope {
    /// The name the inspector shows.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitersScope::Store => "store",
            WaitersScope::ThisProcess => "this_server",
        }
    }
}

/// An idempotency record as a store holds it, before it is read as an
/// [`IdemView`]: what external engines return for inspection, so that
/// every store turns a record into a view by one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredIdem {
    /// True while an attempt runs (or ran out of lease), false once done.
    pub running: bool,
    /// The record's fence.
    pub fence: u64,
    /// The record's attempt number (kept for a done record; not shown).
    pub attempt: u32,
    /// Milliseconds from now to the lease end (running) or the end of
    /// retention (done); 0 or less: passed.
    pub left_ms: i64,
    /// The length of the stored result (0 while running).
    pub result_bytes: u64,
}

impl IdemView {
    /// The view of `rec` (None: no record), with `waiters` parked callers
    /// counted over `scope`. A running record whose lease ran out is an
    /// absent key that remembers its attempt; a done record past its
    /// retention is an absent key with no attempt, as BEGIN sees them.
    pub fn of_stored(rec: Option<StoredIdem>, waiters: u64, scope: WaitersScope) -> IdemView {
        let Some(rec) = rec else { return IdemView::Absent { attempt: 0 } };
        match (rec.running, u64::try_from(rec.left_ms)) {
            (true, Ok(left)) if left > 0 => IdemView::Running {
                fence: rec.fence,
                attempt: rec.attempt,
                lease_left_ms: left,
                waiters,
                waiters_scope: scope,
            },
            (true, _) => IdemView::Absent { attempt: rec.attempt },
            (false, Ok(left)) if left > 0 => IdemView::Done { result_bytes: rec.result_bytes, keep_left_ms: left },
            (false, _) => IdemView::Absent { attempt: 0 },
        }
    }
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
        let stored = self.idem.get(key).map(|rec| match rec.state() {
            EntryState::Running { fence, attempt, lease_until_ms } => StoredIdem {
                running: true,
                fence,
                attempt,
                left_ms: signed_left(lease_until_ms, now_ms),
                result_bytes: 0,
            },
            EntryState::Done { keep_until_ms } => StoredIdem {
                running: false,
                fence: 0,
                attempt: 0,
                left_ms: signed_left(keep_until_ms, now_ms),
                result_bytes: rec.result().len() as u64,
            },
        });
        IdemView::of_stored(stored, self.waiters.count(Prim::Idem, key) as u64, WaitersScope::Store)
    }
}

/// `until_ms - now_ms` as a signed figure (negative once passed).
fn signed_left(until_ms: u64, now_ms: u64) -> i64 {
    let d = i128::from(until_ms) - i128::from(now_ms);
    d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
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
            IdemView::Running {
                attempt: 1,
                lease_left_ms: 1000,
                waiters: 0,
                waiters_scope: WaitersScope::Store,
                ..
            } => {}
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
        t.now += 5000;
        assert_eq!(t.m.inspect_idem(t.now, b"k"), IdemView::Absent { attempt: 0 });
        t.cmd("CLAIM c o");
        let counts = t.m.counts();
        assert_eq!((counts.idem, counts.claims, counts.locks), (1, 1, 0));
    }
}

#[cfg(test)]
mod stored_tests {
    use super::*;

    #[test]
    fn stored_records_read_as_begin_sees_them() {
        let rec = |running, left_ms| StoredIdem { running, fence: 7, attempt: 3, left_ms, result_bytes: 4 };
        let this = WaitersScope::ThisProcess;
        assert_eq!(IdemView::of_stored(None, 0, this), IdemView::Absent { attempt: 0 });
        assert_eq!(
            IdemView::of_stored(Some(rec(true, 10)), 2, this),
            IdemView::Running { fence: 7, attempt: 3, lease_left_ms: 10, waiters: 2, waiters_scope: this }
        );
        assert_eq!(IdemView::of_stored(Some(rec(true, 0)), 2, this), IdemView::Absent { attempt: 3 });
        assert_eq!(IdemView::of_stored(Some(rec(true, -5)), 0, this), IdemView::Absent { attempt: 3 });
        assert_eq!(
            IdemView::of_stored(Some(rec(false, 9)), 0, this),
            IdemView::Done { result_bytes: 4, keep_left_ms: 9 }
        );
        assert_eq!(IdemView::of_stored(Some(rec(false, -1)), 0, this), IdemView::Absent { attempt: 0 });
        assert_eq!(signed_left(5, 10), -5);
        assert_eq!(signed_left(u64::MAX, 0), i64::MAX);
    }
}
