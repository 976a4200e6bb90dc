//! A clock that tests set by hand, shared by a test and the backend it
//! drives, so that lease, TTL and KEEP boundaries can be checked on every
//! engine to the millisecond (`lease - 1` and `lease + 0`) without sleeping.
//!
//! Test-only. An engine crate accepts a [`TestClock`] only through a
//! constructor that exists with its `test-clock` cargo feature, which no
//! server binary enables; docs/backends.md ("A clock for tests") says how
//! each engine is made to read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, set by the test. Clones share the
/// same time. Time only moves forward: the engines keep deadlines as
/// absolute times and the contract has no clock that goes back.
#[derive(Clone, Debug)]
pub struct TestClock {
    now_ms: Arc<AtomicU64>,
}

impl TestClock {
    /// A clock that reads `start_ms` until it is moved.
    pub fn new(start_ms: u64) -> TestClock {
        TestClock { now_ms: Arc::new(AtomicU64::new(start_ms)) }
    }

    /// A clock that starts at the real time plus `ahead_ms`. A test clock
    /// ahead of the real one keeps an engine's own real-time housekeeping
    /// (expired-row cleanup by another process) from deleting a record that
    /// is still live by the test's time: whatever is expired by the real
    /// clock is expired by this one too, as long as the test runs for less
    /// than `ahead_ms` of real time.
    pub fn ahead_of_real(ahead_ms: u64) -> TestClock {
        let real_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        TestClock::new(real_ms + ahead_ms)
    }

    /// The time now.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `ms`; returns the new time.
    pub fn advance(&self, ms: u64) -> u64 {
        self.now_ms.fetch_add(ms, Ordering::SeqCst) + ms
    }

    /// Sets the clock to `now_ms`, which must not be earlier than the time now.
    pub fn set(&self, now_ms: u64) {
        let before = self.now_ms.load(Ordering::SeqCst);
        assert!(now_ms >= before, "a test clock never goes back ({before} -> {now_ms})");
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::TestClock;

    #[test]
    fn clones_share_the_time_and_it_only_moves_forward() {
        let a = TestClock::new(1_000);
        let b = a.clone();
        assert_eq!(a.advance(5), 1_005);
        assert_eq!(b.now_ms(), 1_005);
        b.set(2_000);
        assert_eq!(a.now_ms(), 2_000);
        let back = std::panic::catch_unwind(|| a.set(1_999));
        assert!(back.is_err(), "setting the clock back is refused");
    }
}
