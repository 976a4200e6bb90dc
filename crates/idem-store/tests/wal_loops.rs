//! Group commit on event loop threads (`wal::LoopSync`): loops sync their
//! own connections' records when they run dry, several loops and the writer
//! thread share one log, and no acknowledged record is lost in a crash.

mod wal_common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use idem_store::wal::sim::{CrashMode, SimFs};
use idem_store::wal::{Log, LoopSync, Lsn};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use wal_common::*;

/// One event loop as the server runs it: a current-thread runtime on its own
/// thread that syncs in its park hook and runs the nudge task.
struct TestLoop {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestLoop {
    fn start(sync: LoopSync) -> TestLoop {
        let runtime = sync.runtime().unwrap();
        let handle = runtime.handle().clone();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            sync.enter();
            runtime.block_on(async {
                let _ = stop_rx.await;
            });
        });
        TestLoop { handle, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for TestLoop {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// A fresh log on simulated storage, with one loop serving it.
fn open_with_loop(dir: &str) -> (SimFs, Arc<Log>, TestLoop) {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let (log, _, _) = open_collect(std::path::Path::new(dir), &opts(), &storage).unwrap();
    let log = Arc::new(log);
    let lp = TestLoop::start(log.loop_sync());
    (fs, log, lp)
}

/// Appends `count` records of `key` one at a time, each acknowledged only
/// once durable; returns the acknowledged values (all of them, or those
/// before the first error).
async fn append_acked(log: Arc<Log>, key: String, count: i64, acked: Arc<Mutex<BTreeSet<(String, i64)>>>) {
    for i in 0..count {
        let Ok(lsn) = log.append(i as u64, &[counter(&key, i)]) else { return };
        if log.durable(lsn).await.is_err() {
            return;
        }
        acked.lock().unwrap().insert((key.clone(), i));
    }
}

fn recovered_pairs(seen: &[(u64, idem_core::Change)]) -> BTreeSet<(String, i64)> {
    seen.iter()
        .map(|(_, c)| match c {
            idem_core::Change::CounterPut { key, value } => (String::from_utf8(key.to_vec()).unwrap(), *value),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// Three loops and a multi-threaded runtime (which goes through the writer
/// thread) append to one log at once; every record is acknowledged, and
/// after a crash that keeps only synced bytes every one of them is replayed.
#[test]
fn loops_and_the_writer_thread_share_a_log_and_every_ack_is_durable() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 64 << 10);
    let dir = std::path::Path::new("/loops");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let per_task = 40;
    {
        let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
        let log = Arc::new(log);
        let loops: Vec<TestLoop> = (0..3).map(|_| TestLoop::start(log.loop_sync())).collect();
        let other = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut tasks = Vec::new();
        for (l, lp) in loops.iter().enumerate() {
            for t in 0..8 {
                let fut = append_acked(log.clone(), format!("loop{l}-{t}"), per_task, acked.clone());
                tasks.push(lp.handle.spawn(fut));
            }
        }
        for t in 0..8 {
            tasks.push(other.spawn(append_acked(log.clone(), format!("mt-{t}"), per_task, acked.clone())));
        }
        other.block_on(async {
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(60), t).await.expect("a waiter was never woken").unwrap();
            }
        });
        assert_eq!(acked.lock().unwrap().len(), 32 * per_task as usize, "every record acknowledged");
        let stats = log.stats();
        assert!(stats.syncs > 0 && stats.syncs <= stats.records, "{stats:?}");
        fs.crash();
        drop(loops);
    }
    fs.reboot(CrashMode::DropUnsynced, 7);
    let (_log, _, seen) = open_collect(dir, &opts(), &storage).unwrap();
    let recovered = recovered_pairs(&seen);
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked.difference(&recovered).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

/// The crash lands while loops are still appending: whatever was
/// acknowledged before it is replayed, under each crash mode, with one loop
/// (which gathers records before it syncs) and with two.
#[test]
fn a_crash_during_loop_commits_loses_no_acknowledged_record() {
    let cases = [(1, CrashMode::DropUnsynced), (2, CrashMode::KeepPrefix), (3, CrashMode::RandomSectors)];
    for (loop_count, (seed, mode)) in [1, 2].into_iter().flat_map(|n| cases.map(|c| (n, c))) {
        let fs = SimFs::new();
        let storage = sim_storage(&fs, 32 << 10);
        let dir = std::path::Path::new("/loops-crash");
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        {
            let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
            let log = Arc::new(log);
            let loops: Vec<TestLoop> = (0..loop_count).map(|_| TestLoop::start(log.loop_sync())).collect();
            let mut tasks = Vec::new();
            for (l, lp) in loops.iter().enumerate() {
                for t in 0..12 / loop_count {
                    let fut = append_acked(log.clone(), format!("l{l}-{t}"), 1_000_000, acked.clone());
                    tasks.push(lp.handle.spawn(fut));
                }
            }
            // Crash once a few hundred records are acknowledged.
            let started = std::time::Instant::now();
            while acked.lock().unwrap().len() < 300 {
                assert!(started.elapsed() < Duration::from_secs(60), "{loop_count} loops: acknowledgements stalled");
                std::thread::sleep(Duration::from_millis(1));
            }
            fs.crash();
            let rt = runtime();
            rt.block_on(async {
                for t in tasks {
                    tokio::time::timeout(Duration::from_secs(60), t)
                        .await
                        .expect("a task hung after the crash")
                        .unwrap();
                }
            });
            assert!(log.failure().is_some(), "the crash failed the log");
            drop(loops);
        }
        fs.reboot(mode, seed);
        let (_log, _, seen) = open_collect(dir, &opts(), &storage).unwrap();
        let recovered = recovered_pairs(&seen);
        let acked = acked.lock().unwrap();
        assert!(acked.len() >= 300);
        let lost: Vec<_> = acked.difference(&recovered).collect();
        assert!(lost.is_empty(), "{loop_count} loops, {mode:?}: acknowledged but lost: {lost:?}");
    }
}

/// A record appended on a loop that no task of the loop waits for (its
/// client went away) is still synced for a waiter on another thread: the
/// writer thread, which the loop's append did not wake, is woken by that
/// waiter.
#[test]
fn a_waiter_off_the_loops_gets_a_record_no_loop_task_waits_for() {
    let (_fs, log, lp) = open_with_loop("/orphan");
    // Let the writer thread go to sleep first, so that the loop's append
    // finds it waiting and leaves it asleep.
    std::thread::sleep(Duration::from_millis(50));
    let appender = log.clone();
    let lsn: Lsn =
        runtime().block_on(lp.handle.spawn(async move { appender.append(1, &[counter("o", 1)]).unwrap() })).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    runtime()
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), log.durable(lsn)).await })
        .expect("the record was never synced")
        .unwrap();
}

/// A loop whose sync fails hands the error to every waiter, keeps running,
/// and refuses later appends.
#[test]
fn a_failed_sync_on_a_loop_fails_its_waiters_and_the_log() {
    let (fs, log, lp) = open_with_loop("/fail");
    let rt = runtime();
    let first = log.clone();
    rt.block_on(lp.handle.spawn(async move {
        let lsn = first.append(1, &[counter("f", 1)]).unwrap();
        first.durable(lsn).await.unwrap();
    }))
    .unwrap();
    fs.fail_sync_at(1);
    let second = log.clone();
    let result = rt
        .block_on(lp.handle.spawn(async move {
            let lsn = second.append(2, &[counter("f", 2)]).unwrap();
            tokio::time::timeout(Duration::from_secs(10), second.durable(lsn)).await
        }))
        .unwrap();
    assert!(result.expect("the waiter was never woken").is_err());
    assert!(log.failure().is_some());
    assert!(log.append(3, &[counter("f", 3)]).is_err());
}

/// In EverySecond mode loops write their connections' records and
/// acknowledge them without a sync; the writer thread, asleep without a
/// deadline when the first of them arrives, is woken to keep the
/// one-second rhythm, so every acknowledged record is synced within about a
/// second with no further activity (a power loss after that loses none).
#[test]
fn every_second_loops_acknowledge_on_write_and_the_writer_syncs_within_a_second() {
    let fs = SimFs::new();
    let storage = sim_storage(&fs, 1 << 20);
    let dir = std::path::Path::new("/every-second");
    let opts = idem_store::wal::LogOptions { fsync: idem_store::FsyncMode::EverySecond, ..opts() };
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    {
        let (log, _, _) = open_collect(dir, &opts, &storage).unwrap();
        let log = Arc::new(log);
        let loops: Vec<TestLoop> = (0..2).map(|_| TestLoop::start(log.loop_sync())).collect();
        // Let the writer thread fall asleep with nothing to sync.
        std::thread::sleep(Duration::from_millis(50));
        let syncs_before = fs.syncs();
        let mut tasks = Vec::new();
        for (l, lp) in loops.iter().enumerate() {
            for t in 0..4 {
                tasks.push(lp.handle.spawn(append_acked(log.clone(), format!("es{l}-{t}"), 50, acked.clone())));
            }
        }
        runtime().block_on(async {
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(60), t).await.expect("a waiter was never woken").unwrap();
            }
        });
        assert_eq!(acked.lock().unwrap().len(), 400, "every record acknowledged");
        // A sync per batch would be dozens (8 concurrent tasks, 400
        // records); the rhythm allows one per second of the run (plus the
        // first, which an idle writer starts).
        let syncs = fs.syncs() - syncs_before;
        assert!(syncs <= 10, "acknowledgements waited for syncs: {syncs} syncs for 400 records");
        // No flush, no further append: only the writer's rhythm syncs them.
        std::thread::sleep(Duration::from_millis(2500));
        fs.crash();
        drop(loops);
    }
    fs.reboot(CrashMode::DropUnsynced, 11);
    let (_log, _, seen) = open_collect(dir, &opts, &storage).unwrap();
    let recovered = recovered_pairs(&seen);
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked.difference(&recovered).collect();
    assert!(lost.is_empty(), "acknowledged, left a second and more, but lost: {} records", lost.len());
}

/// One loop commits its own records when it runs dry; with several loops
/// the writer thread commits every record (a loop never blocks in a sync
/// while the others wait for the writer), and each loop's waiters are woken
/// on their loop. Either way every record is acknowledged.
#[test]
fn one_loop_commits_for_itself_and_several_leave_it_to_the_writer_thread() {
    for loop_count in [1, 2, 3] {
        let fs = SimFs::new();
        let storage = sim_storage(&fs, 1 << 20);
        let (log, _, _) = open_collect(std::path::Path::new("/who"), &opts(), &storage).unwrap();
        let log = Arc::new(log);
        let loops: Vec<TestLoop> = (0..loop_count).map(|_| TestLoop::start(log.loop_sync())).collect();
        // Every loop has entered before the first append: the way a server starts.
        while log.stats().loop_count < loop_count {
            std::thread::yield_now();
        }
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let per_task = 20;
        let tasks: Vec<_> = loops
            .iter()
            .enumerate()
            .flat_map(|(l, lp)| (0..4).map(move |t| (l, t, lp.handle.clone())).collect::<Vec<_>>())
            .map(|(l, t, h)| h.spawn(append_acked(log.clone(), format!("l{l}-{t}"), per_task, acked.clone())))
            .collect();
        runtime().block_on(async {
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(60), t).await.expect("a waiter was never woken").unwrap();
            }
        });
        assert_eq!(acked.lock().unwrap().len(), loop_count * 4 * per_task as usize);
        let stats = log.stats();
        if loop_count == 1 {
            assert!(stats.loop_cycles > 0, "one loop commits for itself: {stats:?}");
        } else {
            assert_eq!(stats.loop_cycles, 0, "{loop_count} loops leave every commit to the writer thread: {stats:?}");
        }
        drop(loops);
    }
}
