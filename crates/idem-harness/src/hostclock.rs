//! Watches the host's wall clock against the harness's monotonic clock.
//!
//! The external engines (PostgreSQL, MariaDB, Redis) count leases on their
//! wall clock, while the history is stamped with the harness's monotonic
//! clock. The two advance together unless something steps the wall clock
//! (a time-sync agent, a VM's clock correction). A step forward by d ends
//! every engine lease that spans it d early by the harness's clock, which
//! the lease-overlap check would otherwise report as a double grant. This
//! thread samples the offset between the clocks and records each step it
//! sees (its signed size, and the last time the clocks agreed) as a
//! `host_clock` event in the history, so the checker can excuse what
//! forward steps explain and the report can say that they happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::recorder::Recorder;

/// How often the offset is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// A sample counts only when the two monotonic reads around the wall-clock
/// read are this close: a preemption between the reads is not a step.
const READ_GAP_MAX_NS: i128 = 50_000;
/// A change of the offset by more than this between two samples is a step.
/// Above any drift in 5 ms, and below the lease checker's 1 ms tolerance.
pub const STEP_MIN_NS: i128 = 250_000;

/// What the watcher saw.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Seen {
    /// Steps of the wall clock against the monotonic clock.
    pub steps: u64,
    /// The largest step's size, in µs (either direction).
    pub largest_us: u64,
}

/// Tries per sample at a bracketed read; a sample that gets none (a CPU
/// too busy to read three clocks within 50 µs that often) is skipped, and
/// the next one compares with the last good one.
const READ_TRIES_MAX: usize = 16;

/// The running watcher; [`HostClockWatch::stop`] ends it.
pub struct HostClockWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Seen>,
}

impl HostClockWatch {
    /// Starts sampling; steps go into `rec`'s history.
    pub fn start(rec: Arc<Recorder>) -> std::io::Result<HostClockWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name("host-clock".into()).spawn(move || {
            let mut seen = Seen::default();
            let mut last = None;
            while !stopped.load(Ordering::Relaxed) {
                let Some((now, at)) = offset(&rec) else {
                    std::thread::sleep(SAMPLE_EVERY);
                    continue;
                };
                if let Some((before, before_at)) = last {
                    let step: i128 = now - before;
                    if step.abs() > STEP_MIN_NS {
                        rec.host_clock_step(before_at, step as i64);
                        seen.steps += 1;
                        seen.largest_us = seen.largest_us.max((step.unsigned_abs() / 1_000) as u64);
                    }
                }
                last = Some((now, at));
                std::thread::sleep(SAMPLE_EVERY);
            }
            seen
        })?;
        Ok(HostClockWatch { stop, thread })
    }

    /// Stops the thread and says what it saw.
    pub fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The wall clock minus the recorder's monotonic clock, ns, from a
/// wall-clock read bracketed by two close monotonic reads; and when, by the
/// recorder's clock. `None` when no try got a close bracket.
fn offset(rec: &Recorder) -> Option<(i128, u64)> {
    (0..READ_TRIES_MAX).find_map(|_| {
        let before = rec.now_ns();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let after = rec.now_ns();
        (i128::from(after - before) <= READ_GAP_MAX_NS).then(|| {
            let mid = before + (after - before) / 2;
            (wall - i128::from(mid), mid)
        })
    })
}
