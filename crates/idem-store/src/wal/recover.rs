//! Recovery: the newest snapshot, then every segment from its cut, in order.
//!
//! The walk over a data directory is read-only and shared with the offline
//! check; [`recover`] then carries out what the walk found (cut the torn
//! tail, remove leftovers) and opens the last segment for appending.

use std::path::{Path, PathBuf};
use std::time::Instant;

use idem_core::Change;

use super::io::Vfs;
use super::open_segment::OpenSegment;
use super::record::{self, Body};
use super::segment::{classify, scan_segment, FileKind, SegmentEnd};
use super::snapshot::read_snapshot;
use crate::StoreError;

/// Recovery logs a progress line every this many records.
const PROGRESS_EVERY_RECORDS: u64 = 1_000_000;

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.to_path_buf(), source }
}

/// A segment the log still needs (at or after the snapshot's cut).
#[derive(Debug)]
pub(crate) struct LiveSegment {
    pub base: u64,
    pub path: PathBuf,
    /// Bytes up to the end of the last valid record.
    pub valid_len: u64,
    /// The file's length (beyond `valid_len`: preallocated zeros, or a torn tail).
    pub file_len: u64,
}

/// What a walk over a data directory found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The snapshot used and its header.
    pub snapshot: Option<(PathBuf, record::SnapshotHeader)>,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    pub clock_ms: u64,
    pub fence_high: u64,
    /// Log records replayed (any kind).
    pub records: u64,
    /// Changes replayed from log records.
    pub changes: u64,
    pub fence_records: u64,
    pub marks: u64,
    pub segments: Vec<LiveSegment>,
    /// A torn tail in the last segment: (path, offset, bytes after it, why).
    pub torn_tail: Option<(PathBuf, u64, u64, String)>,
    /// A last segment that holds only a partial header.
    pub torn_header: Option<PathBuf>,
    /// Files a snapshot made redundant and temporary files of unfinished snapshots.
    pub leftovers: Vec<PathBuf>,
}

impl Walk {
    /// Valid log bytes in live segments.
    pub(crate) fn log_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.valid_len).sum()
    }
}

/// Walks `dir` without changing it, validating everything and calling
/// `replay` with `(engine_time_ms, change)` for the snapshot's entries and
/// then every logged change, in order.
pub(crate) fn walk(vfs: &dyn Vfs, dir: &Path, replay: &mut dyn FnMut(u64, Change)) -> Result<Walk, StoreError> {
    let started = Instant::now();
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    let mut snapshots: Vec<(u64, PathBuf)> = Vec::new();
    let mut w = Walk::default();
    for name in vfs.list(dir).map_err(|e| io_err(dir, e))? {
        match classify(&name) {
            FileKind::Segment(base) => segments.push((base, dir.join(name))),
            FileKind::Snapshot(lsn) => snapshots.push((lsn, dir.join(name))),
            FileKind::SnapshotTmp | FileKind::PrepTmp => w.leftovers.push(dir.join(name)),
            FileKind::Other => {}
        }
    }
    segments.sort();
    snapshots.sort();

    // The newest snapshot. An older snapshot is no fallback: the segments it
    // would need were removed when the newer one was written.
    let mut next_lsn = 1;
    let mut snapshot_entries = 0u64;
    if let Some((lsn, path)) = snapshots.pop() {
        let header = read_snapshot(vfs, &path, &mut |clock_ms, change| {
            if let Some(f) = change.fence() {
                w.fence_high = w.fence_high.max(f);
            }
            snapshot_entries += 1;
            replay(clock_ms, change);
        })?;
        if lsn == 0 {
            return Err(StoreError::Corrupt {
                path,
                offset: 0,
                reason: "a snapshot at LSN 0 (LSNs start at 1)".into(),
            });
        }
        if header.lsn != lsn {
            return Err(StoreError::Corrupt {
                path,
                offset: 0,
                reason: format!("snapshot header says LSN {}, its name says {lsn}", header.lsn),
            });
        }
        w.clock_ms = w.clock_ms.max(header.clock_ms);
        w.fence_high = w.fence_high.max(header.fence_high);
        next_lsn = lsn;
        w.snapshot = Some((path, header));
        w.leftovers.extend(snapshots.into_iter().map(|(_, p)| p));
    }

    let live: Vec<(u64, PathBuf)> = segments
        .into_iter()
        .filter_map(|(base, path)| {
            if base < next_lsn {
                w.leftovers.push(path);
                None
            } else {
                Some((base, path))
            }
        })
        .collect();
    let mut buf = Vec::new();
    let count = live.len();
    for (i, (base, path)) in live.into_iter().enumerate() {
        let is_last = i + 1 == count;
        buf.clear();
        let file = vfs.open(&path).map_err(|e| io_err(&path, e))?;
        let file_len = file.len().map_err(|e| io_err(&path, e))?;
        buf.resize(file_len as usize, 0);
        file.read_exact_at(&mut buf, 0).map_err(|e| io_err(&path, e))?;
        drop(file);
        let scan = scan_segment(&path, &buf, next_lsn, is_last, &mut |r, offset| {
            let body = record::decode_body(r.kind, r.payload).map_err(|reason| StoreError::Corrupt {
                path: path.clone(),
                offset,
                reason,
            })?;
            w.clock_ms = w.clock_ms.max(r.time_ms);
            match body {
                Body::Changes(changes) => {
                    for change in changes {
                        if let Some(f) = change.fence() {
                            w.fence_high = w.fence_high.max(f);
                        }
                        w.changes += 1;
                        replay(r.time_ms, change);
                    }
                }
                Body::FenceHigh(f) => {
                    w.fence_high = w.fence_high.max(f);
                    w.fence_records += 1;
                }
                Body::Mark => w.marks += 1,
            }
            w.records += 1;
            if w.records % PROGRESS_EVERY_RECORDS == 0 {
                tracing::info!(
                    records = w.records,
                    segment = %path.display(),
                    elapsed_s = started.elapsed().as_secs_f64(),
                    "recovery in progress"
                );
            }
            Ok(())
        })?;
        assert!(scan.next_lsn >= next_lsn, "a segment's scan moves the log forward");
        next_lsn = scan.next_lsn;
        match scan.end {
            SegmentEnd::Clean => {}
            SegmentEnd::Torn { offset, reason } => {
                w.torn_tail = Some((path.clone(), offset, file_len - offset, reason));
            }
            SegmentEnd::TornHeader => {
                w.torn_header = Some(path);
                continue;
            }
        }
        w.segments.push(LiveSegment { base, path, valid_len: scan.valid_len, file_len });
    }
    w.next_lsn = next_lsn;
    let secs = started.elapsed().as_secs_f64();
    let total = w.records + snapshot_entries;
    tracing::info!(
        dir = %dir.display(),
        snapshot_entries,
        log_records = w.records,
        next_lsn,
        fence_high = w.fence_high,
        clock_ms = w.clock_ms,
        elapsed_s = secs,
        records_per_s = if secs > 0.0 { (total as f64 / secs) as u64 } else { 0 },
        "recovery replayed the data directory"
    );
    Ok(w)
}

/// Recovers `dir`: walks it (replaying into `replay`), cuts a torn tail,
/// removes leftovers, makes what was replayed durable, and returns the walk
/// with the segment to append to.
pub(crate) fn recover(
    vfs: &dyn Vfs,
    dir: &Path,
    replay: &mut dyn FnMut(u64, Change),
) -> Result<(Walk, OpenSegment), StoreError> {
    let w = walk(vfs, dir, replay)?;
    for path in &w.leftovers {
        vfs.remove(path).map_err(|e| io_err(path, e))?;
    }
    if let Some(path) = &w.torn_header {
        tracing::warn!(path = %path.display(), "removing a log segment whose creation was interrupted (it held no record)");
        vfs.remove(path).map_err(|e| io_err(path, e))?;
    }
    let segment = match w.segments.last() {
        Some(last) => {
            let mut file = vfs.open(&last.path).map_err(|e| io_err(&last.path, e))?;
            let mut cap = last.file_len;
            if let Some((path, offset, bytes, reason)) = &w.torn_tail {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    bytes,
                    "cutting off the log's torn tail ({reason}); it was never acknowledged"
                );
                file.set_len(*offset).map_err(|e| io_err(path, e))?;
                cap = *offset;
            }
            // The previous process may have died with replayed records still
            // only in the page cache; they are synced before anything that
            // depends on them is acknowledged.
            file.sync_all().map_err(|e| io_err(&last.path, e))?;
            // Zeros after the records are a preallocated segment's unused
            // space: writing continues over them.
            assert!(last.base <= w.next_lsn, "the last segment starts at or before the next record");
            OpenSegment::reopened(file, last.path.clone(), last.base, last.valid_len, cap)
        }
        None => OpenSegment::create(vfs, dir, w.next_lsn).map_err(|e| io_err(dir, e))?,
    };
    vfs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    Ok((w, segment))
}
