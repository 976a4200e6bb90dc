//! Preallocation: once a log has written `prealloc_after_bytes` since open, a
//! helper thread zero-fills the next segment (`wal-prep.tmp`) and syncs it,
//! and the writer switches to it at the next rotation (or at once, when the
//! current segment is one that grows by appending). Records then overwrite
//! blocks that are already allocated, written and synced, so an `fdatasync`
//! flushes only data: the file's size and block map never change, and ext4
//! (or any journaling file system) has no metadata to commit per sync.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::io::{VFile, Vfs};
use super::segment::PREP_TMP_NAME;

/// The helper writes zeros in chunks of this size and checks for
/// cancellation between them.
const PREP_CHUNK_BYTES: usize = 1 << 20;

/// The helper syncs its zeros every this many bytes, so that the disk
/// receives them steadily instead of in one burst at the end.
const PREP_SYNC_EVERY_BYTES: u64 = 8 << 20;

/// The next segment, being preallocated by a helper thread or ready to use.
enum NextSegment {
    None,
    Preallocating(std::thread::JoinHandle<std::io::Result<Box<dyn VFile>>>),
    Ready(Box<dyn VFile>),
}

/// The writer's preallocation of its next segment.
pub(crate) struct Preallocator {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    /// Preallocated segments are this long.
    segment_bytes: u64,
    /// Preallocate once this many bytes were written since open (`None`: never).
    after_bytes: Option<u64>,
    next: NextSegment,
    /// No new preallocation starts before the bytes written since open reach
    /// this (set after a failed one, so a full disk is not retried in a loop).
    retry_at_bytes: u64,
    /// Tells a running helper to stop.
    cancel: Arc<AtomicBool>,
}

impl Preallocator {
    /// Preallocates segments of `segment_bytes` in `dir` once `after_bytes`
    /// were written since open (`None`: never).
    pub(crate) fn new(vfs: Arc<dyn Vfs>, dir: PathBuf, segment_bytes: u64, after_bytes: Option<u64>) -> Preallocator {
        Preallocator {
            vfs,
            dir,
            segment_bytes,
            after_bytes,
            next: NextSegment::None,
            retry_at_bytes: 0,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The preallocated segment, if the helper has finished one.
    pub(crate) fn take_ready(&mut self, written_since_open: u64) -> Option<Box<dyn VFile>> {
        self.collect(written_since_open);
        match std::mem::replace(&mut self.next, NextSegment::None) {
            NextSegment::Ready(file) => Some(file),
            other => {
                self.next = other;
                None
            }
        }
    }

    /// Starts preallocating the next segment when the current one has less
    /// than half a segment of `headroom` left (or grows by appending).
    /// Returns whether a preallocated segment is ready while the current one
    /// grows by appending (`headroom` 0, records in it): the writer then
    /// switches at once.
    pub(crate) fn tend(&mut self, written_since_open: u64, headroom: u64, has_records: bool) -> bool {
        let Some(after) = self.after_bytes else { return false };
        self.collect(written_since_open);
        match &self.next {
            NextSegment::None => {
                if written_since_open >= after.max(self.retry_at_bytes) && headroom < self.segment_bytes / 2 {
                    self.start(written_since_open);
                }
                false
            }
            NextSegment::Ready(_) => headroom == 0 && has_records,
            NextSegment::Preallocating(_) => false,
        }
    }

    /// Turns a finished helper into `Ready`, or into `None` after a failure.
    fn collect(&mut self, written_since_open: u64) {
        if !matches!(&self.next, NextSegment::Preallocating(handle) if handle.is_finished()) {
            return;
        }
        let NextSegment::Preallocating(handle) = std::mem::replace(&mut self.next, NextSegment::None) else {
            unreachable!("matched just above")
        };
        match handle.join() {
            Ok(Ok(file)) => self.next = NextSegment::Ready(file),
            Ok(Err(e)) => {
                self.retry_at_bytes = written_since_open + self.segment_bytes;
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "could not preallocate the next log segment; segments grow by appending until a later attempt succeeds");
            }
            Err(_) => {
                self.retry_at_bytes = u64::MAX;
                tracing::error!(dir = %self.dir.display(), "the log segment preallocation thread panicked; preallocation is off until restart");
            }
        }
    }

    fn start(&mut self, written_since_open: u64) {
        let (vfs, dir, size, cancel) = (self.vfs.clone(), self.dir.clone(), self.segment_bytes, self.cancel.clone());
        let spawned = std::thread::Builder::new()
            .name("idem-wal-prep".into())
            .spawn(move || preallocate(&*vfs, &dir, size, &cancel));
        match spawned {
            Ok(handle) => self.next = NextSegment::Preallocating(handle),
            Err(e) => {
                self.retry_at_bytes = written_since_open + self.segment_bytes;
                tracing::warn!(error = %e, "could not start the log segment preallocation thread");
            }
        }
    }

    /// Stops the helper and removes a preallocated file nobody will use.
    pub(crate) fn stop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        let had_file = match std::mem::replace(&mut self.next, NextSegment::None) {
            NextSegment::None => false,
            NextSegment::Preallocating(handle) => {
                let _ = handle.join();
                true
            }
            NextSegment::Ready(_) => true,
        };
        if had_file {
            let _ = self.vfs.remove(&self.dir.join(PREP_TMP_NAME));
        }
    }
}

/// Zero-fills a new `wal-prep.tmp` of `size` bytes in `dir` and syncs it
/// with its size, so that writes into it later change no metadata. Runs on
/// the helper thread; stops early (removing the file) when `cancel` is set.
fn preallocate(vfs: &dyn Vfs, dir: &Path, size: u64, cancel: &AtomicBool) -> std::io::Result<Box<dyn VFile>> {
    let path = dir.join(PREP_TMP_NAME);
    match vfs.remove(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = vfs.create_new(&path)?;
    let zeros = vec![0u8; PREP_CHUNK_BYTES];
    let mut fill = || -> std::io::Result<()> {
        let mut off = 0u64;
        while off < size {
            if cancel.load(Ordering::Relaxed) {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "preallocation cancelled"));
            }
            let n = (size - off).min(PREP_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
            if off.is_multiple_of(PREP_SYNC_EVERY_BYTES) {
                file.sync_data()?;
            }
        }
        file.sync_all()
    };
    match fill() {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = vfs.remove(&path);
            Err(e)
        }
    }
}
