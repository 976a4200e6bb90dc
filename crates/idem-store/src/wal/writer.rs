//! Group commit: appenders encode records into one in-memory tail under a
//! short mutex ([`super::state`]); whoever holds the [`Writer`] (the writer
//! thread, or an event loop committing for itself, [`super::loop_sync`])
//! swaps the tail out, writes it with one `pwrite`, makes it durable with
//! one `fdatasync`, and publishes the new positions, which wakes every
//! waiter they cover.
//!
//! Back-of-envelope per batch (Always mode): 1 pwrite + 1 fdatasync + one
//! wake-up of the waiters, however many records it holds; per record: one
//! encode into a thread-local scratch buffer (no allocation once warm), one
//! mutex acquisition, one memcpy, and at most one futex wake when the writer
//! was idle. While one sync runs, the next batch accumulates, and the writer
//! starts writing it as soon as the sync returns: it never sleeps on a timer
//! in Always mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::io::Vfs;
use super::open_segment::OpenSegment;
use super::prealloc::Preallocator;
use super::record;
use super::state::{LogState, Work, SPARE_BYTES_KEPT_MAX, TAIL_BYTES_INITIAL};

/// The group-commit state; whoever holds it (behind the log's mutex) writes
/// and syncs.
pub(crate) struct Writer {
    state: Arc<LogState>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    seg: OpenSegment,
    segment_bytes_max: u64,
    /// Last LSN handed to the OS.
    written_lsn: u64,
    /// Last LSN on stable storage.
    synced_lsn: u64,
    /// The last LSN recovered at open; a shutdown mark is written only if
    /// something was written since.
    opened_lsn: u64,
    /// Whether the last record written is a shutdown mark.
    last_is_mark: bool,
    /// Bytes written to segments since open.
    written_since_open: u64,
    prealloc: Preallocator,
    /// The swapped-out tail being written, kept to reuse its allocation.
    batch: Vec<u8>,
    /// Snapshot cuts taken with `batch`.
    cuts: Vec<(u64, usize)>,
    /// Set after the shutdown flush: nothing is written again.
    closed: bool,
    /// When the last `fdatasync` returned (the `sync_gap` probe).
    last_sync_end: Option<Instant>,
}

impl Writer {
    /// The writer of a log just recovered: `seg` is its last segment, and
    /// every record `state` counts as appended is in it or before it, synced.
    pub(crate) fn new(
        state: Arc<LogState>,
        vfs: Arc<dyn Vfs>,
        dir: PathBuf,
        seg: OpenSegment,
        segment_bytes_max: u64,
        prealloc_after_bytes: Option<u64>,
    ) -> Writer {
        let recovered = state.appended();
        assert!(
            state.written() == recovered && state.synced() == recovered,
            "a recovered log starts with every record written and synced"
        );
        assert!(seg.base() <= recovered + 1, "the open segment starts at or before the next record");
        let prealloc = Preallocator::new(vfs.clone(), dir.clone(), segment_bytes_max, prealloc_after_bytes);
        Writer {
            state,
            vfs,
            dir,
            seg,
            segment_bytes_max,
            written_lsn: recovered,
            synced_lsn: recovered,
            opened_lsn: recovered,
            last_is_mark: false,
            written_since_open: 0,
            prealloc,
            batch: Vec::with_capacity(TAIL_BYTES_INITIAL),
            cuts: Vec::new(),
            closed: false,
            last_sync_end: None,
        }
    }

    /// One group commit: writes whatever the tail holds, syncs it (always in
    /// Always mode; in EverySecond mode when a second has passed or a sync
    /// was requested), and publishes the new positions, waking the waiters
    /// they cover. Runs on the writer thread or on an event loop that syncs
    /// for its own connections; the caller holds the writer's mutex. Returns
    /// false once the log has failed or was closed.
    pub(crate) fn cycle(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let state = self.state.clone();
        let _guard = FailOnPanic(&state);
        self.cycle_inner()
    }

    fn cycle_inner(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        let mut cuts = std::mem::take(&mut self.cuts);
        let Some(taken) = self.state.take_batch(&mut batch, &mut cuts) else {
            self.batch = batch;
            self.cuts = cuts;
            return false;
        };
        assert!(
            self.synced_lsn <= self.written_lsn && self.written_lsn <= taken.end_lsn,
            "synced {} <= written {} <= appended {}",
            self.synced_lsn,
            self.written_lsn,
            taken.end_lsn
        );
        let result = self.write_and_sync(&batch, &cuts, taken.end_lsn, taken.sync_now);
        batch.clear();
        if batch.capacity() > SPARE_BYTES_KEPT_MAX {
            batch = Vec::with_capacity(TAIL_BYTES_INITIAL);
        }
        cuts.clear();
        self.batch = batch;
        self.cuts = cuts;
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
        end_lsn: u64,
        sync_now: bool,
    ) -> Result<(), String> {
        // A snapshot's cut taken while the tail was empty still starts a new
        // segment here, before any later record: the snapshot will drop
        // every segment below its cut.
        if !batch.is_empty() || !cuts.is_empty() {
            self.write_batch(batch, cuts, end_lsn)?;
        }
        assert_eq!(self.written_lsn, end_lsn, "a cycle writes every record it took");
        if sync_now && self.written_lsn > self.synced_lsn {
            self.sync()?;
        }
        self.state.publish(self.written_lsn, self.synced_lsn);
        if self.prealloc.tend(self.written_since_open, self.seg.headroom(), self.seg.has_records()) {
            self.rotate(self.written_lsn + 1)?;
        }
        Ok(())
    }

    /// The last work at shutdown: writes and syncs what is left, then (when
    /// anything was written since open) a mark record that attests every
    /// record before it, so later damage anywhere in the log is reported
    /// rather than mistaken for a torn tail. The writer is closed afterwards.
    fn finish(&mut self) {
        if !self.cycle() {
            return;
        }
        assert_eq!(self.synced_lsn, self.written_lsn, "the shutdown cycle syncs everything");
        if self.written_lsn > self.opened_lsn && !self.last_is_mark {
            self.state.append_shutdown_mark(self.synced_lsn);
            if !self.cycle() {
                return;
            }
            self.last_is_mark = true;
        }
        self.closed = true;
    }

    /// Writes one swapped-out tail (the records after `written_lsn` up to
    /// `end_lsn`), starting new segments at snapshot cuts and when the
    /// current one is full.
    fn write_batch(&mut self, batch: &[u8], cuts: &[(u64, usize)], end_lsn: u64) -> Result<(), String> {
        debug_assert!(
            batch_holds(batch, self.written_lsn + 1, end_lsn),
            "the batch holds records {}..={end_lsn}",
            self.written_lsn + 1
        );
        let first_lsn = self.written_lsn + 1;
        if !batch.is_empty() {
            self.last_is_mark = false;
        }
        let mut start = 0;
        for &(cut_lsn, offset) in cuts {
            assert!(start <= offset && offset <= batch.len(), "a cut falls inside its batch, in order");
            if offset > start {
                self.write_chunk(&batch[start..offset], cut_lsn - 1)?;
            }
            // The current segment already begins at the cut when it was
            // started there and holds nothing yet.
            if self.seg.base() != cut_lsn {
                self.rotate(cut_lsn)?;
            }
            start = offset;
        }
        if start < batch.len() {
            self.write_chunk(&batch[start..], end_lsn)?;
        }
        if !batch.is_empty() {
            self.state.count_batch(end_lsn + 1 - first_lsn, batch.len() as u64);
        }
        Ok(())
    }

    /// Writes `chunk`, whole records ending with LSN `last_lsn`.
    fn write_chunk(&mut self, chunk: &[u8], last_lsn: u64) -> Result<(), String> {
        assert!(last_lsn > self.written_lsn, "a chunk holds records after LSN {}", self.written_lsn);
        if self.seg.has_records() && self.seg.would_exceed(chunk.len() as u64, self.segment_bytes_max) {
            self.rotate(self.written_lsn + 1)?;
        }
        let started = Instant::now();
        self.seg.append(chunk)?;
        self.state.timing().write.add(started.elapsed().as_micros() as u64);
        self.written_since_open += chunk.len() as u64;
        self.written_lsn = last_lsn;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        let started = Instant::now();
        if let Some(end) = self.last_sync_end {
            self.state.timing().sync_gap.add(started.saturating_duration_since(end).as_micros() as u64);
        }
        self.seg.sync_data()?;
        let ended = Instant::now();
        self.last_sync_end = Some(ended);
        self.state.count_sync(ended.saturating_duration_since(started).as_micros() as u64);
        self.synced_lsn = self.written_lsn;
        Ok(())
    }

    /// Starts segment `base`. The old segment is synced first and the new
    /// one's header and directory entry are synced before any record goes
    /// into it, so only the last segment can ever hold a torn write.
    fn rotate(&mut self, base: u64) -> Result<(), String> {
        assert_eq!(base, self.written_lsn + 1, "a segment starts at the next record to write");
        if self.written_lsn > self.synced_lsn {
            self.sync()?;
            self.state.publish(self.written_lsn, self.synced_lsn);
        }
        let prepared = self.prealloc.take_ready(self.written_since_open);
        let preallocated = prepared.is_some();
        let started = match prepared {
            Some(file) => OpenSegment::install_prepared(&*self.vfs, &self.dir, file, base),
            None => OpenSegment::create(&*self.vfs, &self.dir, base),
        };
        self.seg = started.map_err(|e| format!("starting log segment {base} in {} failed: {e}", self.dir.display()))?;
        self.state.count_rotation(preallocated);
        Ok(())
    }

    /// Marks the log failed. The data that failed to sync is never synced
    /// again (after a failed fsync the kernel may have dropped the dirty
    /// pages and a retry could report success falsely): recovery is by restart.
    fn fail(&mut self, reason: String) {
        tracing::error!(dir = %self.dir.display(), "write-ahead log failed: {reason}; \
            every pending and later write is refused (READONLY) until idem is restarted");
        self.state.fail(reason, self.written_lsn, self.synced_lsn);
    }
}

/// Whether `batch` holds exactly the records `first..=last`, in order (an
/// empty batch: `first` is `last + 1`). Walks and checksums every record, so
/// it runs in debug builds only.
fn batch_holds(batch: &[u8], first: u64, last: u64) -> bool {
    let mut lsn = first;
    let mut rest = batch;
    while !rest.is_empty() {
        match record::read_record(rest) {
            Ok(r) if r.lsn == lsn => {
                rest = &rest[r.size..];
                lsn += 1;
            }
            _ => return false,
        }
    }
    lsn == last + 1
}

/// Fails the log if a group commit panics (on the writer thread or on an
/// event loop), so that waiters get an error instead of waiting forever.
struct FailOnPanic<'a>(&'a LogState);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the write-ahead log writer panicked; commands are refused until restart");
            self.0.fail_on_panic();
        }
    }
}

/// Runs the writer thread: a group commit whenever appenders that do not
/// sync for themselves have left records in the tail (or, in EverySecond
/// mode, when a sync is due), and the final flush and mark at shutdown.
/// Returns at shutdown or after a failure, once the preallocation helper (if
/// any) has stopped.
pub(crate) fn run_thread(writer: Arc<Mutex<Writer>>, state: Arc<LogState>) {
    let _guard = FailOnPanic(&state);
    loop {
        match state.wait_for_work() {
            Work::Cycle => {
                let ok = writer.lock().cycle();
                state.wake_deferred();
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
    writer.lock().prealloc.stop();
}
