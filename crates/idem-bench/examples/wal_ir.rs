//! A deterministic driver for instruction counts of the write-ahead log's
//! hot path, to run under callgrind (wall-clock A/B runs are too noisy on a
//! shared box to see a few instructions per record):
//!
//! ```text
//! cargo build --release -p idem-bench --example wal_ir
//! valgrind --tool=callgrind --toggle-collect='*timed_*' \
//!     target/release/examples/wal_ir append 100000 /dev/shm/wal-ir
//! valgrind --tool=callgrind --toggle-collect='*timed_*' \
//!     target/release/examples/wal_ir commit 20000 /dev/shm/wal-ir
//! ```
//!
//! Only the `timed_*` functions are counted, so Ir / N is the cost of one
//! record:
//! - `append`: `Log::append` alone (encode, the tail lock, the positions);
//! - `commit`: one record at a time on an event loop that syncs for itself
//!   (`LoopSync`): append, then the durable wait, whose park hook runs the
//!   group commit (write, fdatasync, publish) on the same thread.
//!
//! The directory (last argument) is emptied first; a tmpfs keeps the run
//! short, and callgrind counts user-space instructions only either way.

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use idem_core::Change;
use idem_store::wal::{Log, LogOptions};
use idem_store::FsyncMode;

fn change(i: u64) -> Change {
    Change::ClaimPut {
        key: Bytes::from(format!("claim:{i:012}")),
        owner: Bytes::from_static(b"worker-1"),
        expires_at_ms: Some(60_000 + i),
    }
}

fn open(dir: &Path) -> Log {
    let _ = std::fs::remove_dir_all(dir);
    let opts = LogOptions { fsync: FsyncMode::Always, snapshot_after_bytes: u64::MAX };
    let (log, _) = Log::open(dir, &opts, &mut |_, _| {}).expect("open the log");
    log
}

/// The measured region of `append`: appends every record once.
#[inline(never)]
fn timed_appends(log: &Log, changes: &[Change]) {
    for (i, c) in changes.iter().enumerate() {
        black_box(log.append(i as u64, std::slice::from_ref(c)).expect("append"));
    }
}

/// The measured region of `commit`: each record appended and awaited on a
/// loop that syncs for itself.
#[inline(never)]
fn timed_commits(log: &Log, runtime: &tokio::runtime::Runtime, changes: &[Change]) {
    runtime.block_on(async {
        for (i, c) in changes.iter().enumerate() {
            let lsn = log.append(i as u64, std::slice::from_ref(c)).expect("append");
            log.durable(lsn).await.expect("durable");
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: wal_ir append|commit N DIR";
    let (mode, n, dir) = match args.as_slice() {
        [_, mode, n, dir] => (mode.as_str(), n.parse::<u64>().expect(usage), Path::new(dir)),
        _ => panic!("{usage}"),
    };
    let changes: Vec<Change> = (0..n).map(change).collect();
    let log = open(dir);
    match mode {
        "append" => timed_appends(&log, &changes),
        "commit" => {
            let sync = log.loop_sync();
            let runtime = sync.runtime().expect("loop runtime");
            sync.enter();
            timed_commits(&log, &runtime, &changes);
        }
        _ => panic!("{usage}"),
    }
    drop(log);
    let _ = std::fs::remove_dir_all(dir);
}
