//! The log's basic contract: what is appended and made durable is replayed,
//! in order, with its engine time; recovery learns the clock and the fence
//! high-water mark; the directory is locked; segments rotate.

mod wal_common;

use std::sync::Arc;

use idem_core::{Change, IdemRecord, IdemState};
use idem_store::wal::sim::{CrashMode, SimFs};
use idem_store::wal::{self, Log, LogOptions, Lsn, Storage};
use idem_store::{FsyncMode, StoreError};
use proptest::prelude::*;
use wal_common::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every change variant survives encode + decode unchanged.
    #[test]
    fn codec_round_trips_every_change(changes in proptest::collection::vec(any_change(), 0..8)) {
        let enc = wal::encode_changes_for_test(&changes);
        prop_assert_eq!(wal::decode_changes_for_test(&enc).unwrap(), changes);
    }

    /// A payload cut short never decodes (and never panics).
    #[test]
    fn codec_rejects_truncated_payloads(changes in proptest::collection::vec(any_change(), 1..4), cut in any::<prop::sample::Index>()) {
        let enc = wal::encode_changes_for_test(&changes);
        let at = cut.index(enc.len());
        prop_assert!(wal::decode_changes_for_test(&enc[..at]).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Records appended to a real log come back from recovery, in order, with their times.
    #[test]
    fn log_round_trips_records(batches in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any_change(), 0..5)), 1..20)) {
        let fs = SimFs::new();
        let storage = sim_storage(&fs, 4096);
        let dir = std::path::Path::new("/data");
        let rt = runtime();
        {
            let (log, _, seen) = open_collect(dir, &opts(), &storage).unwrap();
            prop_assert!(seen.is_empty());
            for (t, changes) in &batches {
                let lsn = log.append(*t, changes).unwrap();
                rt.block_on(log.durable(lsn)).unwrap();
            }
        }
        fs.reboot(CrashMode::DropUnsynced, 0);
        let (_log, rec, seen) = open_collect(dir, &opts(), &storage).unwrap();
        let expected: Vec<(u64, Change)> =
            batches.iter().flat_map(|(t, cs)| cs.iter().map(move |c| (*t, c.clone()))).collect();
        prop_assert_eq!(seen, expected);
        prop_assert_eq!(rec.clock_ms, batches.iter().map(|(t, _)| *t).max().unwrap());
    }
}

#[test]
fn fresh_directory_recovers_nothing_and_lsns_start_at_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, rec, seen) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    assert!(seen.is_empty());
    assert_eq!((rec.clock_ms, rec.fence_high, rec.records), (0, 0, 0));
    assert_eq!(log.last_appended(), Lsn(0));
    let lsn = log.append(5, &[counter("a", 1)]).unwrap();
    assert_eq!(lsn, Lsn(1));
    assert_eq!(log.last_appended(), Lsn(1));
    runtime().block_on(log.durable(lsn)).unwrap();
}

#[test]
fn reopen_on_disk_replays_and_continues_the_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    {
        let (log, _, _) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
        for i in 0..100 {
            let lsn = log.append(1000 + i, &[counter("c", i as i64)]).unwrap();
            rt.block_on(log.durable(lsn)).unwrap();
        }
    }
    let (log, rec, seen) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    assert_eq!(seen.len(), 100);
    assert_eq!(seen[99], (1099, counter("c", 99)));
    assert_eq!(rec.clock_ms, 1099);
    // 100 records plus the mark written at the clean shutdown.
    assert_eq!(rec.records, 101);
    let lsn = log.append(2000, &[counter("c", 100)]).unwrap();
    assert_eq!(lsn, Lsn(102));
    rt.block_on(log.durable(lsn)).unwrap();
    drop(log);
    let (_log, _, seen) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    assert_eq!(seen.len(), 101);
}

#[test]
fn fence_high_is_the_max_of_logged_fences_and_high_water_records() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let dir = std::path::Path::new("/d");
    let rt = runtime();
    {
        let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
        let lock = Change::LockPut { name: "l".into(), owner: "o".into(), fence: 70, lease_until_ms: 1 };
        let idem = Change::IdemPut {
            key: "k".into(),
            record: IdemRecord {
                fingerprint: None,
                state: IdemState::Running { fence: 90, attempt: 1, lease_until_ms: 1 },
            },
        };
        log.append(1, &[lock]).unwrap();
        log.append_fence_high(2, 80).unwrap();
        let lsn = log.append(3, &[idem]).unwrap();
        rt.block_on(log.durable(lsn)).unwrap();
    }
    let (log, rec, _) = open_collect(dir, &opts(), &storage).unwrap();
    assert_eq!(rec.fence_high, 90);
    let lsn = log.append_fence_high(4, 1000).unwrap();
    rt.block_on(log.durable(lsn)).unwrap();
    drop(log);
    let (_log, rec, _) = open_collect(dir, &opts(), &storage).unwrap();
    assert_eq!(rec.fence_high, 1000);
    assert_eq!(rec.clock_ms, 4);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _, _) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    match open_collect(tmp.path(), &opts(), &Storage::default()) {
        Err(StoreError::Locked(p)) => assert_eq!(p, tmp.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(matches!(wal::check(tmp.path()), Err(StoreError::Locked(_))));
    drop(log);
    open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
}

#[test]
fn segments_rotate_at_their_size_and_recovery_reads_them_all() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = Storage { segment_bytes_max: 2048, ..Storage::default() };
    let rt = runtime();
    {
        let (log, _, _) = open_collect(tmp.path(), &opts(), &storage).unwrap();
        for i in 0..300 {
            let lsn = log.append(i, &[counter(&format!("key-{i}"), i as i64)]).unwrap();
            rt.block_on(log.durable(lsn)).unwrap();
        }
        assert!(log.stats().rotations >= 5, "{:?}", log.stats());
    }
    let segments = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("wal-"))
        .count();
    assert!(segments >= 6, "only {segments} segments");
    let (_log, _, seen) = open_collect(tmp.path(), &opts(), &storage).unwrap();
    let values: Vec<i64> = seen
        .iter()
        .map(|(_, c)| match c {
            Change::CounterPut { value, .. } => *value,
            _ => panic!(),
        })
        .collect();
    assert_eq!(values, (0..300).collect::<Vec<_>>());
    let report = wal::check(tmp.path());
    assert!(matches!(report, Err(StoreError::Locked(_))));
}

/// Runs `writers` tasks on `rt`, each appending `per_writer` puts of its own
/// counter (`{prefix}{writer}`, values 0, 1, ...) and waiting until each is
/// durable before the next.
fn write_concurrently(rt: &tokio::runtime::Runtime, log: &Arc<Log>, writers: usize, per_writer: u64, prefix: &str) {
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (log, key) = (log.clone(), format!("{prefix}{w}"));
            tasks.push(tokio::spawn(async move {
                for i in 0..per_writer {
                    let lsn = log.append(i, &[counter(&key, i as i64)]).unwrap();
                    log.durable(lsn).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Many concurrent writers share syncs; every acknowledged record is replayed.
#[test]
fn concurrent_appenders_are_all_durable_and_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let writers = 16;
    let per_writer = 50;
    {
        let (log, _, _) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
        let log = Arc::new(log);
        write_concurrently(&rt, &log, writers, per_writer, "w");
        let stats = log.stats();
        eprintln!("group commit: {stats:?}");
        assert!(stats.syncs <= stats.records);
    }
    let (_log, _, seen) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    assert_eq!(seen.len(), writers * per_writer as usize);
    // Per writer, values come back in the order they were appended.
    for w in 0..writers {
        let key = format!("w{w}");
        let vals: Vec<i64> = seen
            .iter()
            .filter_map(|(_, c)| match c {
                Change::CounterPut { key: k, value } if k == key.as_bytes() => Some(*value),
                _ => None,
            })
            .collect();
        assert_eq!(vals, (0..per_writer as i64).collect::<Vec<_>>());
    }
}

#[test]
fn every_second_mode_acknowledges_once_written_and_flush_syncs() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let dir = std::path::Path::new("/es");
    let opts = LogOptions { fsync: FsyncMode::EverySecond, snapshot_after_bytes: 1 << 30 };
    let rt = runtime();
    {
        let (log, _, _) = open_collect(dir, &opts, &storage).unwrap();
        for i in 0..20 {
            let lsn = log.append(i, &[counter("e", i as i64)]).unwrap();
            rt.block_on(log.durable(lsn)).unwrap();
        }
        rt.block_on(log.flush()).unwrap();
        // Everything flushed survives a crash that keeps only synced bytes.
        fs.crash();
    }
    fs.reboot(CrashMode::DropUnsynced, 1);
    let (_log, _, seen) = open_collect(dir, &opts, &storage).unwrap();
    assert_eq!(seen.len(), 20);
}

#[test]
fn flush_on_an_empty_log_returns_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _, _) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    runtime().block_on(log.flush()).unwrap();
}

/// Prints group-commit figures on the real disk (run by hand:
/// `cargo test -p idem-store --test wal_log -- --ignored --nocapture`).
/// A measurement, not a test: it asserts nothing about time.
#[test]
#[ignore]
fn measure_group_commit() {
    let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    for writers in [1usize, 8, 64, 256] {
        let dir = tmp.path().join(format!("w{writers}"));
        let (log, _, _) = open_collect(&dir, &opts(), &Storage::default()).unwrap();
        let log = Arc::new(log);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let per_writer = 4000 / writers.min(40) as u64;
        let started = std::time::Instant::now();
        write_concurrently(&rt, &log, writers, per_writer, "writer-");
        let secs = started.elapsed().as_secs_f64();
        let s = log.stats();
        eprintln!(
            "{writers:>4} writers: {:>6} records in {secs:.2}s = {:>7.0} durable records/s; {} syncs, \
             fdatasync mean {:.0} us max {} us; records/batch mean {:.1} max {}",
            s.records,
            s.records as f64 / secs,
            s.syncs,
            s.sync_us_total as f64 / s.syncs.max(1) as f64,
            s.sync_us_max,
            s.records as f64 / s.batches.max(1) as f64,
            s.batch_records_max
        );
    }
}

/// Small payloads are checksummed while framed, large ones before the lock
/// and combined in: both paths give records that recovery accepts, and a
/// record over the cap is refused without touching the log.
#[test]
fn small_and_large_records_round_trip_and_an_oversized_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let sizes = [1usize, 4000, 4096, 4097, 100_000, 3 << 20];
    {
        let (log, _, _) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            let lsn = log.append(i as u64, &[counter(&"k".repeat(*n), i as i64)]).unwrap();
            rt.block_on(log.durable(lsn)).unwrap();
        }
        let huge = counter(&"x".repeat(65 << 20), -1);
        assert!(matches!(log.append(0, &[huge]), Err(StoreError::RecordTooLarge { .. })));
        let lsn = log.append(9, &[counter("after", 9)]).unwrap();
        rt.block_on(log.durable(lsn)).unwrap();
    }
    let (_log, _, seen) = open_collect(tmp.path(), &opts(), &Storage::default()).unwrap();
    let mut expected: Vec<Change> = sizes.iter().enumerate().map(|(i, n)| counter(&"k".repeat(*n), i as i64)).collect();
    expected.push(counter("after", 9));
    assert_eq!(seen.into_iter().map(|(_, c)| c).collect::<Vec<_>>(), expected);
}
