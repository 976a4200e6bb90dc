//! The segment the writer appends to, and how one comes to be: created
//! empty, installed from a preallocated file, or reopened by recovery.
//!
//! Each way makes the segment's header and directory entry durable before
//! any record goes into it, so only the last segment can ever hold a torn
//! write, and a file with a segment's name always starts with a valid header.

use std::path::{Path, PathBuf};

use super::io::{VFile, Vfs};
use super::record::{self, SEGMENT_HEADER_LEN};
use super::segment::{segment_name, PREP_TMP_NAME};

/// The segment the writer appends to.
pub(crate) struct OpenSegment {
    file: Box<dyn VFile>,
    path: PathBuf,
    base: u64,
    /// Bytes of valid records in the file (header included); the next write goes here.
    len: u64,
    /// The file's length. Bytes between `len` and `cap` are preallocated
    /// zeros that were synced with the file's size; writes below `cap`
    /// change no metadata.
    cap: u64,
}

impl OpenSegment {
    /// Creates segment `base` with its header, syncing the file and the directory.
    pub(crate) fn create(vfs: &dyn Vfs, dir: &Path, base: u64) -> std::io::Result<OpenSegment> {
        let path = dir.join(segment_name(base));
        let mut file = vfs.create_new(&path)?;
        file.write_all_at(&record::segment_header(base), 0)?;
        file.sync_all()?;
        vfs.sync_dir(dir)?;
        let len = SEGMENT_HEADER_LEN as u64;
        Ok(OpenSegment { file, path, base, len, cap: len })
    }

    /// Makes the preallocated `file` (named [`PREP_TMP_NAME`]) segment
    /// `base`: its header is written and synced before the rename, so a file
    /// with a segment's name always starts with a valid header; the rename
    /// is then made durable.
    pub(crate) fn install_prepared(
        vfs: &dyn Vfs,
        dir: &Path,
        mut file: Box<dyn VFile>,
        base: u64,
    ) -> std::io::Result<OpenSegment> {
        let path = dir.join(segment_name(base));
        let cap = file.len()?;
        file.write_all_at(&record::segment_header(base), 0)?;
        file.sync_data()?;
        vfs.rename(&dir.join(PREP_TMP_NAME), &path)?;
        vfs.sync_dir(dir)?;
        let len = SEGMENT_HEADER_LEN as u64;
        assert!(len <= cap, "a preallocated segment holds at least its header");
        Ok(OpenSegment { file, path, base, len, cap })
    }

    /// The last segment found by recovery, whose valid records end at `len`
    /// in a file of `cap` bytes (recovery has cut any torn tail and synced it).
    pub(crate) fn reopened(file: Box<dyn VFile>, path: PathBuf, base: u64, len: u64, cap: u64) -> OpenSegment {
        assert!(
            SEGMENT_HEADER_LEN as u64 <= len && len <= cap,
            "{}: valid records end at {len}, inside a file of {cap} bytes",
            path.display()
        );
        OpenSegment { file, path, base, len, cap }
    }

    /// The LSN of the segment's first record.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Whether the segment holds any record.
    pub(crate) fn has_records(&self) -> bool {
        self.len > SEGMENT_HEADER_LEN as u64
    }

    /// Whether `bytes` more would grow the segment past `bytes_max`.
    pub(crate) fn would_exceed(&self, bytes: u64, bytes_max: u64) -> bool {
        self.len + bytes > bytes_max
    }

    /// Preallocated bytes not used yet (0 for a segment that grows by appending).
    pub(crate) fn headroom(&self) -> u64 {
        self.cap - self.len
    }

    /// Appends `chunk` (whole records) after the valid records.
    pub(crate) fn append(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.file
            .write_all_at(chunk, self.len)
            .map_err(|e| format!("write of {} bytes to {} failed: {e}", chunk.len(), self.path.display()))?;
        self.len += chunk.len() as u64;
        self.cap = self.cap.max(self.len);
        Ok(())
    }

    /// Makes the records written so far durable.
    pub(crate) fn sync_data(&mut self) -> Result<(), String> {
        self.file.sync_data().map_err(|e| format!("fdatasync of {} failed: {e}", self.path.display()))
    }
}
