//! Disk faults under the embedded store: the data directory lives on a
//! small ext4 file system of its own (a file on a loop device), which the
//! harness fills to the last block for a *disk full*; and an `fsync` EIO is
//! injected into the running idem with strace (`-e inject=…:error=EIO`),
//! the real system call being skipped.
//!
//! docs/durability.md's contract: once a write or a sync fails, idem fails
//! its log, answers `READONLY`, and never retries the sync; recovery is a
//! restart. Both faults therefore end with a kill and a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// Size of the file system the data directory lives on (a sparse file):
/// room for the preallocated log segments and a snapshot.
const FS_BYTES: u64 = 512 << 20;
/// Largest single allocation of the filler file; smaller ones follow until
/// no block is left.
const FILL_CHUNK_BYTES: i64 = 64 << 20;
/// The smallest allocation tried before the file system counts as full.
const FILL_CHUNK_BYTES_MIN: i64 = 4096;
/// How long strace may take to attach to every thread of idem.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// The sync calls that fail while the fault is on.
const SYNC_CALLS: &str = "fsync,fdatasync,sync_file_range,syncfs";

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The loop-mounted file system; unmounted and detached on drop.
pub struct LoopFs {
    image: PathBuf,
    device: String,
    mount: PathBuf,
    filler: PathBuf,
}

impl LoopFs {
    /// Creates the image under `dir`, formats it (no blocks reserved for
    /// root: the harness runs as root) and mounts it at `dir/disk`.
    pub fn mount(dir: &Path) -> anyhow::Result<LoopFs> {
        let image = dir.join("disk.img");
        let mount = dir.join("disk");
        std::fs::File::create(&image)?.set_len(FS_BYTES)?;
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image))?;
        let device = run(Command::new("losetup").args(["--find", "--show"]).arg(&image))
            .context("the disk nemesis needs root and a free loop device")?;
        std::fs::create_dir_all(&mount)?;
        let fs = LoopFs { image, device, filler: mount.join("filler"), mount };
        run(Command::new("mount").arg(&fs.device).arg(&fs.mount))?;
        Ok(fs)
    }

    /// Where idem's data directory goes.
    pub fn data_dir(&self) -> PathBuf {
        self.mount.join("idem-data")
    }

    /// Allocates every free block to a filler file; returns the bytes
    /// taken.
    pub fn fill(&self) -> anyhow::Result<u64> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.filler)?;
        let mut len = f.metadata()?.len() as i64;
        let start = len;
        let mut chunk = FILL_CHUNK_BYTES;
        while chunk >= FILL_CHUNK_BYTES_MIN {
            // SAFETY: fallocate(2) on a file this process opened.
            let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, len, chunk) };
            if r == 0 {
                len += chunk;
            } else {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ENOSPC) {
                    return Err(err).context("filling the data file system");
                }
                chunk /= 2;
            }
        }
        Ok((len - start) as u64)
    }

    /// Frees what `fill` took.
    pub fn free(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.filler) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Whatever still holds a file open there (a dying idem) must not
        // keep the mount: a lazy unmount detaches it at once.
        if run(Command::new("umount").arg(&self.mount)).is_err() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount));
        }
        let _ = run(Command::new("losetup").arg("-d").arg(&self.device));
        let _ = std::fs::remove_file(&self.image);
    }
}

/// strace attached to idem, failing every sync call with EIO.
pub struct SyncEio {
    child: Child,
    log: PathBuf,
}

/// The idem process in the process group `group` (the group's leader is
/// idem itself, or `unshare` with idem as its child).
pub fn idem_pid(group: i32) -> anyhow::Result<i32> {
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm(group).trim() == "idem" {
        return Ok(group);
    }
    let children = std::fs::read_to_string(format!("/proc/{group}/task/{group}/children"))?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|&p| comm(p).trim() == "idem")
        .with_context(|| format!("no idem process under {group}"))
}

impl SyncEio {
    /// Attaches to every thread of `pid`; returns once strace reports them
    /// attached.
    pub fn attach(pid: i32, log: &Path) -> anyhow::Result<SyncEio> {
        let mut child = Command::new("strace")
            .args(["-f", "-p", &pid.to_string(), "-o"])
            .arg(log)
            .args(["-e", &format!("trace={SYNC_CALLS}")])
            .args(["-e", &format!("inject={SYNC_CALLS}:error=EIO")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting strace (scripts/setup.sh installs it)")?;
        // strace reports "Process N attached with T threads" once it
        // holds them all.
        let stderr = child.stderr.take().context("strace's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("attached") && tx.send(()).is_err() {
                    return;
                }
            }
        });
        if rx.recv_timeout(ATTACH_TIMEOUT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("strace did not attach to idem ({pid}) within {ATTACH_TIMEOUT:?}");
        }
        Ok(SyncEio { child, log: log.to_path_buf() })
    }

    /// Waits for strace to end (it ends with the process it traces) and
    /// counts the calls it failed.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Ok(log.lines().filter(|l| l.contains("(INJECTED)")).count() as u64)
    }
}

impl Drop for SyncEio {
    fn drop(&mut self) {
        // Detaches from idem if the fault did not end with its kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
