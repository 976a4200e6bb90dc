//! Segment files: their names, and the scan that validates one segment's
//! records and decides where a torn tail begins.

use std::path::Path;

use super::record::{self, FrameError, RawRecord, SEGMENT_HEADER_LEN};
use crate::StoreError;

/// The largest size a segment grows to before the writer starts a new one
/// (a single batch larger than this still goes into one segment).
pub const SEGMENT_BYTES_MAX: u64 = 64 << 20;

/// The file name of the segment whose first record has LSN `base`. Twenty
/// digits make lexical order equal numeric order.
pub(crate) fn segment_name(base: u64) -> String {
    format!("wal-{base:020}.log")
}

/// The file name of a complete snapshot covering every record below `lsn`.
pub(crate) fn snapshot_name(lsn: u64) -> String {
    format!("snap-{lsn:020}.snap")
}

/// The file name of a snapshot still being written.
pub(crate) fn snapshot_tmp_name(lsn: u64) -> String {
    format!("snap-{lsn:020}.tmp")
}

/// The file name of the next segment while it is being preallocated
/// (zero-filled) by the writer's helper thread; renamed to its segment name
/// when the writer starts using it. A leftover is removed at open.
pub(crate) const PREP_TMP_NAME: &str = "wal-prep.tmp";

/// The name of the lock file in a data directory.
pub(crate) const LOCK_NAME: &str = "LOCK";

/// What a file in the data directory is, judged by its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment(u64),
    Snapshot(u64),
    SnapshotTmp,
    /// A preallocated segment not yet in use ([`PREP_TMP_NAME`]).
    PrepTmp,
    Other,
}

pub(crate) fn classify(name: &str) -> FileKind {
    let num = |s: &str| if s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None };
    if let Some(n) = name.strip_prefix("wal-").and_then(|s| s.strip_suffix(".log")).and_then(num) {
        return FileKind::Segment(n);
    }
    if let Some(n) = name.strip_prefix("snap-").and_then(|s| s.strip_suffix(".snap")).and_then(num) {
        return FileKind::Snapshot(n);
    }
    if name == PREP_TMP_NAME {
        return FileKind::PrepTmp;
    }
    if name.starts_with("snap-") && name.ends_with(".tmp") {
        return FileKind::SnapshotTmp;
    }
    FileKind::Other
}

/// How a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// Every byte belongs to a valid record, or the records are followed
    /// only by zeros: the unused part of a preallocated segment.
    Clean,
    /// The last segment's records stop at `offset`; the bytes after it were
    /// never acknowledged (a torn or interrupted write) and are cut off.
    Torn { offset: u64, reason: String },
    /// The last segment holds no more than a partial header: it was being
    /// created when the process stopped and never held a record.
    TornHeader,
}

/// The result of scanning one segment.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    /// The LSN after the last valid record.
    pub next_lsn: u64,
    /// The offset after the last valid record.
    pub valid_len: u64,
    pub end: SegmentEnd,
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
}

/// Validates the segment `buf` (the whole file) named `path`, whose first
/// record must have LSN `expected_lsn`, calling `visit` for each valid record
/// in order with its offset.
///
/// Zeros from the end of the records to the end of the file are the unused
/// part of a preallocated segment: a clean end in any segment (a record lost
/// from a segment that is not the last still shows, as a gap in the LSNs at
/// the next segment's header).
///
/// Any other bad record (bad length, checksum, or cut short) ends the log only in the
/// last segment, and only if no later valid record attests that it had been
/// synced: every record carries the LSN that was already durable when it was
/// encoded, so a later record with `synced_lsn >= lsn` proves the bad one had
/// reached stable storage and was then damaged. Anything else after the last
/// good record belongs to a write that never completed its sync (pages of one
/// write may reach the disk in any order), so it was never acknowledged.
pub(crate) fn scan_segment(
    path: &Path,
    buf: &[u8],
    expected_lsn: u64,
    is_last: bool,
    visit: &mut dyn FnMut(&RawRecord<'_>, u64) -> Result<(), StoreError>,
) -> Result<SegmentScan, StoreError> {
    let base = match record::parse_segment_header(buf) {
        Ok(base) => base,
        // Records are written only after the header and the directory entry
        // were synced, so a last segment no longer than a header never held one.
        Err(_) if is_last && buf.len() <= SEGMENT_HEADER_LEN => {
            return Ok(SegmentScan { next_lsn: expected_lsn, valid_len: 0, end: SegmentEnd::TornHeader })
        }
        Err(reason) => return Err(corrupt(path, 0, reason)),
    };
    if base != expected_lsn {
        return Err(corrupt(
            path,
            0,
            format!("segment starts at LSN {base} but the log continues at LSN {expected_lsn} (a segment is missing or misnamed)"),
        ));
    }
    let mut lsn = expected_lsn;
    let mut off = SEGMENT_HEADER_LEN;
    loop {
        if off == buf.len() {
            return Ok(SegmentScan { next_lsn: lsn, valid_len: off as u64, end: SegmentEnd::Clean });
        }
        let reason = match record::read_record(&buf[off..]) {
            Ok(r) => {
                if r.lsn != lsn {
                    return Err(corrupt(path, off as u64, format!("record has LSN {}, expected {lsn}", r.lsn)));
                }
                visit(&r, off as u64)?;
                lsn += 1;
                off += r.size;
                continue;
            }
            Err(_) if is_zero(&buf[off..]) => {
                return Ok(SegmentScan { next_lsn: lsn, valid_len: off as u64, end: SegmentEnd::Clean });
            }
            Err(FrameError::Short) => "record cut short by the end of the file".to_string(),
            Err(e) => e.to_string(),
        };
        if !is_last {
            return Err(corrupt(path, off as u64, format!("{reason} (in a segment that was complete and synced)")));
        }
        if let Some((at, later)) = attesting_record(buf, off + 1, lsn) {
            return Err(corrupt(
                path,
                off as u64,
                format!("{reason}; the record at offset {at} (LSN {later}) proves this one had been synced"),
            ));
        }
        return Ok(SegmentScan {
            next_lsn: lsn,
            valid_len: off as u64,
            end: SegmentEnd::Torn { offset: off as u64, reason },
        });
    }
}

/// Whether every byte of `buf` is zero.
fn is_zero(buf: &[u8]) -> bool {
    // An OR-fold per chunk vectorises: a 64 MiB preallocated tail is checked
    // in milliseconds, stopping at the first chunk that is not zero.
    buf.chunks(4096).all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Finds a valid record at or after `from` whose synced LSN covers `lsn`.
/// Runs only when a bad record was found, over at most one segment.
fn attesting_record(buf: &[u8], from: usize, lsn: u64) -> Option<(usize, u64)> {
    (from..buf.len()).find_map(|at| match record::read_record(&buf[at..]) {
        Ok(r) if r.synced_lsn >= lsn => Some((at, r.lsn)),
        _ => None,
    })
}
