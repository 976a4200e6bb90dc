//! Storage failure: after a write or fsync error the log refuses every
//! pending and later write, never retries the sync, and acknowledges nothing
//! that is not on stable storage. Recovery is by restart.

mod wal_common;

use std::path::Path;
use std::sync::Arc;

use idem_core::Change;
use idem_store::wal::sim::{CrashMode, SimFs};
use idem_store::wal::{Log, Lsn, Storage};
use idem_store::StoreError;
use wal_common::*;

/// Appends `count` records concurrently from several tasks; returns the
/// values whose `durable` succeeded and how many failed.
fn concurrent_writes(log: &Arc<Log>, first: i64, count: i64) -> (Vec<i64>, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for v in first..first + count {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let lsn = log.append(v as u64, &[counter(&format!("k{v}"), v)])?;
                log.durable(lsn).await.map(|_| v)
            }));
        }
        let mut acked = Vec::new();
        let mut failed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => acked.push(v),
                Err(StoreError::Failed(_)) => failed += 1,
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        (acked, failed)
    })
}

fn replayed_values(seen: &[(u64, Change)]) -> Vec<i64> {
    let mut v = counter_values(seen);
    v.sort();
    v
}

/// Checks the failed state: later appends fail, nothing beyond what was
/// synced is acknowledged, and the log never syncs again.
fn assert_failed_for_good(fs: &SimFs, log: &Log, acked_lsn: Lsn) {
    let rt = runtime();
    let syncs = fs.syncs();
    assert!(log.failure().is_some());
    assert!(matches!(log.append(1, &[counter("late", 1)]), Err(StoreError::Failed(_))));
    assert!(matches!(log.append_fence_high(1, 5), Err(StoreError::Failed(_))));
    assert!(matches!(log.begin_snapshot(), Err(StoreError::Failed(_))));
    assert!(matches!(rt.block_on(log.flush()), Err(StoreError::Failed(_))));
    assert!(matches!(rt.block_on(log.durable(Lsn(log.last_appended().0 + 1))), Err(StoreError::Failed(_))));
    // What was synced before the failure stays acknowledged.
    rt.block_on(log.durable(acked_lsn)).unwrap();
    assert_eq!(fs.syncs(), syncs, "a failed log never syncs again (no fsync retry)");
}

fn fault_scenario(inject: impl FnOnce(&SimFs)) {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let dir = Path::new("/f");
    let rt = runtime();
    let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
    let log = Arc::new(log);
    let mut acked_lsn = Lsn(0);
    for v in 0..5 {
        acked_lsn = log.append(v as u64, &[counter(&format!("k{v}"), v)]).unwrap();
        rt.block_on(log.durable(acked_lsn)).unwrap();
    }
    inject(&fs);
    let (acked, failed) = concurrent_writes(&log, 5, 40);
    assert!(failed > 0, "the injected fault made writes fail");
    // Later batches never reach the disk, so none of them is acknowledged.
    assert!(acked.is_empty(), "acknowledged after the fault: {acked:?}");
    assert_failed_for_good(&fs, &log, acked_lsn);
    drop(log);

    // Restart (the data that failed to sync is gone).
    fs.reboot(CrashMode::DropUnsynced, 7);
    fs.set_space_bytes_max(None);
    let (log, _, seen) = open_collect(dir, &opts(), &storage).unwrap();
    assert_eq!(replayed_values(&seen), (0..5).collect::<Vec<_>>());
    let lsn = log.append(0, &[counter("after", 1)]).unwrap();
    rt.block_on(log.durable(lsn)).unwrap();
}

#[test]
fn an_fsync_error_fails_pending_and_later_writes() {
    fault_scenario(|fs| fs.fail_sync_at(1));
}

#[test]
fn a_write_error_fails_pending_and_later_writes() {
    fault_scenario(|fs| fs.fail_write_at(1));
}

#[test]
fn a_full_disk_fails_writes() {
    fault_scenario(|fs| {
        let used: u64 = fs.paths().iter().map(|p| fs.read(p).unwrap().len() as u64).sum();
        fs.set_space_bytes_max(Some(used + 10));
    });
}

/// An fsync error on a file in a failed state must not be retried even if a
/// later sync would "succeed" (the kernel may have dropped the dirty pages):
/// the log stays failed although the fault was a one-off.
#[test]
fn a_one_off_fsync_error_is_not_retried() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let rt = runtime();
    let (log, _, _) = open_collect(Path::new("/o"), &opts(), &storage).unwrap();
    fs.fail_sync_at(1);
    let lsn = log.append(1, &[counter("a", 1)]).unwrap();
    let err = rt.block_on(log.durable(lsn)).unwrap_err();
    assert!(err.to_string().contains("fdatasync"), "{err}");
    assert!(log.failure().unwrap().contains("os error 5"), "{:?}", log.failure());
    assert_failed_for_good(&fs, &log, Lsn(0));
}

/// A real full file system: a 2 MiB tmpfs. Needs root; skipped with a note otherwise.
#[test]
fn a_real_full_filesystem_fails_writes_and_recovers_after_restart() {
    let mnt = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("NOTE: skipping the real full-filesystem test: mounting a tmpfs is not permitted here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let dir = mnt.path().join("data");
    let rt = runtime();
    let value = bytes::Bytes::from(vec![7u8; 64 << 10]);
    let put = |i: u64| Change::ValuePut { key: format!("v{i}").into(), value: value.clone(), version: i };
    let mut acked = Vec::new();
    let err = {
        let (log, _, _) = open_collect(&dir, &opts(), &Storage::default()).unwrap();
        let mut i = 0;
        let err = loop {
            let r = log.append(i, &[put(i)]).and_then(|lsn| rt.block_on(log.durable(lsn)));
            match r {
                Ok(()) => acked.push(i),
                Err(e) => break e,
            }
            i += 1;
            assert!(i < 1000, "a 2 MiB file system never filled up");
        };
        assert!(matches!(log.append(0, &[put(0)]), Err(StoreError::Failed(_))));
        err
    };
    assert!(matches!(&err, StoreError::Failed(m) if m.contains("No space")), "{err}");
    assert!(!acked.is_empty());
    // Restart on the still-full file system: the partial write is a torn
    // tail; every acknowledged record is there.
    let (_log, _, seen) = open_collect(&dir, &opts(), &Storage::default()).unwrap();
    let versions: Vec<u64> = seen
        .iter()
        .map(|(_, c)| match c {
            Change::ValuePut { version, .. } => *version,
            _ => panic!(),
        })
        .collect();
    assert_eq!(versions, acked);
}
