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
//!   storage (at once in a relaxed fsync mode). After a write or fsync failure
//!   it resolves with an error forever: nothing is acknowledged, ever again.
//! - [`Log::begin_snapshot`] starts a snapshot; the engine adds every live
//!   record, shard by shard, and `finish`es it; the log then drops segments
//!   the snapshot covers.
//!
//! PLACEHOLDER: this in-memory version keeps nothing; it is being replaced by
//! the real log.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use idem_core::Change;

use crate::{FsyncMode, StoreError};

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

/// The write-ahead log of one data directory.
#[derive(Debug)]
pub struct Log {
    next: AtomicU64,
}

impl Log {
    /// Opens (creating if needed) and recovers `dir`, calling `replay` with
    /// `(engine_time_ms, change)` for every change, in log order.
    pub fn open(
        dir: &Path,
        opts: &LogOptions,
        replay: &mut dyn FnMut(u64, Change),
    ) -> Result<(Log, Recovered), StoreError> {
        let _ = (dir, opts, replay);
        Ok((Log { next: AtomicU64::new(0) }, Recovered::default()))
    }

    /// Appends one record made of `changes` at engine time `now_ms`.
    /// Fails with `StoreError::Failed` once the log has failed.
    pub fn append(&self, now_ms: u64, changes: &[Change]) -> Result<Lsn, StoreError> {
        let _ = (now_ms, changes);
        Ok(Lsn(self.next.fetch_add(1, Ordering::Relaxed) + 1))
    }

    /// Appends a fence high-water mark: after a crash, fences resume above `fence_high`.
    pub fn append_fence_high(&self, now_ms: u64, fence_high: u64) -> Result<Lsn, StoreError> {
        let _ = (now_ms, fence_high);
        Ok(Lsn(self.next.fetch_add(1, Ordering::Relaxed) + 1))
    }

    /// The LSN of the last appended record (what a read has observed).
    pub fn last_appended(&self) -> Lsn {
        Lsn(self.next.load(Ordering::Relaxed))
    }

    /// Resolves when every record up to `lsn` is durable (per the fsync mode).
    pub async fn durable(&self, lsn: Lsn) -> Result<(), StoreError> {
        let _ = lsn;
        Ok(())
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        None
    }

    /// Whether a snapshot is due (the log grew past `snapshot_after_bytes`).
    pub fn snapshot_due(&self) -> bool {
        false
    }

    /// Starts a snapshot that covers every record appended before this call.
    pub fn begin_snapshot(&self) -> Result<SnapshotWriter, StoreError> {
        Ok(SnapshotWriter {})
    }

    /// Writes whatever is buffered and syncs it; used on graceful shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A snapshot being written. The engine adds every live record (taking each
/// shard's lock in turn) then calls `finish`.
#[derive(Debug)]
pub struct SnapshotWriter {}

impl SnapshotWriter {
    /// Adds one live record.
    pub fn add(&mut self, change: &Change) -> Result<(), StoreError> {
        let _ = change;
        Ok(())
    }

    /// Writes the snapshot atomically (temp file, fsync, rename, fsync dir)
    /// with the fence high-water mark and engine time, then drops the log
    /// segments it covers.
    pub fn finish(self, fence_high: u64, clock_ms: u64) -> Result<(), StoreError> {
        let _ = (fence_high, clock_ms);
        Ok(())
    }
}
