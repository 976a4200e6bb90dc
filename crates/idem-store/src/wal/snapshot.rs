//! Snapshots: every live record at a cut in the log, written off the hot
//! path, so that recovery replays one snapshot plus the log since the cut and
//! restart time stays bounded however long idem runs.
//!
//! A snapshot at LSN L reflects at least every record below L. The engine
//! dumps its shards one at a time after the cut, so a shard may also reflect
//! records at or after L; replaying those records over it converges because
//! every change is a full image of the record it writes (or a range set to a
//! holder), never a delta.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use idem_core::Change;

use super::io::{VFile, Vfs};
use super::record::{self, SnapshotHeader, FRAME_HEAD_LEN, RECORD_BYTES_MAX, SNAPSHOT_HEADER_LEN};
use super::segment::{classify, snapshot_name, snapshot_tmp_name, FileKind};
use super::state::LogState;
use crate::StoreError;

/// Entries are buffered up to this size before one write.
const SNAPSHOT_WRITE_BYTES: usize = 1 << 20;

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.to_path_buf(), source }
}

/// A snapshot being written. The engine adds every live record (taking each
/// shard's lock in turn) then calls `finish`. Dropping it unfinished removes
/// the temporary file.
pub struct SnapshotWriter {
    state: Arc<LogState>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    tmp_path: PathBuf,
    file: Option<Box<dyn VFile>>,
    /// Every record below this LSN is reflected.
    lsn: u64,
    /// The log's appended byte count at the cut (for snapshot scheduling).
    appended_bytes_at_cut: u64,
    /// Entries waiting for one write of up to [`SNAPSHOT_WRITE_BYTES`].
    buf: Vec<u8>,
    /// One entry's change, encoded.
    change_bytes: Vec<u8>,
    /// Where `buf` goes in the file.
    offset: u64,
    entries: u64,
    /// Set once `finish` has accounted for this snapshot.
    done: bool,
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter").field("path", &self.tmp_path).field("lsn", &self.lsn).finish()
    }
}

impl SnapshotWriter {
    /// Starts a snapshot of the log with `state` in `dir`: cuts the log (the
    /// next record starts a new segment) and creates the temporary file.
    pub(crate) fn begin(state: Arc<LogState>, vfs: Arc<dyn Vfs>, dir: PathBuf) -> Result<SnapshotWriter, StoreError> {
        let (lsn, appended_bytes_at_cut) = state.cut_for_snapshot()?;
        let (tmp_path, file) = match create_tmp(&*vfs, &dir, lsn) {
            Ok(created) => created,
            Err(e) => {
                state.snapshot_abandoned();
                return Err(e);
            }
        };
        Ok(SnapshotWriter {
            state,
            vfs,
            dir,
            tmp_path,
            file: Some(file),
            lsn,
            appended_bytes_at_cut,
            buf: Vec::with_capacity(SNAPSHOT_WRITE_BYTES),
            change_bytes: Vec::new(),
            offset: SNAPSHOT_HEADER_LEN as u64,
            entries: 0,
            done: false,
        })
    }

    /// The LSN of the cut: the snapshot reflects every record below it.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Adds one live record.
    pub fn add(&mut self, change: &Change) -> Result<(), StoreError> {
        self.change_bytes.clear();
        record::put_change(&mut self.change_bytes, change);
        if self.change_bytes.len() > RECORD_BYTES_MAX {
            return Err(StoreError::RecordTooLarge {
                bytes: self.change_bytes.len() as u64,
                max: RECORD_BYTES_MAX as u64,
            });
        }
        record::put_entry(&mut self.buf, &self.change_bytes);
        self.entries += 1;
        if self.buf.len() >= SNAPSHOT_WRITE_BYTES {
            self.write_buf()?;
        }
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("open until finished");
        file.write_all_at(&self.buf, self.offset).map_err(|e| io_err(&self.tmp_path, e))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Bytes of the snapshot file so far (the whole file once every entry
    /// is added).
    pub fn bytes(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Writes the snapshot atomically (temp file, fsync, rename, fsync dir)
    /// with the fence high-water mark and engine time, then drops the log
    /// segments it covers.
    ///
    /// It first waits until every record below the cut is synced in the log,
    /// so a snapshot never makes durable a change whose own record failed to
    /// sync (that write was refused with READONLY). It refuses to finish once
    /// the log has failed.
    pub fn finish(mut self, fence_high: u64, clock_ms: u64) -> Result<(), StoreError> {
        self.write_buf()?;
        let header = SnapshotHeader { lsn: self.lsn, fence_high, clock_ms, entries: self.entries };
        let file = self.file.as_mut().expect("open until finished");
        file.write_all_at(&record::snapshot_header(&header), 0).map_err(|e| io_err(&self.tmp_path, e))?;
        file.sync_all().map_err(|e| io_err(&self.tmp_path, e))?;
        self.state.wait_synced_blocking(self.lsn - 1)?;
        let final_path = self.dir.join(snapshot_name(self.lsn));
        self.vfs.rename(&self.tmp_path, &final_path).map_err(|e| io_err(&final_path, e))?;
        self.file = None;
        self.vfs.sync_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        tracing::info!(path = %final_path.display(), entries = self.entries, lsn = self.lsn, "snapshot written");
        // Segments and snapshots below the cut are now redundant. Removing
        // them needs no sync: recovery ignores and removes leftovers.
        remove_covered(&*self.vfs, &self.dir, self.lsn);
        self.done = true;
        self.state.snapshot_done(self.appended_bytes_at_cut);
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.vfs.remove(&self.tmp_path);
        }
        if !self.done {
            self.state.snapshot_abandoned();
        }
    }
}

/// Removes segments and snapshots wholly below `lsn` (a snapshot at `lsn` covers them).
pub(crate) fn remove_covered(vfs: &dyn Vfs, dir: &Path, lsn: u64) {
    let names = match vfs.list(dir) {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "listing the data directory to drop old segments failed: {e}");
            return;
        }
    };
    for name in names {
        let covered = match classify(&name) {
            FileKind::Segment(base) => base < lsn,
            FileKind::Snapshot(l) => l < lsn,
            _ => false,
        };
        if covered {
            let path = dir.join(&name);
            if let Err(e) = vfs.remove(&path) {
                tracing::warn!(path = %path.display(), "removing a file covered by the snapshot failed: {e}");
            }
        }
    }
}

/// Creates the temporary file of a snapshot at `lsn`.
fn create_tmp(vfs: &dyn Vfs, dir: &Path, lsn: u64) -> Result<(PathBuf, Box<dyn VFile>), StoreError> {
    let path = dir.join(snapshot_tmp_name(lsn));
    // A leftover from an abandoned attempt at the same cut is garbage.
    let _ = vfs.remove(&path);
    let file = vfs.create_new(&path).map_err(|e| io_err(&path, e))?;
    Ok((path, file))
}

/// Reads and validates a snapshot, calling `visit` with the snapshot's
/// engine time and each entry, in a
/// bounded buffer (snapshots may be far larger than memory allows to read whole).
pub(crate) fn read_snapshot(
    vfs: &dyn Vfs,
    path: &Path,
    visit: &mut dyn FnMut(u64, Change),
) -> Result<SnapshotHeader, StoreError> {
    let corrupt = |offset: u64, reason: String| StoreError::Corrupt { path: path.to_path_buf(), offset, reason };
    let file = vfs.open(path).map_err(|e| io_err(path, e))?;
    let len = file.len().map_err(|e| io_err(path, e))?;
    let mut head = [0u8; SNAPSHOT_HEADER_LEN];
    if len < SNAPSHOT_HEADER_LEN as u64 {
        return Err(corrupt(0, format!("snapshot is {len} bytes, shorter than its header")));
    }
    file.read_exact_at(&mut head, 0).map_err(|e| io_err(path, e))?;
    let header = record::parse_snapshot_header(&head).map_err(|r| corrupt(0, r))?;
    let mut reader = ChunkReader { file: &*file, len, pos: SNAPSHOT_HEADER_LEN as u64, buf: Vec::new(), start: 0 };
    for _ in 0..header.entries {
        let at = reader.pos;
        let frame = reader.next_frame().map_err(|e| match e {
            Some(io) => io_err(path, io),
            None => corrupt(at, "snapshot ends before its last entry".into()),
        })?;
        let body = record::read_frame(frame, 1).map_err(|e| corrupt(at, e.to_string()))?;
        let mut r = record::Reader::new(body);
        let change = r.change().map_err(|reason| corrupt(at, reason))?;
        if !r.is_empty() {
            return Err(corrupt(at, "trailing bytes after the entry's change".into()));
        }
        visit(header.clock_ms, change);
    }
    if reader.pos != len {
        return Err(corrupt(reader.pos, format!("{} bytes after the last entry", len - reader.pos)));
    }
    Ok(header)
}

/// Reads frames from a file through a bounded buffer.
struct ChunkReader<'a> {
    file: &'a dyn VFile,
    len: u64,
    /// File offset of the next frame.
    pos: u64,
    /// Bytes from file offset `pos - (buf.len() - start)`.. kept in memory.
    buf: Vec<u8>,
    start: usize,
}

impl ChunkReader<'_> {
    /// Returns the whole next frame (head and body); `Err(None)` at a premature end.
    fn next_frame(&mut self) -> Result<&[u8], Option<std::io::Error>> {
        self.fill(FRAME_HEAD_LEN)?;
        let len = record::u32_at(&self.buf[self.start..], 0) as usize;
        let need = FRAME_HEAD_LEN + len.min(RECORD_BYTES_MAX + 1);
        self.fill(need)?;
        let frame = &self.buf[self.start..self.start + need];
        self.start += need;
        self.pos += need as u64;
        Ok(frame)
    }

    /// Makes at least `n` bytes from `pos` available in `buf[start..]`.
    fn fill(&mut self, n: usize) -> Result<(), Option<std::io::Error>> {
        let have = self.buf.len() - self.start;
        if have >= n {
            return Ok(());
        }
        let file_left = self.len - (self.pos + have as u64);
        if (have as u64 + file_left) < n as u64 {
            return Err(None);
        }
        self.buf.drain(..self.start);
        self.start = 0;
        let want = (n - have).max(SNAPSHOT_WRITE_BYTES).min(file_left as usize);
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        self.file.read_exact_at(&mut self.buf[old..], self.pos + have as u64).map_err(Some)?;
        Ok(())
    }
}
