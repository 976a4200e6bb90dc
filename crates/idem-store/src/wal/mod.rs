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
//! Layout of this module: `record` (byte formats), `writer` (group commit),
//! `segment` (segment files and their validation), `snapshot`, `recover`,
//! `check` (offline verification), `io` (the storage interface) and `sim`
//! (a fault-injecting storage for crash tests). docs/durability.md explains
//! the guarantees and the on-disk format.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use idem_core::Change;

use crate::{FsyncMode, StoreError};

mod check;
pub mod io;
mod loop_sync;
mod record;
mod recover;
mod segment;
pub mod sim;
mod snapshot;
mod waiters;
mod writer;

pub use check::{check, check_with, CheckReport};
pub use loop_sync::LoopSync;
pub use record::{decode_changes_for_test, encode_changes_for_test};
pub use segment::SEGMENT_BYTES_MAX;
pub use snapshot::SnapshotWriter;
pub use writer::LogStats;

use io::{OsFs, Vfs};
use writer::{Shared, Writer};

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
/// file system with 64 MiB segments. Tests pass a [`sim::SimFs`].
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
    shared: Arc<Shared>,
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
            .field("appended", &self.shared.appended.load(Ordering::Relaxed))
            .field("synced", &self.shared.synced.load(Ordering::Relaxed))
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
        let shared = Arc::new(Shared::new(opts.fsync, walk.next_lsn, walk.log_bytes()));
        let recovered_lsn = walk.next_lsn - 1;
        let writer = Writer {
            shared: shared.clone(),
            vfs: vfs.clone(),
            dir: dir.to_path_buf(),
            seg,
            segment_bytes_max: storage.segment_bytes_max,
            written_lsn: recovered_lsn,
            synced_lsn: recovered_lsn,
            opened_lsn: recovered_lsn,
            last_is_mark: false,
            prealloc_after_bytes: storage.prealloc_after_bytes,
            written_since_open: 0,
            prep_retry_at: 0,
            prep: writer::Prep::Idle,
            prep_cancel: Default::default(),
            batch: Vec::with_capacity(64 << 10),
            cuts: Vec::new(),
            closed: false,
        };
        let writer = Arc::new(parking_lot::Mutex::new(writer));
        let (thread_writer, thread_shared) = (writer.clone(), shared.clone());
        let handle = std::thread::Builder::new()
            .name("idem-wal-writer".into())
            .spawn(move || writer::run_thread(thread_writer, thread_shared))
            .map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let recovered = Recovered { clock_ms: walk.clock_ms, fence_high: walk.fence_high, records: walk.records };
        Ok((
            Log {
                shared,
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
        self.shared.append_changes(now_ms, changes).map(Lsn)
    }

    /// Appends a fence high-water mark: after a crash, fences resume above `fence_high`.
    pub fn append_fence_high(&self, now_ms: u64, fence_high: u64) -> Result<Lsn, StoreError> {
        self.shared.append_payload(now_ms, record::KIND_FENCE_HIGH, &fence_high.to_le_bytes()).map(Lsn)
    }

    /// The LSN of the last appended record (what a read has observed).
    pub fn last_appended(&self) -> Lsn {
        Lsn(self.shared.appended.load(Ordering::Acquire))
    }

    /// Resolves when every record up to `lsn` is durable (per the fsync mode).
    /// Once the log has failed, it fails for every LSN that was not durable
    /// before the failure.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), StoreError> {
        let mark = match self.shared.mode {
            FsyncMode::Always => waiters::Mark::Synced,
            FsyncMode::EverySecond => waiters::Mark::Written,
        };
        self.shared.wait_for(mark, lsn.0).await
    }

    /// A handle for event loop threads that do the group commit for their
    /// own connections (see [`LoopSync`]).
    pub fn loop_sync(&self) -> LoopSync {
        LoopSync { shared: self.shared.clone(), writer: self.writer.clone() }
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Whether a snapshot is due (the log grew past `snapshot_after_bytes`
    /// since the last one and none is in progress).
    pub fn snapshot_due(&self) -> bool {
        self.shared.snapshot_due(self.opts.snapshot_after_bytes)
    }

    /// Starts a snapshot that covers every record appended before this call:
    /// the log starts a new segment at the next LSN, so the snapshot's cut
    /// falls on a segment boundary.
    pub fn begin_snapshot(&self) -> Result<SnapshotWriter, StoreError> {
        let (lsn, appended_bytes_at_cut) = {
            let mut tail = self.shared.tail.lock();
            if let Some(reason) = &tail.failure {
                return Err(StoreError::Failed(reason.clone()));
            }
            let lsn = tail.next_lsn;
            let offset = tail.buf.len();
            if tail.cuts.last().map(|c| c.0) != Some(lsn) {
                tail.cuts.push((lsn, offset));
            }
            (lsn, tail.appended_bytes)
        };
        self.shared.snapshot.lock().in_progress += 1;
        let (tmp_path, file) = match snapshot::create_tmp(&*self.vfs, &self.dir, lsn) {
            Ok(created) => created,
            Err(e) => {
                self.shared.snapshot_abandoned();
                return Err(e);
            }
        };
        Ok(SnapshotWriter {
            shared: self.shared.clone(),
            vfs: self.vfs.clone(),
            dir: self.dir.clone(),
            tmp_path,
            file: Some(file),
            lsn,
            appended_bytes_at_cut,
            buf: Vec::with_capacity(1 << 20),
            enc: Vec::new(),
            offset: record::SNAPSHOT_HEADER_LEN as u64,
            entries: 0,
            done: false,
        })
    }

    /// Writes whatever is buffered and syncs it; used on graceful shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let target = self.shared.appended.load(Ordering::Acquire);
        if target > self.shared.synced.load(Ordering::Acquire) {
            self.shared.request_sync();
        }
        self.shared.wait_for(waiters::Mark::Synced, target).await
    }

    /// Counters about group commit since open.
    pub fn stats(&self) -> LogStats {
        *self.shared.stats.lock()
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
        self.shared.tail.lock().shutdown = true;
        self.shared.wake_writer.notify_one();
        if let Some(handle) = self.writer_thread.take() {
            let _ = handle.join();
        }
    }
}
