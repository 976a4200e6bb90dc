//! A simulated file system for crash and fault tests, in the style of
//! redb's crash-consistency backend: each file keeps what was *written* apart
//! from what is *durable* (as of its last sync), and the directory keeps its
//! current entries apart from the durable ones (as of the last directory
//! sync). A crash throws away what was not synced, or keeps an arbitrary
//! part of it, as a power loss may.
//!
//! Faults:
//! - [`SimFs::crash_at_sync`]: the n-th sync point (file or directory sync)
//!   never completes; from then on every operation fails, as if the process
//!   had died there. Then [`SimFs::reboot`] applies a [`CrashMode`].
//! - [`SimFs::fail_sync_at`]: the n-th sync returns EIO (the process lives on).
//! - [`SimFs::fail_write_at`]: the n-th write returns EIO.
//! - [`SimFs::set_space_bytes_max`]: writes past a total size return ENOSPC.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::io::{VFile, Vfs};

/// What survives of unsynced data at a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only synced bytes and directory entries survive.
    DropUnsynced,
    /// Each file keeps a random prefix of its unsynced appends.
    KeepPrefix,
    /// Each 512-byte sector of a file independently keeps its synced or its
    /// written content, and the length lands anywhere between the two: pages
    /// of one write reach the disk in any order.
    RandomSectors,
}

const SECTOR: usize = 512;

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    locks: HashSet<PathBuf>,
    crashed: bool,
    syncs: u64,
    writes: u64,
    crash_at_sync: Option<u64>,
    fail_sync_at: Option<u64>,
    fail_write_at: Option<u64>,
    space_bytes_max: Option<u64>,
}

impl State {
    fn check(&self) -> io::Result<()> {
        if self.crashed {
            Err(io::Error::other("simulated crash: the process is dead"))
        } else {
            Ok(())
        }
    }

    /// Counts a sync point and decides whether it crashes or fails.
    fn sync_point(&mut self) -> io::Result<()> {
        self.check()?;
        self.syncs += 1;
        if self.crash_at_sync == Some(self.syncs) {
            self.crashed = true;
            return Err(io::Error::other("simulated crash during sync"));
        }
        if self.fail_sync_at == Some(self.syncs) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }
}

/// A simulated file system; clones share the same state.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    /// An empty file system.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Sync points (file and directory syncs) reached so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Writes so far.
    pub fn writes(&self) -> u64 {
        self.state.lock().writes
    }

    /// The `n`-th sync point from now on (1 = the next) crashes the process.
    pub fn crash_at_sync(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at_sync = Some(s.syncs + n);
    }

    /// The `n`-th sync from now on (1 = the next) returns EIO.
    pub fn fail_sync_at(&self, n: u64) {
        let mut s = self.state.lock();
        s.fail_sync_at = Some(s.syncs + n);
    }

    /// The `n`-th write from now on (1 = the next) returns EIO.
    pub fn fail_write_at(&self, n: u64) {
        let mut s = self.state.lock();
        s.fail_write_at = Some(s.writes + n);
    }

    /// Writes that would make all files together larger than this fail with ENOSPC.
    pub fn set_space_bytes_max(&self, bytes: Option<u64>) {
        self.state.lock().space_bytes_max = bytes;
    }

    /// Crashes now (every later operation fails until [`SimFs::reboot`]).
    pub fn crash(&self) {
        self.state.lock().crashed = true;
    }

    /// Whether the file system has crashed.
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Restarts after a crash (or a clean stop): the durable directory
    /// entries come back, and each file keeps its synced bytes plus whatever
    /// `mode` lets survive of the rest. Locks and injected faults are cleared.
    pub fn reboot(&self, mode: CrashMode, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut s = self.state.lock();
        s.crashed = false;
        s.crash_at_sync = None;
        s.fail_sync_at = None;
        s.fail_write_at = None;
        s.locks.clear();
        s.names = s.durable_names.clone();
        let live: HashSet<u64> = s.names.values().copied().collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        for inode in s.inodes.values_mut() {
            let survived = survive(&inode.durable, &inode.data, mode, &mut rng);
            inode.durable = survived.clone();
            inode.data = survived;
        }
    }

    /// The current (written) content of a file, for tests that damage files.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.names.get(path).map(|ino| s.inodes[ino].data.clone())
    }

    /// Replaces a file's content, written and durable alike (simulates damage on disk).
    pub fn overwrite(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.state.lock();
        let ino = s.names[path];
        let inode = s.inodes.get_mut(&ino).expect("inode");
        inode.durable = data.clone();
        inode.data = data;
    }

    /// The paths of all files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.lock().names.keys().cloned().collect()
    }
}

fn survive(durable: &[u8], written: &[u8], mode: CrashMode, rng: &mut StdRng) -> Vec<u8> {
    match mode {
        CrashMode::DropUnsynced => durable.to_vec(),
        CrashMode::KeepPrefix => {
            if written.len() >= durable.len() && written[..durable.len()] == *durable {
                let keep = rng.gen_range(durable.len()..=written.len());
                written[..keep].to_vec()
            } else if rng.gen_bool(0.5) {
                durable.to_vec()
            } else {
                written.to_vec()
            }
        }
        CrashMode::RandomSectors => {
            let (lo, hi) = (durable.len().min(written.len()), durable.len().max(written.len()));
            let len = rng.gen_range(lo..=hi);
            let mut out = vec![0u8; len];
            for start in (0..len).step_by(SECTOR) {
                let end = (start + SECTOR).min(len);
                let src = if rng.gen_bool(0.5) { written } else { durable };
                for (i, b) in out[start..end].iter_mut().enumerate() {
                    *b = src.get(start + i).copied().unwrap_or(0);
                }
            }
            out
        }
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.state.lock();
        s.check()?;
        f(&mut s, self.ino)
    }
}

impl VFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|s, ino| Ok(s.inodes[&ino].data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|s, ino| {
            let data = &s.inodes[&ino].data;
            let start = offset as usize;
            if start + buf.len() > data.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf.copy_from_slice(&data[start..start + buf.len()]);
            Ok(())
        })
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|s, ino| {
            s.writes += 1;
            if s.fail_write_at == Some(s.writes) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let mut end = offset as usize + buf.len();
            let grow = end.saturating_sub(s.inodes[&ino].data.len()) as u64;
            let mut full = false;
            if let Some(max) = s.space_bytes_max {
                let used = s.used_bytes();
                if used + grow > max {
                    // Like a real file system, write what fits, then fail.
                    full = true;
                    end -= (used + grow - max).min(buf.len() as u64) as usize;
                }
            }
            let data = &mut s.inodes.get_mut(&ino).expect("inode").data;
            if data.len() < end {
                data.resize(end, 0);
            }
            let n = end.saturating_sub(offset as usize);
            data[offset as usize..end.max(offset as usize)].copy_from_slice(&buf[..n]);
            if full {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            Ok(())
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|s, ino| {
            s.inodes.get_mut(&ino).expect("inode").data.resize(len as usize, 0);
            Ok(())
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with(|s, ino| {
            s.sync_point()?;
            let inode = s.inodes.get_mut(&ino).expect("inode");
            inode.durable = inode.data.clone();
            Ok(())
        })
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        self.state.lock().check()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let mut s = self.state.lock();
        s.check()?;
        if !s.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock { state: self.state.clone(), path: path.to_path_buf() })))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        s.check()?;
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect())
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let s = self.state.lock();
        s.check()?;
        let ino = *s.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Box::new(SimFile { state: self.state.clone(), ino }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let mut s = self.state.lock();
        s.check()?;
        if s.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        s.next_ino += 1;
        let ino = s.next_ino;
        s.inodes.insert(ino, Inode::default());
        s.names.insert(path.to_path_buf(), ino);
        Ok(Box::new(SimFile { state: self.state.clone(), ino }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check()?;
        let ino = s.names.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check()?;
        s.names.remove(path).map(|_| ()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.sync_point()?;
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        let current: Vec<(PathBuf, u64)> =
            s.names.iter().filter(|(p, _)| p.parent() == Some(dir)).map(|(p, i)| (p.clone(), *i)).collect();
        s.durable_names.extend(current);
        Ok(())
    }
}
