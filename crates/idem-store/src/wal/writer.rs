//! Group commit: appenders encode records into one in-memory tail under a
//! short mutex; one writer thread swaps the tail out, writes it with one
//! `pwrite`, makes it durable with one `fdatasync`, and publishes the synced
//! LSN, which wakes every waiter it covers.
//!
//! Back-of-envelope per batch (Always mode): 1 pwrite + 1 fdatasync + one
//! wake-up of the waiters, however many records it holds; per record: one
//! encode into a thread-local scratch buffer (no allocation once warm), one
//! mutex acquisition, one memcpy, and at most one futex wake when the writer
//! was idle. While one sync runs, the next batch accumulates, and the writer
//! starts writing it as soon as the sync returns: it never sleeps on a timer
//! in Always mode.
//!
//! Preallocation: once a log has written `prealloc_after_bytes` since open, a
//! helper thread zero-fills the next segment (`wal-prep.tmp`) and syncs it,
//! and the writer switches to it at the next rotation (or at once, when the
//! current segment is one that grows by appending). Records then overwrite
//! blocks that are already allocated, written and synced, so an `fdatasync`
//! flushes only data: the file's size and block map never change, and ext4
//! (or any journaling file system) has no metadata to commit per sync.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::io::{VFile, Vfs};
use super::loop_sync;
use super::record::{self, Payload, INLINE_CRC_BYTES_MAX, RECORD_BYTES_MAX, RECORD_FIXED_LEN, SEGMENT_HEADER_LEN};
use super::segment::{segment_name, PREP_TMP_NAME};
use super::waiters::{Mark, Wait};
use crate::{FsyncMode, StoreError};

/// How often EverySecond mode syncs.
const EVERY_SECOND_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A swapped-out tail buffer larger than this is not kept for reuse, so a
/// burst of huge records does not pin memory forever.
const SPARE_BYTES_KEPT_MAX: usize = 16 << 20;

/// The preallocation helper writes zeros in chunks of this size and checks
/// for cancellation between them.
const PREP_CHUNK_BYTES: usize = 1 << 20;

/// The helper syncs its zeros every this many bytes, so that the disk
/// receives them steadily instead of in one burst at the end.
const PREP_SYNC_EVERY_BYTES: u64 = 8 << 20;

/// A thread's encode scratch larger than this is released after use.
const SCRATCH_BYTES_KEPT_MAX: usize = 1 << 20;

thread_local! {
    /// Where a thread encodes a record's payload before taking the tail lock.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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
    /// The most records written in one batch.
    pub batch_records_max: u64,
    /// Segments started since open.
    pub rotations: u64,
    /// Of those, segments that were preallocated (zero-filled ahead of use).
    pub prealloc_rotations: u64,
}

/// The part of the tail guarded by the mutex.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Encoded records not yet handed to the writer.
    pub buf: Vec<u8>,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// Snapshot cuts: start a new segment before record `lsn`, which begins
    /// at byte `offset` of `buf`. At most a few entries (one per concurrent snapshot).
    pub cuts: Vec<(u64, usize)>,
    /// Why the log failed, once it has.
    pub failure: Option<String>,
    /// The log is being dropped: write what is left, then stop.
    pub shutdown: bool,
    /// The writer sleeps on `wake_writer` and needs a notify.
    pub writer_waiting: bool,
    /// While `writer_waiting`: the writer will wake by itself when the next
    /// EverySecond sync is due (it waits with that deadline).
    pub writer_deadline: bool,
    /// `flush` wants a sync even in EverySecond mode.
    pub sync_requested: bool,
    /// Bytes appended since open (for snapshot scheduling).
    pub appended_bytes: u64,
    /// When the writer last synced (EverySecond mode syncs a second later).
    pub last_sync: Instant,
}

/// State shared by the appenders, the waiters and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub mode: FsyncMode,
    pub tail: Mutex<Tail>,
    pub wake_writer: Condvar,
    /// Every record up to this LSN is on stable storage.
    pub synced: AtomicU64,
    /// Every record up to this LSN was handed to the OS.
    pub written: AtomicU64,
    /// The last LSN handed out by `append`.
    pub appended: AtomicU64,
    /// Mirrors `Tail::appended_bytes` for lock-free reads.
    pub appended_bytes: AtomicU64,
    pub failed: AtomicBool,
    /// Event loop threads that sync for this log: every `LoopSync::enter`
    /// counts, and none is taken back (a server's loops live as long as it).
    pub loops: std::sync::atomic::AtomicUsize,
    /// A loop thread appended a record while the writer thread slept and
    /// did not wake it (see `loop_sync`).
    pub unwoken: AtomicBool,
    /// Async waiters, woken by a publish that covers them or by a failure.
    pub waiters: super::waiters::Waiters,
    /// Loops that ran dry while another thread held the writer: the LSN each
    /// needs synced and its nudge waker (at most one entry per loop).
    pub deferred: Mutex<Vec<(u64, Waker)>>,
    /// Blocking waiters (snapshot `finish`) sleep here.
    pub blocking_lock: Mutex<()>,
    pub blocking_cv: Condvar,
    pub stats: Mutex<LogStats>,
    pub snapshot: Mutex<super::snapshot::SnapshotState>,
}

impl Shared {
    pub(crate) fn new(mode: FsyncMode, next_lsn: u64, appended_bytes: u64) -> Shared {
        Shared {
            mode,
            tail: Mutex::new(Tail {
                buf: Vec::with_capacity(64 << 10),
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
            synced: AtomicU64::new(next_lsn - 1),
            written: AtomicU64::new(next_lsn - 1),
            appended: AtomicU64::new(next_lsn - 1),
            appended_bytes: AtomicU64::new(appended_bytes),
            failed: AtomicBool::new(false),
            unwoken: AtomicBool::new(false),
            loops: Default::default(),
            deferred: Mutex::new(Vec::new()),
            waiters: Default::default(),
            blocking_lock: Mutex::new(()),
            blocking_cv: Condvar::new(),
            stats: Mutex::new(LogStats::default()),
            snapshot: Mutex::new(Default::default()),
        }
    }

    pub(crate) fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.tail.lock().failure.clone()
    }

    pub(crate) fn failed_error(&self) -> StoreError {
        StoreError::Failed(self.failure().unwrap_or_else(|| "the log failed".into()))
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
        let lsn = tail.next_lsn;
        tail.next_lsn += 1;
        // Reading the synced LSN at encode time under-states what is durable
        // when the bytes reach the file, which is the safe direction: the
        // field may fail to attest a synced record, never attest an unsynced one.
        let synced = self.synced.load(Ordering::Acquire);
        let before = tail.buf.len();
        record::put_record(&mut tail.buf, lsn, synced, now_ms, &payload);
        tail.appended_bytes += (tail.buf.len() - before) as u64;
        self.appended_bytes.store(tail.appended_bytes, Ordering::Relaxed);
        self.appended.store(lsn, Ordering::Release);
        let loop_writes = match self.mode {
            FsyncMode::Always => true,
            // The loop writes the record, but only the writer thread keeps
            // the one-second rhythm of syncs: a writer asleep without a
            // deadline must wake to start it.
            FsyncMode::EverySecond => tail.writer_deadline,
        };
        if tail.writer_waiting && loop_writes && loop_sync::in_loop() {
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

    /// Files a loop's request for a sync up to `lsn`, to be woken through
    /// `waker` by whoever holds the writer now, once it is done.
    pub(crate) fn defer(&self, lsn: u64, waker: Waker) {
        let mut deferred = self.deferred.lock();
        match deferred.iter_mut().find(|(_, w)| w.will_wake(&waker)) {
            Some(entry) => entry.0 = entry.0.max(lsn),
            None => deferred.push((lsn, waker)),
        }
    }

    /// Called after releasing the writer: wakes the loops that asked for a
    /// sync while it was held and whose records are not synced yet.
    pub(crate) fn wake_deferred(&self) {
        let mut deferred = self.deferred.lock();
        if deferred.is_empty() {
            return;
        }
        let done = self.loop_mark_lsn().load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        for (lsn, waker) in deferred.drain(..) {
            if lsn > done && !failed {
                waker.wake();
            }
        }
    }

    /// The mark a loop's own durable waits need: synced in Always mode,
    /// written in EverySecond mode (where replies wait for the write only).
    pub(crate) fn loop_mark(&self) -> Mark {
        match self.mode {
            FsyncMode::Always => Mark::Synced,
            FsyncMode::EverySecond => Mark::Written,
        }
    }

    /// The LSN of [`Shared::loop_mark`].
    pub(crate) fn loop_mark_lsn(&self) -> &AtomicU64 {
        self.mark_lsn(self.loop_mark())
    }

    /// Where `mark` is published.
    pub(crate) fn mark_lsn(&self, mark: Mark) -> &AtomicU64 {
        match mark {
            Mark::Synced => &self.synced,
            Mark::Written => &self.written,
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
    fn wake_writer(&self, mut tail: parking_lot::MutexGuard<'_, Tail>) {
        let wake = std::mem::take(&mut tail.writer_waiting);
        drop(tail);
        if wake {
            self.wake_writer.notify_one();
        }
    }

    /// Waits until `mark` reaches `lsn` or the log fails.
    pub(crate) async fn wait_for(&self, mark: Mark, lsn: u64) -> Result<(), StoreError> {
        Wait::new(self, mark, lsn).await
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
            if lsn <= self.synced.load(Ordering::Acquire) {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(self.failed_error());
            }
            // The timeout only guards against a missed notify; publish
            // notifies under this lock, so none should be missed.
            self.blocking_cv.wait_for(&mut guard, Duration::from_millis(100));
        }
    }

    fn publish(&self, written: u64, synced: u64) {
        self.written.store(written, Ordering::Release);
        self.synced.store(synced, Ordering::Release);
        self.waiters.wake(written, synced, self.failed.load(Ordering::Acquire));
        let _guard = self.blocking_lock.lock();
        self.blocking_cv.notify_all();
    }
}

/// The segment the writer appends to.
pub(crate) struct OpenSegment {
    pub file: Box<dyn VFile>,
    pub path: PathBuf,
    pub base: u64,
    /// Bytes of valid records in the file (header included); the next write goes here.
    pub len: u64,
    /// The file's length. Bytes between `len` and `cap` are preallocated
    /// zeros that were synced with the file's size; writes below `cap`
    /// change no metadata.
    pub cap: u64,
}

/// The next segment, being preallocated by a helper thread or ready to use.
pub(crate) enum Prep {
    Idle,
    Running(std::thread::JoinHandle<std::io::Result<Box<dyn VFile>>>),
    Ready(Box<dyn VFile>),
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub vfs: Arc<dyn Vfs>,
    pub dir: PathBuf,
    pub seg: OpenSegment,
    pub segment_bytes_max: u64,
    /// Last LSN handed to the OS.
    pub written_lsn: u64,
    /// Last LSN on stable storage.
    pub synced_lsn: u64,
    /// The last LSN recovered at open; a shutdown mark is written only if
    /// something was written since.
    pub opened_lsn: u64,
    /// Whether the last record written is a shutdown mark.
    pub last_is_mark: bool,
    /// Preallocate segments once this many bytes were written since open
    /// (`None`: never).
    pub prealloc_after_bytes: Option<u64>,
    /// Bytes written to segments since open.
    pub written_since_open: u64,
    /// No new preallocation starts before `written_since_open` reaches this
    /// (set after a failed one, so a full disk is not retried in a loop).
    pub prep_retry_at: u64,
    pub prep: Prep,
    /// Tells a running helper to stop.
    pub prep_cancel: Arc<AtomicBool>,
    /// The swapped-out tail being written, kept to reuse its allocation.
    pub batch: Vec<u8>,
    /// Snapshot cuts taken with `batch`.
    pub cuts: Vec<(u64, usize)>,
    /// Set after the shutdown flush: nothing is written again.
    pub closed: bool,
}

/// Runs the writer thread: a group commit whenever appenders that do not
/// sync for themselves have left records in the tail (or, in EverySecond
/// mode, when a sync is due), and the final flush and mark at shutdown.
/// Returns at shutdown or after a failure, once the preallocation helper (if
/// any) has stopped.
pub(crate) fn run_thread(writer: Arc<Mutex<Writer>>, shared: Arc<Shared>) {
    let _guard = FailOnPanic(&shared);
    loop {
        match wait_for_work(&shared) {
            Work::Cycle => {
                let ok = writer.lock().cycle();
                shared.wake_deferred();
                if !ok {
                    break;
                }
            }
            Work::Shutdown => {
                writer.lock().finish();
                break;
            }
            Work::Failed => break,
        }
    }
    writer.lock().stop_prep();
}

enum Work {
    Cycle,
    Shutdown,
    Failed,
}

/// Sleeps (holding neither the writer nor, while asleep, the tail) until
/// there is something for the writer thread to do.
fn wait_for_work(shared: &Shared) -> Work {
    let mut tail = shared.tail.lock();
    loop {
        if tail.failure.is_some() {
            return Work::Failed;
        }
        if !tail.buf.is_empty() {
            return Work::Cycle;
        }
        // Only a writer-lock holder changes these, and it publishes them at
        // the end of every cycle.
        let unsynced = shared.written.load(Ordering::Acquire) > shared.synced.load(Ordering::Acquire);
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
            shared.wake_writer.wait_until(&mut tail, deadline);
        } else {
            shared.wake_writer.wait(&mut tail);
        }
        tail.writer_waiting = false;
        tail.writer_deadline = false;
    }
}

impl Writer {
    /// One group commit: writes whatever the tail holds, syncs it (always in
    /// Always mode; in EverySecond mode when a second has passed or a sync
    /// was requested), and publishes the new marks, waking the waiters they
    /// cover. Runs on the writer thread or on an event loop that syncs for
    /// its own connections; the caller holds the writer's mutex. Returns
    /// false once the log has failed or was closed.
    pub(crate) fn cycle(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let shared = self.shared.clone();
        let _guard = FailOnPanic(&shared);
        self.cycle_inner()
    }

    fn cycle_inner(&mut self) -> bool {
        let batch_end;
        let sync_now;
        {
            let mut tail = self.shared.tail.lock();
            if tail.failure.is_some() {
                return false;
            }
            std::mem::swap(&mut tail.buf, &mut self.batch);
            self.cuts.append(&mut tail.cuts);
            batch_end = tail.next_lsn - 1;
            // Always mode syncs every cycle; EverySecond mode when asked to,
            // at shutdown, or a second after the last sync.
            let requested = std::mem::take(&mut tail.sync_requested);
            sync_now = requested
                || tail.shutdown
                || self.shared.mode == FsyncMode::Always
                || Instant::now() >= tail.last_sync + EVERY_SECOND_SYNC_INTERVAL;
        }
        let batch = std::mem::take(&mut self.batch);
        let cuts = std::mem::take(&mut self.cuts);
        let result = self.write_and_sync(&batch, &cuts, batch_end, sync_now);
        self.batch = batch;
        self.batch.clear();
        if self.batch.capacity() > SPARE_BYTES_KEPT_MAX {
            self.batch = Vec::with_capacity(64 << 10);
        }
        self.cuts = cuts;
        self.cuts.clear();
        match result {
            Ok(()) => true,
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn write_and_sync(
        &mut self,
        batch: &[u8],
        cuts: &[(u64, usize)],
        batch_end: u64,
        sync_now: bool,
    ) -> Result<(), String> {
        if !batch.is_empty() {
            self.last_is_mark = false;
            self.write_batch(batch, cuts, batch_end)?;
        }
        if sync_now && self.written_lsn > self.synced_lsn {
            self.sync()?;
        }
        self.shared.publish(self.written_lsn, self.synced_lsn);
        self.tend_prep()
    }

    /// The last work at shutdown: writes and syncs what is left, then (when
    /// anything was written since open) a mark record that attests every
    /// record before it, so later damage anywhere in the log is reported
    /// rather than mistaken for a torn tail. The writer is closed afterwards.
    fn finish(&mut self) {
        if !self.cycle() {
            return;
        }
        if self.written_lsn > self.opened_lsn && !self.last_is_mark {
            {
                let mut tail = self.shared.tail.lock();
                let lsn = tail.next_lsn;
                tail.next_lsn += 1;
                let mark = Payload { kind: record::KIND_MARK, bytes: &[], crc: None };
                record::put_record(&mut tail.buf, lsn, self.synced_lsn, 0, &mark);
                self.shared.appended.store(lsn, Ordering::Release);
            }
            if !self.cycle() {
                return;
            }
            self.last_is_mark = true;
        }
        self.closed = true;
    }

    /// Writes one swapped-out tail, starting new segments at snapshot cuts
    /// and when the current one is full.
    fn write_batch(&mut self, batch: &[u8], cuts: &[(u64, usize)], batch_end: u64) -> Result<(), String> {
        let first_lsn = self.written_lsn + 1;
        let mut start = 0;
        for &(cut_lsn, offset) in cuts {
            if offset > start {
                self.write_chunk(&batch[start..offset], cut_lsn - 1)?;
            }
            // The current segment already begins at the cut when it was
            // started there and holds nothing yet.
            if self.seg.base != cut_lsn {
                self.rotate(cut_lsn)?;
            }
            start = offset;
        }
        if start < batch.len() {
            self.write_chunk(&batch[start..], batch_end)?;
        }
        let records = batch_end + 1 - first_lsn;
        let mut stats = self.shared.stats.lock();
        stats.batches += 1;
        stats.records += records;
        stats.batch_records_max = stats.batch_records_max.max(records);
        stats.bytes += batch.len() as u64;
        Ok(())
    }

    fn write_chunk(&mut self, chunk: &[u8], last_lsn: u64) -> Result<(), String> {
        if self.seg.len > SEGMENT_HEADER_LEN as u64 && self.seg.len + chunk.len() as u64 > self.segment_bytes_max {
            let next = self.written_lsn + 1;
            self.rotate(next)?;
        }
        self.seg
            .file
            .write_all_at(chunk, self.seg.len)
            .map_err(|e| format!("write of {} bytes to {} failed: {e}", chunk.len(), self.seg.path.display()))?;
        self.seg.len += chunk.len() as u64;
        self.seg.cap = self.seg.cap.max(self.seg.len);
        self.written_since_open += chunk.len() as u64;
        self.written_lsn = last_lsn;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        let started = Instant::now();
        self.seg.file.sync_data().map_err(|e| format!("fdatasync of {} failed: {e}", self.seg.path.display()))?;
        let us = started.elapsed().as_micros() as u64;
        self.shared.tail.lock().last_sync = Instant::now();
        self.synced_lsn = self.written_lsn;
        let mut stats = self.shared.stats.lock();
        stats.syncs += 1;
        stats.sync_us_total += us;
        stats.sync_us_max = stats.sync_us_max.max(us);
        Ok(())
    }

    /// Starts segment `base`. The old segment is synced first and the new
    /// one's header and directory entry are synced before any record goes
    /// into it, so only the last segment can ever hold a torn write.
    fn rotate(&mut self, base: u64) -> Result<(), String> {
        if self.written_lsn > self.synced_lsn {
            self.sync()?;
            self.shared.publish(self.written_lsn, self.synced_lsn);
        }
        let prepared = self.take_prepared();
        let was_prepared = prepared.is_some();
        let started = match prepared {
            Some(file) => install_prepared(&*self.vfs, &self.dir, file, base),
            None => create_segment(&*self.vfs, &self.dir, base),
        };
        self.seg = started.map_err(|e| format!("starting log segment {base} in {} failed: {e}", self.dir.display()))?;
        let mut stats = self.shared.stats.lock();
        stats.rotations += 1;
        stats.prealloc_rotations += u64::from(was_prepared);
        Ok(())
    }

    /// The preallocated segment, if the helper has finished one.
    fn take_prepared(&mut self) -> Option<Box<dyn VFile>> {
        self.collect_prep();
        match std::mem::replace(&mut self.prep, Prep::Idle) {
            Prep::Ready(file) => Some(file),
            other => {
                self.prep = other;
                None
            }
        }
    }

    /// Turns a finished helper into `Ready`, or into `Idle` after a failure.
    fn collect_prep(&mut self) {
        if !matches!(&self.prep, Prep::Running(handle) if handle.is_finished()) {
            return;
        }
        let Prep::Running(handle) = std::mem::replace(&mut self.prep, Prep::Idle) else { unreachable!() };
        match handle.join() {
            Ok(Ok(file)) => self.prep = Prep::Ready(file),
            Ok(Err(e)) => {
                self.prep_retry_at = self.written_since_open + self.segment_bytes_max;
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "could not preallocate the next log segment; segments grow by appending until a later attempt succeeds");
            }
            Err(_) => {
                self.prep_retry_at = u64::MAX;
                tracing::error!(dir = %self.dir.display(), "the log segment preallocation thread panicked; preallocation is off until restart");
            }
        }
    }

    /// Starts preallocating the next segment when the current one is half
    /// used (or grows by appending), and switches from an appending segment
    /// to a preallocated one as soon as one is ready.
    fn tend_prep(&mut self) -> Result<(), String> {
        let Some(after) = self.prealloc_after_bytes else { return Ok(()) };
        self.collect_prep();
        match &self.prep {
            Prep::Idle => {
                let headroom = self.seg.cap - self.seg.len;
                if self.written_since_open >= after.max(self.prep_retry_at) && headroom < self.segment_bytes_max / 2 {
                    self.start_prep();
                }
            }
            Prep::Ready(_) if self.seg.len >= self.seg.cap && self.seg.len > SEGMENT_HEADER_LEN as u64 => {
                let next = self.written_lsn + 1;
                self.rotate(next)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn start_prep(&mut self) {
        let (vfs, dir, size, cancel) =
            (self.vfs.clone(), self.dir.clone(), self.segment_bytes_max, self.prep_cancel.clone());
        let spawned = std::thread::Builder::new()
            .name("idem-wal-prep".into())
            .spawn(move || preallocate(&*vfs, &dir, size, &cancel));
        match spawned {
            Ok(handle) => self.prep = Prep::Running(handle),
            Err(e) => {
                self.prep_retry_at = self.written_since_open + self.segment_bytes_max;
                tracing::warn!(error = %e, "could not start the log segment preallocation thread");
            }
        }
    }

    /// Stops the helper and removes a preallocated file nobody will use.
    fn stop_prep(&mut self) {
        self.prep_cancel.store(true, Ordering::Relaxed);
        let had_file = match std::mem::replace(&mut self.prep, Prep::Idle) {
            Prep::Idle => false,
            Prep::Running(handle) => {
                let _ = handle.join();
                true
            }
            Prep::Ready(_) => true,
        };
        if had_file {
            let _ = self.vfs.remove(&self.dir.join(PREP_TMP_NAME));
        }
    }

    /// Marks the log failed. The data that failed to sync is never synced
    /// again (after a failed fsync the kernel may have dropped the dirty
    /// pages and a retry could report success falsely): recovery is by restart.
    fn fail(&mut self, reason: String) {
        tracing::error!(dir = %self.dir.display(), "write-ahead log failed: {reason}; \
            every pending and later write is refused (READONLY) until idem is restarted");
        self.shared.tail.lock().failure = Some(reason);
        self.shared.failed.store(true, Ordering::Release);
        self.shared.publish(self.written_lsn, self.synced_lsn);
    }
}

/// Fails the log if a group commit panics (on the writer thread or on an
/// event loop), so that waiters get an error instead of waiting forever.
struct FailOnPanic<'a>(&'a Shared);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the write-ahead log writer panicked; writes are refused until restart");
            self.0.tail.lock().failure = Some("the log writer panicked".into());
            self.0.failed.store(true, Ordering::Release);
            self.0.waiters.wake(0, 0, true);
        }
    }
}

/// Creates segment `base` with its header, syncing the file and the directory.
pub(crate) fn create_segment(vfs: &dyn Vfs, dir: &std::path::Path, base: u64) -> std::io::Result<OpenSegment> {
    let path = dir.join(segment_name(base));
    let mut file = vfs.create_new(&path)?;
    file.write_all_at(&record::segment_header(base), 0)?;
    file.sync_all()?;
    vfs.sync_dir(dir)?;
    let len = SEGMENT_HEADER_LEN as u64;
    Ok(OpenSegment { file, path, base, len, cap: len })
}

/// Zero-fills a new `wal-prep.tmp` of `size` bytes in `dir` and syncs it
/// with its size, so that writes into it later change no metadata. Runs on
/// the helper thread; stops early (removing the file) when `cancel` is set.
fn preallocate(
    vfs: &dyn Vfs,
    dir: &std::path::Path,
    size: u64,
    cancel: &AtomicBool,
) -> std::io::Result<Box<dyn VFile>> {
    let path = dir.join(PREP_TMP_NAME);
    match vfs.remove(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = vfs.create_new(&path)?;
    let zeros = vec![0u8; PREP_CHUNK_BYTES];
    let mut fill = || -> std::io::Result<()> {
        let mut off = 0u64;
        while off < size {
            if cancel.load(Ordering::Relaxed) {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "preallocation cancelled"));
            }
            let n = (size - off).min(PREP_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
            if off.is_multiple_of(PREP_SYNC_EVERY_BYTES) {
                file.sync_data()?;
            }
        }
        file.sync_all()
    };
    match fill() {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = vfs.remove(&path);
            Err(e)
        }
    }
}

/// Makes the preallocated `file` segment `base`: its header is written and
/// synced before the rename, so a file with a segment's name always starts
/// with a valid header; the rename is then made durable.
fn install_prepared(
    vfs: &dyn Vfs,
    dir: &std::path::Path,
    mut file: Box<dyn VFile>,
    base: u64,
) -> std::io::Result<OpenSegment> {
    let path = dir.join(segment_name(base));
    let cap = file.len()?;
    file.write_all_at(&record::segment_header(base), 0)?;
    file.sync_data()?;
    vfs.rename(&dir.join(PREP_TMP_NAME), &path)?;
    vfs.sync_dir(dir)?;
    Ok(OpenSegment { file, path, base, len: SEGMENT_HEADER_LEN as u64, cap })
}
