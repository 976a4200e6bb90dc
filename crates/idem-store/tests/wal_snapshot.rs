//! Snapshots and compaction: a snapshot plus the log after its cut rebuilds
//! the state (even when the snapshot already reflects records after the
//! cut), covered segments are dropped, and recovery reads only what is needed.

mod wal_common;

use std::path::Path;

use idem_core::Change;
use idem_store::wal::sim::{CrashMode, SimFs};
use idem_store::wal::{self, LogOptions, Storage};
use idem_store::{FsyncMode, StoreError};
use proptest::prelude::*;
use wal_common::*;

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<Change>),
    /// Begin a snapshot, append these records after the cut but before the
    /// dump (the dump reflects them, as a shard dumped late does), then finish.
    Snapshot(Vec<Vec<Change>>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => proptest::collection::vec(model_change(), 1..4).prop_map(Step::Append),
        1 => proptest::collection::vec(proptest::collection::vec(model_change(), 1..3), 0..4).prop_map(Step::Snapshot),
    ]
}

fn wal_files(fs: &SimFs) -> Vec<String> {
    fs.paths().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_and_log_replay_reproduce_the_state(steps in proptest::collection::vec(step(), 1..40)) {
        let fs = SimFs::new();
        let storage = sim_storage(&fs, 512);
        let dir = Path::new("/s");
        let rt = runtime();
        let mut model = Model::default();
        let time = std::cell::Cell::new(0u64);
        let fence_high = std::cell::Cell::new(0u64);
        let mut snapshot_lsn = None;
        {
            let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
            let append = |model: &mut Model, changes: &[Change]| {
                time.set(time.get() + 1);
                for c in changes {
                    model.apply(c);
                    fence_high.set(fence_high.get().max(c.fence().unwrap_or(0)));
                }
                let lsn = log.append(time.get(), changes).unwrap();
                rt.block_on(log.durable(lsn)).unwrap();
            };
            for step in &steps {
                match step {
                    Step::Append(changes) => append(&mut model, changes),
                    Step::Snapshot(after_cut) => {
                        let mut snap = log.begin_snapshot().unwrap();
                        for changes in after_cut {
                            append(&mut model, changes);
                        }
                        for c in model.0.values() {
                            snap.add(c).unwrap();
                        }
                        snapshot_lsn = Some(snap.lsn());
                        snap.finish(fence_high.get(), time.get()).unwrap();
                    }
                }
            }
        }
        fs.reboot(CrashMode::DropUnsynced, 0);
        let (_log, rec, seen) = open_collect(dir, &opts(), &storage).unwrap();
        let mut replayed = Model::default();
        for (_, c) in &seen {
            replayed.apply(c);
        }
        prop_assert_eq!(&replayed, &model);
        prop_assert_eq!(rec.fence_high, fence_high.get());
        prop_assert_eq!(rec.clock_ms, time.get());
        if let Some(l) = snapshot_lsn {
            // Nothing below the last cut is kept.
            for name in wal_files(&fs) {
                if let Some(base) = name.strip_prefix("wal-").and_then(|n| n.strip_suffix(".log")) {
                    prop_assert!(base.parse::<u64>().unwrap() >= l, "{} survived the snapshot at {}", name, l);
                }
                prop_assert!(!name.ends_with(".tmp"));
            }
        }
    }
}

#[test]
fn recovery_replays_only_the_log_after_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    {
        let (log, _, _) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
        for i in 0..1000 {
            let lsn = log.append(i, &[counter(&format!("k{}", i % 10), i as i64)]).unwrap();
            rt.block_on(log.durable(lsn)).unwrap();
        }
        let mut snap = log.begin_snapshot().unwrap();
        for k in 0..10 {
            snap.add(&counter(&format!("k{k}"), 990 + k)).unwrap();
        }
        snap.finish(77, 999).unwrap();
        for i in 1000..1005 {
            let lsn = log.append(i, &[counter("k0", i as i64)]).unwrap();
            rt.block_on(log.durable(lsn)).unwrap();
        }
    }
    let report = wal::check(tmp.path()).unwrap();
    assert_eq!(report.snapshot_entries, 10);
    assert_eq!(report.snapshot_lsn, 1001);
    assert_eq!(report.segments, 1);
    assert_eq!(report.changes, 5);
    let (_log, rec, seen) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    // 10 snapshot entries, then the 5 records after the cut (+ the shutdown mark).
    assert_eq!(seen.len(), 15);
    assert_eq!(seen[0], (999, counter("k0", 990)));
    assert_eq!(seen[14], (1004, counter("k0", 1004)));
    assert_eq!(rec.records, 6);
    assert_eq!(rec.fence_high, 77);
    assert_eq!(rec.clock_ms, 1004);
}

#[test]
fn snapshot_due_follows_the_logged_bytes() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let opts = LogOptions { fsync: FsyncMode::Always, snapshot_after_bytes: 4096 };
    let rt = runtime();
    let (log, _, _) = open_collect(Path::new("/d"), &opts, &storage).unwrap();
    assert!(!log.snapshot_due());
    let mut i = 0;
    while !log.snapshot_due() {
        let lsn = log.append(i, &[counter("k", i as i64)]).unwrap();
        rt.block_on(log.durable(lsn)).unwrap();
        i += 1;
        assert!(i < 1000);
    }
    let snap = log.begin_snapshot().unwrap();
    assert!(!log.snapshot_due(), "not due while one is in progress");
    // An abandoned snapshot leaves nothing behind and changes nothing.
    drop(snap);
    assert!(!wal_files(&fs).iter().any(|n| n.starts_with("snap-")));
    assert!(log.snapshot_due());
    let mut snap = log.begin_snapshot().unwrap();
    snap.add(&counter("k", 1)).unwrap();
    snap.finish(0, i).unwrap();
    assert!(!log.snapshot_due());
}

#[test]
fn a_damaged_snapshot_stops_startup() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let dir = Path::new("/d");
    {
        let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
        log.append(1, &[counter("a", 1)]).unwrap();
        let mut snap = log.begin_snapshot().unwrap();
        for i in 0..50 {
            snap.add(&counter(&format!("k{i}"), i)).unwrap();
        }
        snap.finish(0, 1).unwrap();
    }
    let path = fs.paths().into_iter().find(|p| p.to_string_lossy().ends_with(".snap")).unwrap();
    let mut bytes = fs.read(&path).unwrap();
    // Each entry of counter("kN", N): 8 frame bytes + tag, length, 2-byte key, i64.
    let entry = 64 + 3 * 23;
    bytes[entry + 10] ^= 4;
    fs.overwrite(&path, bytes.clone());
    match open_collect(dir, &opts(), &storage) {
        Err(StoreError::Corrupt { path: p, offset, .. }) => assert_eq!((p, offset), (path.clone(), entry as u64)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A snapshot cut short is corrupt too: it was renamed only when complete.
    bytes[entry + 10] ^= 4;
    bytes.truncate(bytes.len() - 5);
    fs.overwrite(&path, bytes);
    assert!(matches!(wal::check_with(&fs, dir), Err(StoreError::Corrupt { .. })));
}

#[test]
fn a_snapshot_with_no_later_record_recovers_and_the_log_continues() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let dir = Path::new("/d");
    let rt = runtime();
    {
        let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
        let lsn = log.append(1, &[counter("a", 1)]).unwrap();
        rt.block_on(log.durable(lsn)).unwrap();
        let mut snap = log.begin_snapshot().unwrap();
        snap.add(&counter("a", 1)).unwrap();
        snap.finish(5, 1).unwrap();
        // Crash before anything else reaches the log.
        fs.crash();
    }
    fs.reboot(CrashMode::DropUnsynced, 0);
    {
        let (log, rec, seen) = open_collect(dir, &opts(), &storage).unwrap();
        assert_eq!(seen, vec![(1, counter("a", 1))]);
        assert_eq!(rec.fence_high, 5);
        let lsn = log.append(2, &[counter("b", 2)]).unwrap();
        assert_eq!(lsn.0, 2);
        rt.block_on(log.durable(lsn)).unwrap();
    }
    let (_log, _, seen) = open_collect(dir, &opts(), &storage).unwrap();
    assert_eq!(seen, vec![(1, counter("a", 1)), (2, counter("b", 2))]);
}

/// A snapshot cut taken while the tail is empty still starts a new segment
/// before the next record, even when a cycle with nothing to write runs in
/// between (a sync in EverySecond mode): otherwise later records would go
/// into a segment below the cut, which the finished snapshot deletes.
#[test]
fn a_cut_taken_with_an_empty_tail_survives_a_cycle_with_nothing_to_write() {
    let fs = SimFs::new();
    let (storage, rt) = (sim_storage(&fs, 1 << 20), runtime());
    let opts = LogOptions { fsync: FsyncMode::EverySecond, ..opts() };
    let open = || open_collect(Path::new("/d"), &opts, &storage).unwrap();
    {
        let (log, _, _) = open();
        // Each record is written (what EverySecond replies wait for), then
        // the flush syncs it; the first flush's cycle has nothing to write.
        let mut snap = None;
        for (time, key) in [(1, "a"), (2, "b")] {
            rt.block_on(log.durable(log.append(time, &[counter(key, time as i64)]).unwrap())).unwrap();
            snap = snap.or_else(|| Some(log.begin_snapshot().unwrap()));
            rt.block_on(log.flush()).unwrap();
        }
        let mut snap = snap.unwrap();
        snap.add(&counter("a", 1)).unwrap();
        snap.finish(0, 1).unwrap();
    }
    let (_log, _, seen) = open();
    assert_eq!(counter_values(&seen), vec![1, 2], "the record after the cut survives the snapshot");
}
