//! Crash points: a workload of concurrent appends, segment rotations and a
//! snapshot runs on the simulated storage, which crashes at its n-th sync
//! point, for every n. After a reboot under each crash model (only synced
//! bytes survive / a random prefix of the rest / random sectors of the rest)
//! recovery must succeed, replay every acknowledged record, and replay a
//! prefix of the log (no holes). Recovery itself is crashed too.

mod wal_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use idem_core::Change;
use idem_store::wal::sim::{CrashMode, SimFs};
use idem_store::wal::{Log, Storage};
use wal_common::*;

const WRITERS: i64 = 4;
const PER_WRITER: i64 = 12;

/// Keys are padded so that one batch spans several 512-byte sectors, which
/// is what lets a RandomSectors crash keep later records of a torn write.
fn key(v: i64) -> String {
    format!("v{v}:{}", "p".repeat(300))
}

struct Outcome {
    /// value -> lsn of every append that returned an LSN.
    appended: BTreeMap<i64, u64>,
    /// Values whose `durable` succeeded.
    acked: BTreeSet<i64>,
}

/// Runs the workload until it ends or the file system crashes.
fn workload(storage: &Storage, dir: &Path) -> Outcome {
    let appended = Arc::new(Mutex::new(BTreeMap::new()));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let Ok((log, _, _)) = open_collect(dir, &opts(), storage) else {
        return Outcome { appended: BTreeMap::new(), acked: BTreeSet::new() };
    };
    let log = Arc::new(log);
    let rt = runtime();
    let phase = |range: std::ops::Range<i64>| {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let (log, appended, acked) = (log.clone(), appended.clone(), acked.clone());
                let range = range.clone();
                tasks.push(tokio::spawn(async move {
                    for i in range {
                        let v = i * WRITERS + w;
                        let Ok(lsn) = log.append(v as u64, &[counter(&key(v), v)]) else { return };
                        appended.lock().unwrap().insert(v, lsn.0);
                        if log.durable(lsn).await.is_err() {
                            return;
                        }
                        acked.lock().unwrap().insert(v);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    phase(0..PER_WRITER / 2);
    // A snapshot of everything appended so far (as the engine's dump would be).
    if let Ok(mut snap) = log.begin_snapshot() {
        let values: Vec<i64> = appended.lock().unwrap().keys().copied().collect();
        let ok = values.iter().all(|v| snap.add(&counter(&key(*v), *v)).is_ok());
        if ok {
            let _ = snap.finish(0, 0);
        }
    }
    phase(PER_WRITER / 2..PER_WRITER);
    drop(rt);
    drop(Arc::into_inner(log).expect("tasks are done"));
    let appended = std::mem::take(&mut *appended.lock().unwrap());
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    Outcome { appended, acked }
}

fn replayed(dir: &Path, storage: &Storage) -> (Log, BTreeSet<i64>) {
    let (log, _, seen) = open_collect(dir, &opts(), storage).unwrap_or_else(|e| panic!("recovery failed: {e}"));
    let values = seen
        .iter()
        .map(|(_, c)| match c {
            Change::CounterPut { value, .. } => *value,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    (log, values)
}

fn verify(out: &Outcome, values: &BTreeSet<i64>, context: &str) {
    let lost: Vec<_> = out.acked.difference(values).collect();
    assert!(lost.is_empty(), "{context}: acknowledged values lost: {lost:?}");
    let unknown: Vec<_> = values.iter().filter(|v| !out.appended.contains_key(v)).collect();
    assert!(unknown.is_empty(), "{context}: replayed values never appended: {unknown:?}");
    // The replayed records are a prefix of the log, in LSN order.
    let present_max = values.iter().map(|v| out.appended[v]).max().unwrap_or(0);
    let holes: Vec<_> = out.appended.iter().filter(|(v, lsn)| **lsn < present_max && !values.contains(v)).collect();
    assert!(holes.is_empty(), "{context}: records missing below LSN {present_max}: {holes:?}");
}

#[test]
fn every_sync_point_of_the_workload_is_a_safe_crash_point() {
    crash_at_every_sync_point(&|fs| sim_storage(fs, 8192));
}

/// The same with segment preallocation on from the first byte: a helper
/// thread zero-fills the next segment (its syncs are crash points too, in
/// whatever order the threads reach them) and the writer switches to it.
#[test]
fn every_sync_point_is_a_safe_crash_point_with_preallocated_segments() {
    crash_at_every_sync_point(&|fs| Storage { prealloc_after_bytes: Some(0), ..sim_storage(fs, 8192) });
}

fn crash_at_every_sync_point(make_storage: &dyn Fn(&SimFs) -> Storage) {
    let dir = Path::new("/crash");
    // A dry run counts the sync points (the count varies a little with batching).
    let dry = SimFs::new();
    workload(&make_storage(&dry), dir);
    let total = dry.syncs() + 5;
    assert!(total > 20, "the workload has only {total} sync points");
    let modes = [CrashMode::DropUnsynced, CrashMode::KeepPrefix, CrashMode::RandomSectors];
    let mut runs = 0;
    for n in 1..=total {
        for (m, mode) in modes.iter().enumerate() {
            let seed = n * 31 + m as u64;
            let fs = SimFs::new();
            let storage = make_storage(&fs);
            fs.crash_at_sync(n);
            let out = workload(&storage, dir);
            if !fs.crashed() {
                // The workload had fewer sync points this time: crash at its end.
                fs.crash();
            }
            fs.reboot(*mode, seed);
            let context = format!("crash at sync {n}, {mode:?}, seed {seed}");
            // Every third run also crashes recovery at one of its syncs.
            if n % 3 == 0 {
                fs.crash_at_sync(1 + seed % 3);
                let _ = open_collect(dir, &opts(), &storage);
                fs.crash();
                fs.reboot(*mode, seed + 1);
            }
            let (log, values) = replayed(dir, &storage);
            verify(&out, &values, &context);
            // The recovered log accepts and keeps new writes.
            let rt = runtime();
            let lsn = log.append(0, &[counter("after", -1)]).unwrap();
            rt.block_on(log.durable(lsn)).unwrap();
            drop(log);
            fs.reboot(*mode, seed + 2);
            let (_log, again) = replayed(dir, &storage);
            assert!(again.contains(&-1), "{context}: write after recovery lost");
            runs += 1;
        }
    }
    eprintln!("{runs} crash runs over {total} sync points");
}
