//! The state one log shares between its appenders, its waiters, the writer
//! thread, the event loops that sync for themselves and its snapshots: the
//! in-memory tail, the published log positions, the failure, the waiters
//! and the counters. Fields are private; every change goes through a method
//! here, which is where the invariants on the positions are asserted.
//!
//! # Log positions
//!
//! Three LSNs describe how far the log got, and at every moment
//!
//! ```text
//! synced <= written <= appended = next_lsn - 1
//! ```
//!
//! - `appended`: the last LSN handed out (stored under the tail lock);
//! - `written`: every record up to it was handed to the OS;
//! - `synced`: every record up to it is on stable storage.
//!
//! Only the holder of the writer (the writer thread, or an event loop
//! committing for itself) moves `written` and `synced`, through
//! [`LogState::publish`], and both only grow. `assert!` checks these where
//! a position changes (one comparison of values already loaded);
//! `debug_assert!` is kept for checks that walk data (the registry, a
//! batch's records).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::loop_thread;
use super::record::{self, Payload, INLINE_CRC_BYTES_MAX, RECORD_BYTES_MAX, RECORD_FIXED_LEN};
use super::timing::{ProbeStats, SyncTiming};
use super::waiters::{DurableWaiters, Mark, WaiterKey};
use crate::{FsyncMode, StoreError};

/// Event loops commit their own records while a log has at most this many
/// of them; with more, the writer thread commits for all of them (see
/// `loop_sync`: a loop blocked in a sync serves none of its connections,
/// and with several loops the others would wait for it in turn).
const INLINE_LOOPS_MAX: usize = 1;

/// How often EverySecond mode syncs.
pub(crate) const EVERY_SECOND_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The tail buffer's initial capacity, and what a swapped-out batch larger
/// than [`SPARE_BYTES_KEPT_MAX`] is replaced with.
pub(crate) const TAIL_BYTES_INITIAL: usize = 64 << 10;

/// A swapped-out tail buffer larger than this is not kept for reuse, so a
/// burst of huge records does not pin memory forever.
pub(crate) const SPARE_BYTES_KEPT_MAX: usize = 16 << 20;

/// A thread's encode scratch larger than this is released after use.
const SCRATCH_BYTES_KEPT_MAX: usize = 1 << 20;

/// How long a blocking waiter sleeps before it checks the positions again;
/// it only guards against a missed notify (publish notifies under the
/// waiter's lock, so none should be missed).
const BLOCKING_RECHECK: Duration = Duration::from_millis(100);

thread_local! {
    /// Where a thread encodes a record's payload before taking the tail lock.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// On a loop that commits for itself: when its tasks first waited since
    /// its last commit (the `loop_delay` probe).
    static LOOP_WAIT_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// On a loop thread: when the loop's tasks first waited since the last call,
/// which starts the count again (`None`: no task waited).
pub(crate) fn take_loop_wait_since() -> Option<Instant> {
    LOOP_WAIT_SINCE.with(Cell::take)
}

/// Upper bounds (inclusive, microseconds) of the buckets of
/// [`LogStats::sync_us_buckets`]: from a fast NVMe flush to a stalled disk.
pub const SYNC_US_BOUNDS: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000];

/// The bucket over [`SYNC_US_BOUNDS`] of a sample of `us` microseconds: the
/// first whose bound is at least `us`, or the last (above every bound).
/// Every histogram of the sync path counts by it.
pub(crate) fn sync_us_bucket(us: u64) -> usize {
    SYNC_US_BOUNDS.partition_point(|b| *b < us)
}

/// Counters for observing group commit (batches, fsync latency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches written (one write each).
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to segments.
    pub bytes: u64,
    /// fdatasync calls on segments.
    pub syncs: u64,
    /// Total time spent in those syncs, in microseconds.
    pub sync_us_total: u64,
    /// The slowest sync, in microseconds.
    pub sync_us_max: u64,
    /// Syncs by duration: `[i]` counts those of at most `SYNC_US_BOUNDS[i]`
    /// microseconds (and above the bound before), the last those above every bound.
    pub sync_us_buckets: [u64; SYNC_US_BOUNDS.len() + 1],
    /// The most records written in one batch.
    pub batch_records_max: u64,
    /// Segments started since open.
    pub rotations: u64,
    /// Of those, segments that were preallocated (zero-filled ahead of use).
    pub prealloc_rotations: u64,
    /// Durable waits that were not answered at once: from filing to the
    /// poll that answers them (wake-up and the task's turn included).
    pub wait: ProbeStats,
    /// Commits on an event loop: from the first wait of the loop's tasks
    /// since its last commit to the start of this one.
    pub loop_delay: ProbeStats,
    /// From the end of one `fdatasync` to the start of the next.
    pub sync_gap: ProbeStats,
    /// The `pwrite` of each batch.
    pub write: ProbeStats,
    /// Group commits an event loop ran itself (the rest ran on the writer thread).
    pub loop_cycles: u64,
    /// Event loops entered on this log ([`super::LoopSync::enter`]).
    pub loop_count: usize,
}

/// What the writer thread is to do next ([`LogState::wait_for_work`]).
pub(crate) enum Work {
    /// A group commit.
    Cycle,
    /// The log is being dropped and everything is synced: the final flush.
    Shutdown,
    /// The log failed: stop.
    Failed,
}

/// One swapped-out tail, as the writer takes it ([`LogState::take_batch`]).
pub(crate) struct Batch {
    /// The LSN of the last record in the batch (or, for an empty batch, the
    /// last LSN appended before it).
    pub end_lsn: u64,
    /// Whether this cycle must sync.
    pub sync_now: bool,
}

/// The part of the state guarded by the tail mutex.
#[derive(Debug)]
struct Tail {
    /// Encoded records not yet handed to the writer.
    buf: Vec<u8>,
    /// The LSN the next record gets.
    next_lsn: u64,
    /// Snapshot cuts: start a new segment before record `lsn`, which begins
    /// at byte `offset` of `buf`. At most a few entries (one per concurrent snapshot).
    cuts: Vec<(u64, usize)>,
    /// Why the log failed, once it has.
    failure: Option<String>,
    /// The log is being dropped: write what is left, then stop.
    shutdown: bool,
    /// The writer sleeps on `wake_writer` and needs a notify.
    writer_waiting: bool,
    /// While `writer_waiting`: the writer will wake by itself when the next
    /// EverySecond sync is due (it waits with that deadline).
    writer_deadline: bool,
    /// `flush` wants a sync even in EverySecond mode.
    sync_requested: bool,
    /// Bytes appended since open (for snapshot scheduling).
    appended_bytes: u64,
    /// When the writer last synced (EverySecond mode syncs a second later).
    last_sync: Instant,
}

/// Snapshot scheduling.
#[derive(Debug, Default)]
struct SnapshotSchedule {
    /// Snapshots begun and neither finished nor dropped.
    in_progress: u32,
    /// The log's appended byte count at the cut of the last finished
    /// snapshot. The count starts at the size of the log replayed at open, so
    /// a long log left by the previous run is snapshotted soon.
    bytes_at_last: u64,
}

/// The state shared by one log's appenders, waiters, writer and snapshots.
#[derive(Debug)]
pub(crate) struct LogState {
    mode: FsyncMode,
    tail: Mutex<Tail>,
    wake_writer: Condvar,
    /// Every record up to this LSN is on stable storage.
    synced: AtomicU64,
    /// Every record up to this LSN was handed to the OS.
    written: AtomicU64,
    /// The last LSN handed out by `append`.
    appended: AtomicU64,
    /// Mirrors `Tail::appended_bytes` for lock-free reads.
    appended_bytes: AtomicU64,
    failed: AtomicBool,
    /// Event loop threads that sync for this log: every `LoopSync::enter`
    /// counts, and none is taken back (a server's loops live as long as it).
    loops: AtomicUsize,
    /// A loop thread appended a record while the writer thread slept and
    /// did not wake it (see `loop_sync`).
    unwoken: AtomicBool,
    /// Async waiters, woken by a publish that covers them or by a failure.
    waiters: DurableWaiters,
    /// Loops that ran dry while another thread held the writer: the LSN each
    /// needs durable and its nudge waker (at most one entry per loop).
    deferred: Mutex<Vec<(u64, Waker)>>,
    /// Blocking waiters (snapshot `finish`) sleep here.
    blocking_lock: Mutex<()>,
    blocking_cv: Condvar,
    stats: Mutex<LogStats>,
    timing: SyncTiming,
    snapshots: Mutex<SnapshotSchedule>,
}

impl LogState {
    /// The state of a log whose next record gets `next_lsn` (every record
    /// before it was recovered and synced) and which holds `appended_bytes`.
    pub(crate) fn new(mode: FsyncMode, next_lsn: u64, appended_bytes: u64) -> LogState {
        assert!(next_lsn >= 1, "LSNs start at 1");
        let recovered = next_lsn - 1;
        LogState {
            mode,
            tail: Mutex::new(Tail {
                buf: Vec::with_capacity(TAIL_BYTES_INITIAL),
                next_lsn,
                cuts: Vec::new(),
                failure: None,
                shutdown: false,
                writer_waiting: false,
                writer_deadline: false,
                sync_requested: false,
                appended_bytes,
                last_sync: Instant::now(),
            }),
            wake_writer: Condvar::new(),
            synced: AtomicU64::new(recovered),
            written: AtomicU64::new(recovered),
            appended: AtomicU64::new(recovered),
            appended_bytes: AtomicU64::new(appended_bytes),
            failed: AtomicBool::new(false),
            loops: AtomicUsize::new(0),
            unwoken: AtomicBool::new(false),
            waiters: DurableWaiters::default(),
            deferred: Mutex::new(Vec::new()),
            blocking_lock: Mutex::new(()),
            blocking_cv: Condvar::new(),
            stats: Mutex::new(LogStats::default()),
            timing: SyncTiming::default(),
            snapshots: Mutex::new(SnapshotSchedule::default()),
        }
    }

    /// When appended records reach stable storage.
    pub(crate) fn mode(&self) -> FsyncMode {
        self.mode
    }

    /// The last LSN handed out.
    pub(crate) fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Every record up to this LSN is on stable storage.
    pub(crate) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Every record up to this LSN was handed to the OS.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Whether the log has failed.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Why the log failed, if it has.
    pub(crate) fn failure(&self) -> Option<String> {
        if !self.has_failed() {
            return None;
        }
        self.tail.lock().failure.clone()
    }

    fn failed_error(&self) -> StoreError {
        StoreError::Failed(self.failure().unwrap_or_else(|| "the log failed".into()))
    }

    /// Counters about group commit since open.
    pub(crate) fn stats(&self) -> LogStats {
        let mut stats = *self.stats.lock();
        stats.wait = self.timing.wait.stats();
        stats.loop_delay = self.timing.loop_delay.stats();
        stats.sync_gap = self.timing.sync_gap.stats();
        stats.write = self.timing.write.stats();
        stats.loop_count = self.loop_count();
        stats
    }

    /// The sync path's time probes.
    pub(crate) fn timing(&self) -> &SyncTiming {
        &self.timing
    }

    /// Counts one batch of `records` records and `bytes` bytes.
    pub(crate) fn count_batch(&self, records: u64, bytes: u64) {
        let mut stats = self.stats.lock();
        stats.batches += 1;
        stats.records += records;
        stats.batch_records_max = stats.batch_records_max.max(records);
        stats.bytes += bytes;
    }

    /// Counts one group commit run by an event loop.
    pub(crate) fn count_loop_cycle(&self) {
        self.stats.lock().loop_cycles += 1;
    }

    /// Counts one segment sync that took `us` microseconds, and notes when
    /// it ended (EverySecond mode syncs a second later).
    pub(crate) fn count_sync(&self, us: u64) {
        self.tail.lock().last_sync = Instant::now();
        let mut stats = self.stats.lock();
        stats.syncs += 1;
        stats.sync_us_total += us;
        stats.sync_us_max = stats.sync_us_max.max(us);
        stats.sync_us_buckets[sync_us_bucket(us)] += 1;
    }

    /// Counts one new segment, preallocated or not.
    pub(crate) fn count_rotation(&self, preallocated: bool) {
        let mut stats = self.stats.lock();
        stats.rotations += 1;
        stats.prealloc_rotations += u64::from(preallocated);
    }

    /// Appends a record holding `changes`. The payload and its checksum are
    /// computed before the lock is taken.
    pub(crate) fn append_changes(&self, now_ms: u64, changes: &[idem_core::Change]) -> Result<u64, StoreError> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            scratch.extend_from_slice(&(changes.len() as u32).to_le_bytes());
            for change in changes {
                record::put_change(&mut scratch, change);
            }
            let result = self.append_payload(now_ms, record::KIND_CHANGES, &scratch);
            if scratch.capacity() > SCRATCH_BYTES_KEPT_MAX {
                *scratch = Vec::new();
            }
            result
        })
    }

    /// Appends a record of `kind` with an already encoded payload.
    pub(crate) fn append_payload(&self, now_ms: u64, kind: u8, payload: &[u8]) -> Result<u64, StoreError> {
        let size = RECORD_FIXED_LEN + payload.len();
        if size > RECORD_BYTES_MAX {
            return Err(StoreError::RecordTooLarge { bytes: size as u64, max: RECORD_BYTES_MAX as u64 });
        }
        let precomputed = (payload.len() > INLINE_CRC_BYTES_MAX).then(|| {
            let mut crc = crc32fast::Hasher::new();
            crc.update(payload);
            crc
        });
        let payload = Payload { kind, bytes: payload, crc: precomputed.as_ref() };
        let mut tail = self.tail.lock();
        if let Some(reason) = &tail.failure {
            return Err(StoreError::Failed(reason.clone()));
        }
        let before = tail.buf.len();
        let lsn = self.put_record_locked(&mut tail, now_ms, &payload);
        tail.appended_bytes += (tail.buf.len() - before) as u64;
        self.appended_bytes.store(tail.appended_bytes, Ordering::Relaxed);
        let loop_writes = match self.mode {
            FsyncMode::Always => true,
            // The loop writes the record, but only the writer thread keeps
            // the one-second rhythm of syncs: a writer asleep without a
            // deadline must wake to start it.
            FsyncMode::EverySecond => tail.writer_deadline,
        };
        if tail.writer_waiting && loop_writes && loop_thread::in_loop() && self.loops_commit() {
            // This thread's loop writes (and, in Always mode, syncs) the
            // record itself once its task waits; a waiter elsewhere that
            // might need it wakes the writer.
            if !self.unwoken.load(Ordering::Relaxed) {
                self.unwoken.store(true, Ordering::Release);
            }
            return Ok(lsn);
        }
        self.wake_writer(tail);
        Ok(lsn)
    }

    /// Appends the shutdown mark record, which attests every record before
    /// it (called by the writer at its final flush).
    pub(crate) fn append_shutdown_mark(&self, synced_lsn: u64) {
        let mut tail = self.tail.lock();
        let mark = Payload { kind: record::KIND_MARK, bytes: &[], crc: None };
        let lsn = self.put_record_locked(&mut tail, 0, &mark);
        assert!(synced_lsn < lsn, "the mark attests only records before it");
    }

    /// Encodes one record into the tail and hands out its LSN; the caller
    /// holds the tail lock, which orders LSNs with the bytes in the tail.
    fn put_record_locked(&self, tail: &mut Tail, now_ms: u64, payload: &Payload<'_>) -> u64 {
        let lsn = tail.next_lsn;
        // `appended` is stored only under the tail lock, so it trails the
        // next LSN by exactly one.
        let appended = self.appended.load(Ordering::Relaxed);
        assert_eq!(appended + 1, lsn, "appended LSN {appended} trails the next LSN {lsn} by one");
        tail.next_lsn += 1;
        // Reading the synced LSN at encode time under-states what is durable
        // when the bytes reach the file, which is the safe direction: the
        // field may fail to attest a synced record, never attest an unsynced one.
        let synced = self.synced.load(Ordering::Acquire);
        assert!(synced < lsn, "synced LSN {synced} is below a new record's LSN {lsn}");
        record::put_record(&mut tail.buf, lsn, synced, now_ms, payload);
        self.appended.store(lsn, Ordering::Release);
        lsn
    }

    /// Takes the tail for a group commit: swaps its records into `batch`
    /// (which must be empty) and its snapshot cuts into `cuts`, and decides
    /// whether this cycle syncs. `None` once the log has failed.
    pub(crate) fn take_batch(&self, batch: &mut Vec<u8>, cuts: &mut Vec<(u64, usize)>) -> Option<Batch> {
        debug_assert!(batch.is_empty() && cuts.is_empty(), "the writer's buffers are empty between cycles");
        let mut tail = self.tail.lock();
        if tail.failure.is_some() {
            return None;
        }
        std::mem::swap(&mut tail.buf, batch);
        cuts.append(&mut tail.cuts);
        let end_lsn = tail.next_lsn - 1;
        // Always mode syncs every cycle; EverySecond mode when asked to,
        // at shutdown, or a second after the last sync.
        let requested = std::mem::take(&mut tail.sync_requested);
        let sync_now = requested
            || tail.shutdown
            || self.mode == FsyncMode::Always
            || Instant::now() >= tail.last_sync + EVERY_SECOND_SYNC_INTERVAL;
        Some(Batch { end_lsn, sync_now })
    }

    /// Publishes the writer's positions: every record up to `written` was
    /// handed to the OS, every one up to `synced` is on stable storage. Wakes
    /// the waiters they cover.
    pub(crate) fn publish(&self, written: u64, synced: u64) {
        assert!(synced <= written, "synced LSN {synced} <= written LSN {written}");
        let appended = self.appended.load(Ordering::Acquire);
        assert!(written <= appended, "written LSN {written} <= appended LSN {appended}");
        let (was_written, was_synced) = (self.written.load(Ordering::Relaxed), self.synced.load(Ordering::Relaxed));
        assert!(
            written >= was_written && synced >= was_synced,
            "positions only grow: written {was_written} -> {written}, synced {was_synced} -> {synced}"
        );
        self.written.store(written, Ordering::Release);
        self.synced.store(synced, Ordering::Release);
        self.waiters.wake(written, synced, self.has_failed());
        let _guard = self.blocking_lock.lock();
        self.blocking_cv.notify_all();
    }

    /// Marks the log failed for `reason` and wakes every waiter that the
    /// positions `written`/`synced` (the last ones the writer reached) do
    /// not cover, with an error.
    pub(crate) fn fail(&self, reason: String, written: u64, synced: u64) {
        self.tail.lock().failure = Some(reason);
        self.failed.store(true, Ordering::Release);
        self.publish(written, synced);
    }

    /// Marks the log failed after a panic in a group commit, when the
    /// positions reached are not known: every waiter gets an error.
    pub(crate) fn fail_on_panic(&self) {
        self.tail.lock().failure = Some("the log writer panicked".into());
        self.failed.store(true, Ordering::Release);
        self.waiters.wake(0, 0, true);
        let _guard = self.blocking_lock.lock();
        self.blocking_cv.notify_all();
    }

    /// Asks the writer thread to write what is left, sync and stop.
    pub(crate) fn shut_down(&self) {
        let mut tail = self.tail.lock();
        tail.shutdown = true;
        self.wake_writer(tail);
    }

    /// Sleeps (holding neither the writer nor, while asleep, the tail) until
    /// there is something for the writer thread to do.
    pub(crate) fn wait_for_work(&self) -> Work {
        let mut tail = self.tail.lock();
        loop {
            if tail.failure.is_some() {
                return Work::Failed;
            }
            // A snapshot's cut needs a cycle even with nothing to write: the
            // cycle starts the segment the next record goes into.
            if !tail.buf.is_empty() || !tail.cuts.is_empty() {
                return Work::Cycle;
            }
            // Only a writer holder changes these, and it publishes them at
            // the end of every cycle.
            let unsynced = self.written() > self.synced();
            let deadline = tail.last_sync + EVERY_SECOND_SYNC_INTERVAL;
            if unsynced && (tail.sync_requested || tail.shutdown || Instant::now() >= deadline) {
                return Work::Cycle;
            }
            if tail.shutdown {
                return Work::Shutdown;
            }
            tail.writer_waiting = true;
            tail.writer_deadline = unsynced;
            if unsynced {
                self.wake_writer.wait_until(&mut tail, deadline);
            } else {
                self.wake_writer.wait(&mut tail);
            }
            tail.writer_waiting = false;
            tail.writer_deadline = false;
        }
    }

    /// Counts one more event loop that syncs for this log.
    pub(crate) fn add_loop(&self) {
        self.loops.fetch_add(1, Ordering::Relaxed);
    }

    /// How many event loops sync for this log.
    pub(crate) fn loop_count(&self) -> usize {
        self.loops.load(Ordering::Relaxed)
    }

    /// Whether the event loops commit their own records when they run dry
    /// (one loop), rather than the writer thread (several loops; see
    /// `loop_sync`).
    pub(crate) fn loops_commit(&self) -> bool {
        self.loop_count() <= INLINE_LOOPS_MAX
    }

    /// Files a loop's request for a commit up to `lsn`, to be woken through
    /// `waker` by whoever holds the writer now, once it is done.
    pub(crate) fn defer(&self, lsn: u64, waker: Waker) {
        let mut deferred = self.deferred.lock();
        match deferred.iter_mut().find(|(_, w)| w.will_wake(&waker)) {
            Some(entry) => entry.0 = entry.0.max(lsn),
            None => deferred.push((lsn, waker)),
        }
    }

    /// How many async waiters are filed.
    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters.len()
    }

    /// Whether any loop's request is filed.
    #[cfg(test)]
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.lock().is_empty()
    }

    /// Called after releasing the writer: wakes the loops that asked for a
    /// commit while it was held and whose records are not durable yet.
    pub(crate) fn wake_deferred(&self) {
        let mut deferred = self.deferred.lock();
        if deferred.is_empty() {
            return;
        }
        let done = self.loop_done();
        let failed = self.has_failed();
        for (lsn, waker) in deferred.drain(..) {
            if lsn > done && !failed {
                waker.wake();
            }
        }
    }

    /// The mark replies wait for: synced in Always mode, written in
    /// EverySecond mode (where replies wait for the write only).
    pub(crate) fn durable_mark(&self) -> Mark {
        match self.mode {
            FsyncMode::Always => Mark::Synced,
            FsyncMode::EverySecond => Mark::Written,
        }
    }

    /// How far [`LogState::durable_mark`] got: what a loop's commit makes durable.
    pub(crate) fn loop_done(&self) -> u64 {
        self.mark_lsn(self.durable_mark())
    }

    /// How far `mark` got.
    fn mark_lsn(&self, mark: Mark) -> u64 {
        match mark {
            Mark::Synced => self.synced(),
            Mark::Written => self.written(),
        }
    }

    /// Called by a waiter that is not on a loop thread: if a loop appended
    /// records without waking the writer thread, wake it, so that the
    /// records this waiter may depend on get written (and in Always mode
    /// synced) even when no loop task waits for them.
    pub(crate) fn wake_writer_for_loop_records(&self) {
        if self.unwoken.load(Ordering::Acquire) && self.unwoken.swap(false, Ordering::AcqRel) {
            match self.mode {
                FsyncMode::Always => self.request_sync(),
                // A write is enough; the sync keeps its one-second rhythm.
                FsyncMode::EverySecond => self.wake_writer(self.tail.lock()),
            }
        }
    }

    /// Asks the writer thread to sync soon (used by `flush` in EverySecond
    /// mode, and for loop records a waiter off the loops may need).
    pub(crate) fn request_sync(&self) {
        let mut tail = self.tail.lock();
        tail.sync_requested = true;
        self.wake_writer(tail);
    }

    /// Wakes the writer thread if it sleeps, after releasing `tail`.
    fn wake_writer(&self, mut tail: MutexGuard<'_, Tail>) {
        let wake = std::mem::take(&mut tail.writer_waiting);
        drop(tail);
        if wake {
            self.wake_writer.notify_one();
        }
    }

    /// Resolves once `mark` reaches `lsn`, or with an error once the log fails.
    pub(crate) fn wait_for(&self, mark: Mark, lsn: u64) -> DurableWait<'_> {
        DurableWait { state: self, mark, lsn, key: None, filed_at: None }
    }

    /// Blocks the calling (non-async) thread until every record up to `lsn`
    /// is synced or the log fails.
    pub(crate) fn wait_synced_blocking(&self, lsn: u64) -> Result<(), StoreError> {
        if self.mode == FsyncMode::EverySecond {
            self.request_sync();
        }
        self.wake_writer_for_loop_records();
        let mut guard = self.blocking_lock.lock();
        loop {
            if lsn <= self.synced() {
                return Ok(());
            }
            if self.has_failed() {
                return Err(self.failed_error());
            }
            self.blocking_cv.wait_for(&mut guard, BLOCKING_RECHECK);
        }
    }

    /// Cuts the log for a snapshot: the records appended so far go before
    /// the cut, and the next record starts a new segment. Returns the LSN
    /// of the cut and the bytes appended before it, and counts the snapshot
    /// as in progress until [`LogState::snapshot_done`] or
    /// [`LogState::snapshot_abandoned`].
    pub(crate) fn cut_for_snapshot(&self) -> Result<(u64, u64), StoreError> {
        let (lsn, appended_bytes) = {
            let mut tail = self.tail.lock();
            if let Some(reason) = &tail.failure {
                return Err(StoreError::Failed(reason.clone()));
            }
            let lsn = tail.next_lsn;
            let offset = tail.buf.len();
            if tail.cuts.last().map(|c| c.0) != Some(lsn) {
                debug_assert!(tail.cuts.iter().all(|&(l, o)| l < lsn && o <= offset), "cuts are in log order");
                tail.cuts.push((lsn, offset));
            }
            (lsn, tail.appended_bytes)
        };
        self.snapshots.lock().in_progress += 1;
        Ok((lsn, appended_bytes))
    }

    /// Records that a snapshot at a cut taken when `appended_bytes_at_cut`
    /// bytes had been appended is complete.
    pub(crate) fn snapshot_done(&self, appended_bytes_at_cut: u64) {
        let mut schedule = self.snapshots.lock();
        assert!(schedule.in_progress > 0, "a snapshot finishes only once it began");
        schedule.in_progress -= 1;
        schedule.bytes_at_last = schedule.bytes_at_last.max(appended_bytes_at_cut);
    }

    /// Records that a snapshot that began will not finish.
    pub(crate) fn snapshot_abandoned(&self) {
        let mut schedule = self.snapshots.lock();
        assert!(schedule.in_progress > 0, "a snapshot is abandoned only once it began");
        schedule.in_progress -= 1;
    }

    /// Whether a snapshot is due: none is in progress and the log grew by
    /// `after_bytes` since the last one's cut.
    pub(crate) fn snapshot_due(&self, after_bytes: u64) -> bool {
        let schedule = self.snapshots.lock();
        schedule.in_progress == 0
            && self.appended_bytes.load(Ordering::Relaxed).saturating_sub(schedule.bytes_at_last) >= after_bytes
    }
}

/// Resolves once a mark reaches an LSN, or with an error once the log fails
/// ([`LogState::wait_for`]).
pub(crate) struct DurableWait<'a> {
    state: &'a LogState,
    mark: Mark,
    lsn: u64,
    key: Option<WaiterKey>,
    /// When the wait was first filed (it was not answered at once).
    filed_at: Option<Instant>,
}

impl DurableWait<'_> {
    fn outcome(&self) -> Option<Result<(), StoreError>> {
        if self.lsn <= self.state.mark_lsn(self.mark) {
            return Some(Ok(()));
        }
        if self.state.has_failed() {
            return Some(Err(self.state.failed_error()));
        }
        None
    }
}

impl Future for DurableWait<'_> {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(done) = this.outcome() {
            if let Some(at) = this.filed_at.take() {
                this.state.timing.wait.add(at.elapsed().as_micros() as u64);
            }
            return Poll::Ready(done);
        }
        let mut registry = this.state.waiters.lock();
        // Checked again under the lock: a publish stores its marks before it
        // takes the lock, so either this sees them or the publish sees the entry.
        if let Some(done) = this.outcome() {
            if let Some(key) = this.key.take() {
                registry.remove(key);
            }
            drop(registry);
            if let Some(at) = this.filed_at.take() {
                this.state.timing.wait.add(at.elapsed().as_micros() as u64);
            }
            return Poll::Ready(done);
        }
        match this.key {
            Some(key) => registry.refile(key, this.mark, cx.waker()),
            None => this.key = Some(registry.file(this.lsn, this.mark, cx.waker())),
        }
        drop(registry);
        let now = *this.filed_at.get_or_insert_with(Instant::now);
        if this.mark == this.state.durable_mark() && loop_thread::in_loop() && this.state.loops_commit() {
            if loop_thread::wanted() == 0 {
                LOOP_WAIT_SINCE.with(|s| s.set(Some(now)));
            }
            loop_thread::note_wait(this.lsn);
        } else {
            this.state.wake_writer_for_loop_records();
        }
        Poll::Pending
    }
}

impl Drop for DurableWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.state.waiters.lock().remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(Default::default()));
        (f.clone(), Waker::from(f))
    }

    fn poll(w: &mut DurableWait<'_>, waker: &Waker) -> Poll<Result<(), StoreError>> {
        Pin::new(w).poll(&mut Context::from_waker(waker))
    }

    /// A fresh state with `records` records appended (none written).
    fn state_with(mode: FsyncMode, records: u64) -> LogState {
        let state = LogState::new(mode, 1, 0);
        for lsn in 1..=records {
            assert_eq!(state.append_payload(0, record::KIND_FENCE_HIGH, &lsn.to_le_bytes()).unwrap(), lsn);
        }
        state
    }

    /// A wait for `mark` to reach `lsn`, polled once (it must be pending),
    /// with the flag its waker raises.
    fn pending(state: &LogState, mark: Mark, lsn: u64) -> (DurableWait<'_>, Arc<Flag>, Waker) {
        let (raised, waker) = flag();
        let mut wait = state.wait_for(mark, lsn);
        assert!(poll(&mut wait, &waker).is_pending());
        (wait, raised, waker)
    }

    #[test]
    fn a_publish_wakes_only_the_waiters_it_covers() {
        let state = state_with(FsyncMode::Always, 9);
        let (mut a, f5, w5) = pending(&state, Mark::Synced, 5);
        let (b, f9, _) = pending(&state, Mark::Synced, 9);
        state.publish(6, 6);
        assert!(f5.0.load(Ordering::SeqCst));
        assert!(!f9.0.load(Ordering::SeqCst), "LSN 9 is not synced yet");
        assert!(matches!(poll(&mut a, &w5), Poll::Ready(Ok(()))));
        drop(a);
        assert_eq!(state.waiters.len(), 1);
        drop(b);
        assert_eq!(state.waiters.len(), 0, "a dropped waiter leaves no entry");
    }

    #[test]
    fn written_covers_written_waiters_but_not_synced_ones() {
        let state = state_with(FsyncMode::EverySecond, 3);
        let (mut w, fw, ww) = pending(&state, Mark::Written, 3);
        let (mut s, fs, ws) = pending(&state, Mark::Synced, 3);
        state.publish(3, 0);
        assert!(fw.0.load(Ordering::SeqCst));
        assert!(!fs.0.load(Ordering::SeqCst));
        assert!(matches!(poll(&mut w, &ww), Poll::Ready(Ok(()))));
        assert!(poll(&mut s, &ws).is_pending(), "re-polled while still waiting: stays filed");
        assert_eq!(state.waiters.len(), 1);
    }

    #[test]
    fn a_failure_wakes_everyone_with_an_error() {
        let state = state_with(FsyncMode::Always, 1);
        let (mut a, f, waker) = pending(&state, Mark::Synced, 100);
        state.fail("disk on fire".into(), 0, 0);
        assert!(f.0.load(Ordering::SeqCst));
        assert!(matches!(poll(&mut a, &waker), Poll::Ready(Err(StoreError::Failed(r))) if r == "disk on fire"));
        assert!(state.append_payload(0, record::KIND_MARK, &[]).is_err(), "a failed log takes no record");
    }

    /// The positions are checked where they change: a writer that claims to
    /// have synced more than it wrote, or written more than was appended,
    /// or moved a position back, is a bug and stops the process.
    #[test]
    #[should_panic(expected = "synced LSN 3 <= written LSN 2")]
    fn publishing_synced_past_written_is_refused() {
        state_with(FsyncMode::Always, 3).publish(2, 3);
    }

    #[test]
    #[should_panic(expected = "written LSN 4 <= appended LSN 3")]
    fn publishing_written_past_appended_is_refused() {
        state_with(FsyncMode::Always, 3).publish(4, 4);
    }

    #[test]
    #[should_panic(expected = "positions only grow")]
    fn publishing_a_position_backwards_is_refused() {
        let state = state_with(FsyncMode::Always, 3);
        state.publish(3, 3);
        state.publish(3, 2);
    }

    #[test]
    #[should_panic(expected = "a snapshot finishes only once it began")]
    fn a_snapshot_that_never_began_cannot_finish() {
        state_with(FsyncMode::Always, 0).snapshot_done(0);
    }
}
