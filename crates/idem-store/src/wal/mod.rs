//! The write-ahead log: records, group commit, snapshots and recovery.
//!
//! INTERFACE (stable; `engine.rs` is written against it):
//! - [`Log::open`] recovers a data directory, streaming every logged change
//!   (with the engine time of its record) into a callback, and returns what
//!   recovery learned ([`Recovered`]).
//! - [`Log::append`] encodes one record (the changes of one command or tick)
//!   into the in-memory tail and returns its [`Lsn`]. The engine calls it while
//!   it holds the shard's lock, so the log order of a key is its apply order.
//! - [`Log::durable`] resolves once every record up to an LSN is on stable
//!   storage (once written in [`FsyncMode::EverySecond`]). After a write or
//!   fsync failure it resolves with an error for every LSN not synced before
//!   the failure: nothing is acknowledged, ever again, until a restart.
//! - [`Log::begin_snapshot`] starts a snapshot; the engine adds every live
//!   record, shard by shard, and `finish`es it; the log then drops segments
//!   the snapshot covers.
//!
//! Layout of this module, each depending only on those listed before it:
//! - `io` (the storage interface), `record` (byte formats), `segment`
//!   (file names, and the scan that validates a segment), `loop_wakes`
//!   (wake-ups handed to a loop from other threads), `waiters` (the
//!   registry of durable waits), `loop_thread` (what a loop thread knows
//!   about itself), `timing` (the sync path's time probes);
//! - `state` (the tail, the log positions and their invariants, the
//!   failure, shared by everything below), `open_segment` (creating and
//!   reopening the segment appended to), `prealloc` (zero-filling the next
//!   one);
//! - `writer` (group commit), `loop_sync` (group commit on event loops),
//!   `snapshot`, `recover`, `check` (offline verification);
//! - `sim` (a fault-injecting storage for crash tests, with the `testing`
//!   feature).
//!
//! docs/durability.md explains the guarantees and the on-disk format.
//! ARCHITECTURE.md lists the invariants and where they are asserted.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idem_core::Change;

use crate::{FsyncMode, StoreError};

mod check;
pub mod io;
mod loop_sync;
mod loop_thread;
mod loop_wakes;
mod open_segment;
mod prealloc;
mod record;
mod recover;
mod segment;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
mod snapshot;
mod state;
mod timing;
mod waiters;
mod writer;

pub use check::{check, check_with, CheckReport};
pub use loop_sync::LoopSync;
#[cfg(feature = "testing")]
pub use record::{
    decode_changes_for_test, decode_record_for_test, encode_changes_for_test, frame_record_for_test,
    segment_header_for_test,
};
pub use segment::SEGMENT_BYTES_MAX;
pub use snapshot::SnapshotWriter;
pub use state::{LogStats, SYNC_US_BOUNDS};
pub use timing::ProbeStats;

use io::{OsFs, Vfs};
use state::LogState;
use writer::Writer;

/// A position in the log: records up to and including it are ordered before later ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// What recovery learned from the data directory.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The highest engine time in any record or snapshot (0 for a new directory).
    pub clock_ms: u64,
    /// Fences must resume above this: the max of every fence logged and every
    /// reserved high-water mark.
    pub fence_high: u64,
    /// Records replayed from the log tail.
    pub records: u64,
}

/// Options for opening a log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// When appended records reach stable storage.
    pub fsync: FsyncMode,
    /// Start a snapshot once the log has grown this many bytes since the last one.
    pub snapshot_after_bytes: u64,
}

/// Where and how the log stores its files; [`Storage::default`] is the real
/// file system with 64 MiB segments. Tests pass a simulated file system
/// (`sim::SimFs`, with the `testing` feature).
#[derive(Clone, Debug)]
pub struct Storage {
    /// The file system.
    pub vfs: Arc<dyn Vfs>,
    /// Start a new segment when the current one would grow past this.
    pub segment_bytes_max: u64,
    /// Once this many bytes were written since open, segments are
    /// preallocated (zero-filled to `segment_bytes_max` by a helper thread)
    /// ahead of use, so that each sync flushes data only. `None` turns it off.
    pub prealloc_after_bytes: Option<u64>,
}

/// The default of [`Storage::prealloc_after_bytes`]: a data directory that
/// writes less than this per run never holds a preallocated segment.
pub const PREALLOC_AFTER_BYTES: u64 = 1 << 20;

impl Default for Storage {
    fn default() -> Self {
        Storage {
            vfs: Arc::new(OsFs),
            segment_bytes_max: SEGMENT_BYTES_MAX,
            prealloc_after_bytes: Some(PREALLOC_AFTER_BYTES),
        }
    }
}

/// The write-ahead log of one data directory.
pub struct Log {
    state: Arc<LogState>,
    /// The group-commit state; whoever holds it writes and syncs.
    writer: Arc<parking_lot::Mutex<Writer>>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    opts: LogOptions,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    _lock: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("fsync", &self.opts.fsync)
            .field("appended", &self.state.appended())
            .field("synced", &self.state.synced())
            .finish()
    }
}

impl Log {
    /// Opens (creating if needed) and recovers `dir`, calling `replay` with
    /// `(engine_time_ms, change)` for every change, in log order.
    pub fn open(
        dir: &Path,
        opts: &LogOptions,
        replay: &mut dyn FnMut(u64, Change),
    ) -> Result<(Log, Recovered), StoreError> {
        Log::open_on(dir, opts, &Storage::default(), replay)
    }

    /// [`Log::open`] on the given storage.
    pub fn open_on(
        dir: &Path,
        opts: &LogOptions,
        storage: &Storage,
        replay: &mut dyn FnMut(u64, Change),
    ) -> Result<(Log, Recovered), StoreError> {
        let vfs = storage.vfs.clone();
        vfs.create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let lock_path = dir.join(segment::LOCK_NAME);
        let lock = vfs
            .try_lock(&lock_path)
            .map_err(|source| StoreError::Io { path: lock_path.clone(), source })?
            .ok_or_else(|| StoreError::Locked(dir.to_path_buf()))?;
        let (walk, seg) = recover::recover(&*vfs, dir, replay)?;
        let state = Arc::new(LogState::new(opts.fsync, walk.next_lsn, walk.log_bytes()));
        let writer = Writer::new(
            state.clone(),
            vfs.clone(),
            dir.to_path_buf(),
            seg,
            storage.segment_bytes_max,
            storage.prealloc_after_bytes,
        );
        let writer = Arc::new(parking_lot::Mutex::new(writer));
        let (thread_writer, thread_state) = (writer.clone(), state.clone());
        let handle = std::thread::Builder::new()
            .name("idem-wal-writer".into())
            .spawn(move || writer::run_thread(thread_writer, thread_state))
            .map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let recovered = Recovered { clock_ms: walk.clock_ms, fence_high: walk.fence_high, records: walk.records };
        Ok((
            Log {
                state,
                writer,
                vfs,
                dir: dir.to_path_buf(),
                opts: opts.clone(),
                writer_thread: Some(handle),
                _lock: lock,
            },
            recovered,
        ))
    }

    /// Appends one record made of `changes` at engine time `now_ms`.
    /// Fails with `StoreError::Failed` once the log has failed.
    pub fn append(&self, now_ms: u64, changes: &[Change]) -> Result<Lsn, StoreError> {
        self.state.append_changes(now_ms, changes).map(Lsn)
    }

    /// Appends a fence high-water mark: after a crash, fences resume above `fence_high`.
    pub fn append_fence_high(&self, now_ms: u64, fence_high: u64) -> Result<Lsn, StoreError> {
        self.state.append_payload(now_ms, record::KIND_FENCE_HIGH, &fence_high.to_le_bytes()).map(Lsn)
    }

    /// The LSN of the last appended record (what a read has observed).
    pub fn last_appended(&self) -> Lsn {
        Lsn(self.state.appended())
    }

    /// Resolves when every record up to `lsn` is durable (per the fsync mode).
    /// Once the log has failed, it fails for every LSN that was not durable
    /// before the failure.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), StoreError> {
        self.state.wait_for(self.state.durable_mark(), lsn.0).await
    }

    /// A handle for event loop threads that do the group commit for their
    /// own connections (see [`LoopSync`]).
    pub fn loop_sync(&self) -> LoopSync {
        LoopSync::new(self.state.clone(), self.writer.clone())
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        self.state.failure()
    }

    /// Whether a snapshot is due (the log grew past `snapshot_after_bytes`
    /// since the last one and none is in progress).
    pub fn snapshot_due(&self) -> bool {
        self.state.snapshot_due(self.opts.snapshot_after_bytes)
    }

    /// Starts a snapshot that covers every record appended before this call:
    /// the log starts a new segment at the next LSN, so the snapshot's cut
    /// falls on a segment boundary.
    pub fn begin_snapshot(&self) -> Result<SnapshotWriter, StoreError> {
        SnapshotWriter::begin(self.state.clone(), self.vfs.clone(), self.dir.clone())
    }

    /// Writes whatever is buffered and syncs it; used on graceful shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let target = self.state.appended();
        if target > self.state.synced() {
            self.state.request_sync();
        }
        self.state.wait_for(waiters::Mark::Synced, target).await
    }

    /// Counters about group commit since open.
    pub fn stats(&self) -> LogStats {
        self.state.stats()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Log {
    /// Stops the writer after it has written and synced everything appended
    /// and a final mark record; blocks until then.
    fn drop(&mut self) {
        self.state.shut_down();
        if let Some(handle) = self.writer_thread.take() {
            let _ = handle.join();
        }
        let s = self.state.stats();
        let per_sync = |x: u64| if s.syncs == 0 { 0.0 } else { x as f64 / s.syncs as f64 };
        tracing::info!(
            dir = %self.dir.display(),
            records = s.records,
            syncs = s.syncs,
            loop_cycles = s.loop_cycles,
            records_per_sync = %format!("{:.1}", per_sync(s.records)),
            sync_us_avg = %format!("{:.0}", per_sync(s.sync_us_total)),
            sync_gap_us_avg = %format!("{:.0}", s.sync_gap.mean_us()),
            write_us_avg = %format!("{:.0}", s.write.mean_us()),
            waits = s.wait.count(),
            wait_us_avg = %format!("{:.0}", s.wait.mean_us()),
            wait_us_p50_le = s.wait.quantile_bound_us(&SYNC_US_BOUNDS, 0.5),
            wait_us_p99_le = s.wait.quantile_bound_us(&SYNC_US_BOUNDS, 0.99),
            loop_delays = s.loop_delay.count(),
            loop_delay_us_avg = %format!("{:.0}", s.loop_delay.mean_us()),
            loop_delay_us_p50_le = s.loop_delay.quantile_bound_us(&SYNC_US_BOUNDS, 0.5),
            "write-ahead log closed"
        );
    }
}
