//! Lock-free time probes of the sync path: how long durable waits take from
//! filing to their answer, how long a loop's records wait for the loop to
//! start their commit, and how long the log stays idle between syncs. They
//! say where a durable wait's time goes (docs/benchmarks.md, the gateway's
//! unique keys), at two clock reads per probe and no lock.
//!
//! A leaf module: [`super::state`] owns one [`SyncTiming`] and copies it into
//! [`super::LogStats`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::state::{sync_us_bucket, SYNC_US_BOUNDS};

/// A histogram over [`SYNC_US_BOUNDS`] with a count and a total.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    count: AtomicU64,
    total_us: AtomicU64,
    buckets: [AtomicU64; SYNC_US_BOUNDS.len() + 1],
}

/// What a [`Probe`] saw, copied out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Samples taken.
    pub count: u64,
    /// Their sum, in microseconds.
    pub total_us: u64,
    /// Samples by duration: `[i]` counts those of at most `SYNC_US_BOUNDS[i]`
    /// microseconds (and above the bound before), the last those above every bound.
    pub buckets: [u64; SYNC_US_BOUNDS.len() + 1],
}

impl ProbeStats {
    /// The bound of the bucket that holds the `q`-quantile (0 < q <= 1) of
    /// the samples, in microseconds; `u64::MAX` for the last bucket, 0 with
    /// no samples.
    pub fn quantile_bound_us(&self, q: f64) -> u64 {
        assert!(q > 0.0 && q <= 1.0, "a quantile is in (0, 1]");
        if self.count == 0 {
            return 0;
        }
        let rank = (q * self.count as f64).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return SYNC_US_BOUNDS.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    }

    /// The mean sample, in microseconds (0 with none).
    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_us as f64 / self.count as f64
        }
    }
}

impl Probe {
    /// Counts one sample of `us` microseconds.
    pub(crate) fn add(&self, us: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.buckets[sync_us_bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// What the probe saw so far.
    pub(crate) fn stats(&self) -> ProbeStats {
        let mut buckets = [0; SYNC_US_BOUNDS.len() + 1];
        for (out, b) in buckets.iter_mut().zip(&self.buckets) {
            *out = b.load(Ordering::Relaxed);
        }
        ProbeStats {
            count: self.count.load(Ordering::Relaxed),
            total_us: self.total_us.load(Ordering::Relaxed),
            buckets,
        }
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
    fn quantiles_name_the_bucket_bounds() {
        let p = Probe::default();
        assert_eq!(p.stats().quantile_bound_us(0.5), 0, "no samples");
        for us in [10, 20, 30, 200, 400, 1_000_000] {
            p.add(us);
        }
        let s = p.stats();
        assert_eq!(s.count, 6);
        assert_eq!(s.total_us, 1_000_660);
        assert_eq!(s.quantile_bound_us(0.5), 50);
        assert_eq!(s.quantile_bound_us(0.8), 500);
        assert_eq!(s.quantile_bound_us(1.0), u64::MAX);
    }
}
