//! Lock-free time probes of the sync path: how long durable waits take from
//! filing to their answer, how long a loop's records wait for the loop to
//! start their commit, and how long the log stays idle between syncs. They
//! say where a durable wait's time goes (docs/benchmarks.md, the gateway's
//! unique keys), at two clock reads per probe and no lock.
//!
//! A leaf module: [`super::state`] owns one [`SyncTiming`] and copies it into
//! [`super::LogStats`].

use idem_metrics::us_histogram::{UsHistogram, UsSnapshot};

use super::state::SYNC_US_BOUNDS;

/// Buckets of a probe: one per [`SYNC_US_BOUNDS`] bound and one above them.
const BUCKETS: usize = SYNC_US_BOUNDS.len() + 1;

/// What a [`Probe`] saw, copied out; its quantiles are over [`SYNC_US_BOUNDS`].
pub type ProbeStats = UsSnapshot<BUCKETS>;

/// A histogram of one sync-path duration over [`SYNC_US_BOUNDS`].
#[derive(Debug)]
pub(crate) struct Probe(UsHistogram<BUCKETS>);

impl Default for Probe {
    fn default() -> Probe {
        Probe(UsHistogram::new(&SYNC_US_BOUNDS))
    }
}

impl Probe {
    /// Counts one sample of `us` microseconds.
    pub(crate) fn add(&self, us: u64) {
        self.0.record(us);
    }

    /// What the probe saw so far.
    pub(crate) fn stats(&self) -> ProbeStats {
        self.0.snapshot()
    }
}

/// The sync path's probes.
#[derive(Debug, Default)]
pub(crate) struct SyncTiming {
    /// A durable wait that was not answered at once: from its filing to
    /// the poll that answers it (the wake-up and the task's turn included).
    pub(crate) wait: Probe,
    /// On an event loop that commits for itself: from the first wait of the
    /// loop's tasks since its last commit to the start of the loop's next
    /// commit (how long the loop's turn held its records back).
    pub(crate) loop_delay: Probe,
    /// From the end of one `fdatasync` to the start of the next.
    pub(crate) sync_gap: Probe,
    /// One cycle's `pwrite` of its batch.
    pub(crate) write: Probe,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_count_over_the_sync_bounds() {
        let p = Probe::default();
        assert_eq!(p.stats().quantile_bound_us(&SYNC_US_BOUNDS, 0.5), 0, "no samples");
        for us in [10, 20, 30, 200, 400, 1_000_000] {
            p.add(us);
        }
        let s = p.stats();
        assert_eq!(s.count(), 6);
        assert_eq!(s.sum_us, 1_000_660);
        assert_eq!(s.quantile_bound_us(&SYNC_US_BOUNDS, 0.5), 50);
        assert_eq!(s.quantile_bound_us(&SYNC_US_BOUNDS, 0.8), 500);
        assert_eq!(s.quantile_bound_us(&SYNC_US_BOUNDS, 1.0), u64::MAX);
    }
}
