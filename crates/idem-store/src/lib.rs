//! # idem-store
//!
//! idem's embedded durable store, the default backend of `idem serve`:
//! - `engine`: the keyspace split into shards, each a [`idem_core::machine::Machine`]
//!   behind its own lock, parked waiters, timers and the fence sequence;
//! - [`wal`]: the write-ahead log with group commit, snapshots and recovery.
//!
//! An acknowledged write is on stable storage before its reply is released
//! (in the default [`FsyncMode::Always`]).

use std::path::PathBuf;

mod engine;
pub mod wal;

pub use engine::Store;

/// When appended log records reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Default: every reply waits for the fdatasync that covers its record
    /// (group commit: one fdatasync covers every record written meanwhile).
    #[default]
    Always,
    /// Opt-in: records are written at once and synced about once a second; a
    /// crash can lose the last second of acknowledged writes.
    EverySecond,
}

/// How to open a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The data directory; `None` keeps everything in memory (tests, benchmarks of the engine alone).
    pub data_dir: Option<PathBuf>,
    /// Number of shards (each with its own lock); default: 4 × available cores, at least 4.
    pub shards: usize,
    /// Durability mode.
    pub fsync: FsyncMode,
    /// Limits enforced on commands.
    pub limits: idem_core::Limits,
    /// Snapshot after the log grows this many bytes (default 256 MiB).
    pub snapshot_after_bytes: u64,
    /// Preallocate log segments once this many bytes were logged since
    /// open (default 1 MiB; `None`: never). See docs/durability.md.
    pub prealloc_after_bytes: Option<u64>,
    /// The memory bound of the records, by the estimate of
    /// [`idem_core::machine::Machine::memory_bytes`]: at or over it, a
    /// command that would create a record gets `OOM`; records that exist
    /// can still be read, committed, released and expire, and none is ever
    /// evicted. 0 (the default): no bound.
    pub maxmemory_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        StoreConfig {
            data_dir: None,
            shards: (cores * 4).max(4),
            fsync: FsyncMode::Always,
            limits: idem_core::Limits::default(),
            snapshot_after_bytes: 256 * 1024 * 1024,
            prealloc_after_bytes: Some(wal::PREALLOC_AFTER_BYTES),
            maxmemory_bytes: 0,
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error while opening or recovering.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The log is corrupt somewhere other than its tail; startup stops.
    #[error("corrupt log {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A write or fsync failed earlier; the store accepts no more writes until restarted.
    #[error("storage failed, commands are refused until restart: {0}")]
    Failed(String),
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another idem process")]
    Locked(PathBuf),
    /// One record (the changes of one command) is larger than the log accepts.
    #[error("log record of {bytes} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The record's size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}
