//! Which statement a SQL backend sends first for CLAIM.

use std::sync::atomic::{AtomicU32, Ordering};

/// The share of recent CLAIMs that found their key held by another owner,
/// as a moving average over about the last 16 (in 1/65,536ths), which picks
/// CLAIM's first statement. While taken keys are rare, the bare insert (the
/// raw statement itself) answers a fresh key at the raw statement's cost
/// and a taken one in two or three statements; when they are common, the
/// backend's one-statement form answers both, at a higher cost for a fresh
/// key. Either way the reply is the same: this only chooses the cheaper
/// route. Updates race without a lock; a lost sample only delays the switch.
pub struct ClaimMix(AtomicU32);

impl ClaimMix {
    const ONE: u32 = 1 << 16;
    /// The break-even share. Measured on PostgreSQL 15
    /// (docs/benchmarks-backends.md, "PostgreSQL after `875e695`"): a fresh
    /// claim costs about 1.25x raw by the CTE and 1.1x by the insert, a taken
    /// one about 1.2x by the CTE and 1.6x by insert-then-read, so the insert
    /// wins below about 30% taken keys. MariaDB's figures (the same file,
    /// "MariaDB: CLAIM inserts first") put its break-even near a third.
    const BARE_BELOW: u32 = Self::ONE / 4;

    /// A new mix: fresh keys expected.
    pub fn new() -> ClaimMix {
        ClaimMix(AtomicU32::new(0))
    }

    /// Whether the next CLAIM should try the bare insert first.
    pub fn bare(&self) -> bool {
        self.0.load(Ordering::Relaxed) < Self::BARE_BELOW
    }

    /// Counts one CLAIM's outcome: whether another owner held the key.
    pub fn note(&self, held: bool) {
        let old = self.0.load(Ordering::Relaxed);
        let sample = if held { Self::ONE } else { 0 };
        self.0.store(old - old / 16 + sample / 16, Ordering::Relaxed);
    }
}

impl Default for ClaimMix {
    fn default() -> ClaimMix {
        ClaimMix::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_mix_leaves_the_bare_insert_when_taken_keys_are_common_and_comes_back() {
        let mix = ClaimMix::new();
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
}
