//! Which statement a SQL backend sends first for CLAIM and IDEM.BEGIN.

use std::sync::atomic::{AtomicU32, Ordering};

/// The share of a command's recent calls that found their key taken, as a
/// moving average over about the last 16 (in 1/65,536ths), which picks the
/// command's first statement. While taken keys are rare, the bare insert
/// (the raw statement's shape) answers a fresh key at about the raw
/// statement's cost and a taken one in two or three statements; when they
/// are common, the backend's one-statement form answers both, at a higher
/// cost for a fresh key. Either way the reply is the same: this only
/// chooses the cheaper route. Updates race without a lock; a lost sample
/// only delays the switch.
pub struct InsertFirst {
    taken: AtomicU32,
    below: u32,
}

impl InsertFirst {
    const ONE: u32 = 1 << 16;

    /// CLAIM's mix. The break-even share of taken keys, measured on
    /// PostgreSQL 15 (docs/benchmarks-backends.md, "PostgreSQL after
    /// `875e695`"): a fresh claim costs about 1.25x raw by the CTE and 1.1x
    /// by the insert, a taken one about 1.2x by the CTE and 1.6x by
    /// insert-then-read, so the insert wins below about 30% taken keys; on
    /// MariaDB (the same file, "MariaDB: CLAIM inserts first") near a third.
    /// A quarter.
    pub fn claim() -> InsertFirst {
        InsertFirst { taken: AtomicU32::new(0), below: Self::ONE / 4 }
    }

    /// IDEM.BEGIN's mix (PostgreSQL). A fresh grant by the bare insert costs
    /// about 0.85 of the one-statement CTE, and a taken key pays the insert's
    /// attempt (its key lock and a wasted fence) before the CTE, about half
    /// a fresh grant, so the insert wins below about 23% taken keys
    /// (docs/benchmarks-backends.md, "PostgreSQL: IDEM.BEGIN inserts
    /// first"). An eighth, to stay clear of the break-even.
    pub fn begin() -> InsertFirst {
        InsertFirst { taken: AtomicU32::new(0), below: Self::ONE / 8 }
    }

    /// Whether the next call should try the bare insert first.
    pub fn bare(&self) -> bool {
        self.taken.load(Ordering::Relaxed) < self.below
    }

    /// Counts one call's outcome: whether its key was taken.
    pub fn note(&self, taken: bool) {
        let old = self.taken.load(Ordering::Relaxed);
        let sample = if taken { Self::ONE } else { 0 };
        self.taken.store(old - old / 16 + sample / 16, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_mix_leaves_the_bare_insert_when_taken_keys_are_common_and_comes_back() {
        let mix = InsertFirst::claim();
        assert!(mix.bare(), "a new backend expects fresh keys");
        // One taken key in ten stays under the break-even share.
        for i in 0..200 {
            mix.note(i % 10 == 0);
        }
        assert!(mix.bare());
        let mut notes = 0;
        while mix.bare() {
            mix.note(true);
            notes += 1;
        }
        assert!(notes <= 5, "a run of taken keys switches within a few claims, took {notes}");
        // Half taken keeps the one-statement form.
        for i in 0..200 {
            mix.note(i % 2 == 0);
            assert!(!mix.bare(), "half the keys taken must keep the one-statement form");
        }
        let mut notes = 0;
        while !mix.bare() {
            mix.note(false);
            notes += 1;
        }
        assert!(notes <= 16, "a run of fresh keys switches back within a few claims, took {notes}");
    }

    #[test]
    fn begin_mix_switches_at_a_lower_share_than_claim() {
        let (claim, begin) = (InsertFirst::claim(), InsertFirst::begin());
        // One taken key in six: under a quarter, over an eighth.
        for i in 0..300 {
            claim.note(i % 6 == 0);
            begin.note(i % 6 == 0);
        }
        assert!(claim.bare(), "CLAIM keeps the bare insert at one in six taken");
        assert!(!begin.bare(), "IDEM.BEGIN leaves it at one in six taken");
    }
}
