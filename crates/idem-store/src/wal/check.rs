//! The offline check behind `idem check --data DIR`: validates every header,
//! checksum and LSN of a data directory exactly as recovery would, without
//! changing anything, and reports what it found.

use std::path::{Path, PathBuf};

use super::io::{OsFs, Vfs};
use super::recover::walk;
use super::segment::LOCK_NAME;
use crate::StoreError;

/// What [`check`] found in a data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The snapshot recovery starts from, if any.
    pub snapshot: Option<PathBuf>,
    /// Live records in that snapshot.
    pub snapshot_entries: u64,
    /// The snapshot's cut: it reflects every record below this LSN.
    pub snapshot_lsn: u64,
    /// Log segments recovery replays.
    pub segments: u64,
    /// Valid log records in them (changes, fence high-water marks, marks).
    pub records: u64,
    /// Changes in those records.
    pub changes: u64,
    /// Fence high-water records.
    pub fence_records: u64,
    /// Valid log bytes.
    pub log_bytes: u64,
    /// The LSN the next record would get.
    pub next_lsn: u64,
    /// The engine time recovery would resume at.
    pub clock_ms: u64,
    /// Fences would resume above this.
    pub fence_high: u64,
    /// A torn tail the next open cuts off (never acknowledged): file, offset, bytes.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Files the next open removes: covered segments and snapshots, temporary
    /// files of unfinished snapshots, a segment whose creation was interrupted.
    pub leftovers: Vec<PathBuf>,
}

/// Verifies the data directory `dir` offline: headers, checksums and the LSN
/// sequence of the snapshot and every segment. Damage that recovery would
/// refuse is returned as [`StoreError::Corrupt`] naming the file and offset;
/// a torn tail (which recovery cuts off) is reported, not an error. Fails
/// with [`StoreError::Locked`] while an idem process has the directory open.
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    check_with(&OsFs, dir)
}

/// [`check`] on a given storage.
pub fn check_with(vfs: &dyn Vfs, dir: &Path) -> Result<CheckReport, StoreError> {
    let lock_path = dir.join(LOCK_NAME);
    let _lock = vfs
        .try_lock(&lock_path)
        .map_err(|source| StoreError::Io { path: lock_path.clone(), source })?
        .ok_or_else(|| StoreError::Locked(dir.to_path_buf()))?;
    let mut snapshot_entries = 0;
    let mut w = walk(vfs, dir, &mut |_, _| {})?;
    if let Some((_, header)) = &w.snapshot {
        snapshot_entries = header.entries;
    }
    let log_bytes = w.log_bytes();
    let mut leftovers = std::mem::take(&mut w.leftovers);
    leftovers.extend(w.torn_header.clone());
    Ok(CheckReport {
        snapshot_lsn: w.snapshot.as_ref().map(|(_, h)| h.lsn).unwrap_or(0),
        snapshot: w.snapshot.map(|(p, _)| p),
        snapshot_entries,
        segments: w.segments.len() as u64,
        records: w.records,
        changes: w.changes,
        fence_records: w.fence_records,
        log_bytes,
        next_lsn: w.next_lsn,
        clock_ms: w.clock_ms,
        fence_high: w.fence_high,
        torn_tail: w.torn_tail.map(|(p, off, bytes, _)| (p, off, bytes)),
        leftovers,
    })
}
