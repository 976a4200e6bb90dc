//! A histogram of microsecond samples over fixed bucket bounds, in plain
//! atomics: lock-free to record from any thread, two relaxed additions per
//! sample. The server's per-command latency (INFO, `/metrics`) and the
//! durable log's sync-path probes both count with it.
//!
//! `N` is the number of buckets: one per bound, and a last one for samples
//! above every bound. [`UsHistogram::new`] checks that the bounds fit `N`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counts samples by bucket and keeps their sum.
#[derive(Debug)]
pub struct UsHistogram<const N: usize> {
    /// Upper bounds (inclusive) in microseconds, strictly increasing; `N - 1` of them.
    bounds: &'static [u64],
    /// `[i]`: samples of at most `bounds[i]` and above `bounds[i - 1]`; the
    /// last: above every bound.
    buckets: [AtomicU64; N],
    sum_us: AtomicU64,
}

/// What a [`UsHistogram`] had counted at one moment. The buckets are read
/// one by one while samples may still arrive, so a snapshot taken under load
/// can be a few samples apart from its own sum; every figure only grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsSnapshot<const N: usize> {
    /// Samples by bucket, as in [`UsHistogram`] (not cumulative).
    pub buckets: [u64; N],
    /// The samples' sum, in microseconds.
    pub sum_us: u64,
}

impl<const N: usize> UsHistogram<N> {
    /// An empty histogram over `bounds`.
    ///
    /// # Panics
    /// When `bounds` are not `N - 1` strictly increasing values: a
    /// programming error in a constant, caught the first time it is built.
    pub const fn new(bounds: &'static [u64]) -> Self {
        assert!(N >= 1 && bounds.len() == N - 1, "a histogram has one bucket per bound and one above them");
        let mut i = 1;
        while i < bounds.len() {
            assert!(bounds[i - 1] < bounds[i], "histogram bounds must be strictly increasing");
            i += 1;
        }
        UsHistogram { bounds, buckets: [const { AtomicU64::new(0) }; N], sum_us: AtomicU64::new(0) }
    }

    /// Counts one sample of `us` microseconds.
    pub fn record(&self, us: u64) {
        self.buckets[self.bounds.partition_point(|b| *b < us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> UsSnapshot<N> {
        UsSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

impl<const N: usize> Default for UsSnapshot<N> {
    fn default() -> Self {
        UsSnapshot { buckets: [0; N], sum_us: 0 }
    }
}

impl<const N: usize> UsSnapshot<N> {
    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The buckets as running totals: `[i]` is the samples of at most
    /// `bounds[i]` (Prometheus' `le`), the last the count.
    pub fn cumulative(&self) -> [u64; N] {
        let mut below = 0;
        self.buckets.map(|n| {
            below += n;
            below
        })
    }

    /// The mean sample in microseconds, 0 with none.
    pub fn mean_us(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum_us as f64 / n as f64,
        }
    }

    /// The bound (from `bounds`, the histogram's) of the bucket that holds
    /// the `q`-quantile (0 < q <= 1) of the samples, in microseconds;
    /// `u64::MAX` for the last bucket, 0 with no samples.
    ///
    /// # Panics
    /// When `q` is outside (0, 1].
    pub fn quantile_bound_us(&self, bounds: &[u64], q: f64) -> u64 {
        assert!(q > 0.0 && q <= 1.0, "a quantile is in (0, 1]");
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = (q * count as f64).ceil() as u64;
        let i = self.cumulative().iter().position(|&below| below >= rank).unwrap_or(N - 1);
        bounds.get(i).copied().unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [u64; 3] = [10, 100, 1_000];

    #[test]
    fn samples_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = UsHistogram::<4>::new(&BOUNDS);
        for us in [0, 10, 11, 100, 101, 1_000, 1_001, u64::MAX / 4] {
            h.record(us);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, [2, 2, 2, 2]);
        assert_eq!(s.cumulative(), [2, 4, 6, 8]);
        assert_eq!(s.count(), 8);
        assert_eq!(s.sum_us, 2_223 + u64::MAX / 4);
    }

    #[test]
    fn quantiles_name_the_bucket_bounds_and_the_mean_is_the_sum_over_the_count() {
        let h = UsHistogram::<4>::new(&BOUNDS);
        assert_eq!(h.snapshot().quantile_bound_us(&BOUNDS, 0.5), 0, "no samples");
        assert_eq!(h.snapshot().mean_us(), 0.0);
        for us in [5, 6, 50, 500, 5_000] {
            h.record(us);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile_bound_us(&BOUNDS, 0.4), 10);
        assert_eq!(s.quantile_bound_us(&BOUNDS, 0.5), 100);
        assert_eq!(s.quantile_bound_us(&BOUNDS, 0.8), 1_000);
        assert_eq!(s.quantile_bound_us(&BOUNDS, 1.0), u64::MAX);
        assert_eq!(s.mean_us(), 5_561.0 / 5.0);
    }

    #[test]
    #[should_panic(expected = "one bucket per bound")]
    fn bounds_that_do_not_fit_the_bucket_count_are_refused() {
        let _ = UsHistogram::<3>::new(&BOUNDS);
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn unordered_bounds_are_refused() {
        static BAD: [u64; 3] = [10, 10, 100];
        let _ = UsHistogram::<4>::new(&BAD);
    }
}
