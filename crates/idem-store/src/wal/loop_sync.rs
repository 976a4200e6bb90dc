//! Group commit on the caller's own event loop, when a log has one loop.
//! In Always mode the loop writes and syncs; in EverySecond mode it writes
//! only, and the writer thread keeps the one-second rhythm of syncs.
//!
//! A server that runs its connections on single-threaded event loops marks
//! each loop thread with [`LoopSync::enter`] and calls
//! [`LoopSync::before_park`] whenever the loop has nothing left to run.
//!
//! **One loop** (`idem serve`'s default): a record appended on the loop does
//! not wake the writer thread; its task's durable wait notes the LSN it needs
//! in the thread, and when the loop runs dry the loop itself writes and syncs
//! the tail and wakes the waiters the sync covers without leaving the thread.
//! This is how Redis's `appendfsync always` syncs, inside its event loop; the
//! hand-off to a writer thread and back (a futex wake, a context switch and a
//! cross-thread wake-up per sync cycle) is gone from the hot path, and the
//! loop can delay its commit to gather more records ([`Gather`]).
//!
//! **Several loops** (`idem gateway`'s default, one per core): the loops do
//! not commit. A loop that syncs is blocked for the `fdatasync` and serves
//! none of its connections meanwhile, and a record waits for the end of its
//! loop's turn before its commit even starts; the other loops, finding the
//! writer held, file their need and wait for a second sync in turn. Instead
//! every append wakes the writer thread if it sleeps, and the writer thread
//! commits back to back while records keep arriving, as a dedicated syncer:
//! the records of one sync's duration go into the next. Each loop's waiters
//! are handed to their loop in one go ([`super::loop_wakes`]: one wake-up
//! of the loop per sync, not one per waiter), and the loops only serve.
//! Which of the two a log does is decided by the number of loops entered
//! ([`LogState::loops_commit`]); a loop that entered while it was the only
//! one makes sure, once others entered, that the writer thread was woken
//! for the records it appended before.
//!
//! With one loop, a loop that runs dry while another thread's sync is in
//! progress (the writer thread's, for records appended off the loop) files
//! its need (`LogState::defer`) and goes back to serving I/O; the syncing
//! thread, once done, wakes the loop if its records were not covered
//! (through its [`Nudges`] task), and it syncs them.
//!
//! Appends and waits on other threads (a multi-threaded runtime, the HTTP
//! API, the ticker) go through the writer thread. A waiter there that may
//! depend on a loop's record nobody has woken the writer for wakes it
//! (`LogState`'s `unwoken` flag), so every waiter is covered by some sync.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::loop_thread;
use super::loop_wakes;
use super::state::{self, LogState};
use super::writer::Writer;
use crate::FsyncMode;

thread_local! {
    /// Wakes this loop (the waker of its [`LoopSync::nudges`] task).
    static LOOP_WAKER: RefCell<Option<Waker>> = const { RefCell::new(None) };
    /// How many records the loop's last commit covered.
    static LAST_BATCH: Cell<u64> = const { Cell::new(0) };
    /// The loop's commit being delayed for more records, if it is.
    static GATHER: Cell<Option<Gather>> = const { Cell::new(None) };
    /// How long the loop's commits took lately (a moving average of the
    /// write and sync, [`Gather`]).
    static SYNC_TIME: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// The shortest quiet gap that ends a delayed commit ([`Gather`]).
pub(crate) const GATHER_GAP_MIN: Duration = Duration::from_micros(5);

/// The longest a loop delays a commit to gather records ([`Gather`]).
pub(crate) const GATHER_MAX: Duration = Duration::from_micros(200);

/// A commit a loop delays so that more records join it: with 50 clients
/// and one request each in flight, syncing the moment the loop first runs
/// dry splits the clients into two halves that take turns (one half's
/// requests arrive while the other's sync runs), and each sync covers half
/// of them. The loop delays only when its last commit covered at least
/// two records (its clients are concurrent; a lone client never waits).
///
/// It commits once no record arrived for a quiet gap, or after
/// [`GATHER_MAX`] in all. The gap weighs what waiting costs against what
/// it saves: waiting `g` longer delays every pending record by `g`, and a
/// record that makes it into this sync is spared a sync of its own, about
/// one sync's time. So the loop waits while `g × pending` stays under its
/// recent sync time: long for a few records, short for many, and never under
/// [`GATHER_GAP_MIN`], about what one empty poll takes. A slower disk
/// makes the gap longer, as it should: each sync saved is worth more.
///
/// Only a log's single loop gathers: the loop polls while it waits, and
/// with several loops that polling takes the cores the other loops and the
/// clients need (measured in docs/benchmarks-log.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gather {
    /// When the loop first ran dry with these records pending.
    since: Instant,
    /// When the number of pending records last grew.
    last_arrival: Instant,
    last_pending: u64,
}

impl Gather {
    /// Whether to keep delaying (the new state) or commit now (`None`),
    /// given the state so far, the records pending (appended and not
    /// synced), the time, how many records the last commit covered, and
    /// how long the loop's recent syncs took.
    pub(crate) fn step(
        state: Option<Gather>,
        pending: u64,
        now: Instant,
        last_batch: u64,
        sync: Duration,
    ) -> Option<Gather> {
        if last_batch < 2 {
            return None;
        }
        let mut g = state.unwrap_or(Gather { since: now, last_arrival: now, last_pending: pending });
        if pending > g.last_pending {
            g.last_arrival = now;
            g.last_pending = pending;
        }
        let pending = u32::try_from(pending.max(1)).unwrap_or(u32::MAX);
        let gap = (sync / pending).clamp(GATHER_GAP_MIN, GATHER_MAX);
        let quiet = now.saturating_duration_since(g.last_arrival) >= gap;
        let overdue = now.saturating_duration_since(g.since) >= GATHER_MAX;
        (!quiet && !overdue).then_some(g)
    }
}

/// Lets an event loop thread do the group commit for its own connections;
/// get one from [`super::Log::loop_sync`].
#[derive(Clone)]
pub struct LoopSync {
    state: Arc<LogState>,
    writer: Arc<Mutex<Writer>>,
}

impl std::fmt::Debug for LoopSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSync").field("mode", &self.state.mode()).finish()
    }
}

impl LoopSync {
    /// The handle of the log whose state and writer these are.
    pub(crate) fn new(state: Arc<LogState>, writer: Arc<Mutex<Writer>>) -> LoopSync {
        LoopSync { state, writer }
    }

    /// Marks the calling thread as an event loop that will call
    /// [`LoopSync::before_park`] whenever it runs out of work and runs
    /// [`LoopSync::nudges`] as a task. Call it once, on the loop thread,
    /// before the loop runs anything. In EverySecond mode the loop writes
    /// its records without syncing them, and the writer thread keeps the
    /// one-second rhythm of syncs.
    pub fn enter(&self) {
        loop_thread::enter();
        loop_wakes::enter();
        self.state.add_loop();
    }

    /// A single-threaded tokio runtime wired as one of this log's loops: it
    /// calls [`LoopSync::before_park`] whenever it runs dry and runs the
    /// [`LoopSync::nudges`] task. Drive it (`block_on`) on a thread that
    /// has called [`LoopSync::enter`]. (The server builds its loops through
    /// `idem_core::LoopHooks` instead, which does the same.)
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let parked = self.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || parked.before_park())
            .build()?;
        runtime.spawn(self.nudges());
        Ok(runtime)
    }

    /// A task to run on the loop for as long as it runs (it never ends): a
    /// sync on another thread wakes it when this loop's records still need
    /// a sync that this loop could not start because that one was running,
    /// and when it made some of this loop's waiters durable (the task then
    /// wakes them on the loop, all for one wake-up of the loop).
    pub fn nudges(&self) -> Nudges {
        Nudges
    }

    /// Makes every record a task of this loop waits for durable, unless
    /// that is already so. Call it when the loop has nothing left to run,
    /// before it waits for I/O. It blocks the thread for the write and (in
    /// Always mode) the `fdatasync`, and wakes the tasks the cycle covers. When another
    /// thread's sync is in progress it returns at once instead, so that the
    /// loop keeps serving, and that thread wakes the loop when it is done.
    /// While records are still arriving it may delay the commit instead
    /// ([`Gather`], at most [`GATHER_MAX`]): it then wakes the loop's nudge
    /// task, so that the loop polls for I/O without blocking and calls this
    /// again. With several loops the writer thread commits instead, and this
    /// only wakes it for records the loop appended while it was the only one.
    pub fn before_park(&self) {
        // Synced in Always mode, written in EverySecond mode.
        let done = self.state.loop_done();
        if !self.state.loops_commit() {
            // The writer thread commits; the appends woke it. One that a
            // loop made while loops still committed for themselves (before
            // another loop entered) may not have: wake it for those.
            if loop_thread::take_wanted() > done {
                self.state.wake_writer_for_loop_records();
            }
            state::take_loop_wait_since();
            return;
        }
        if loop_thread::wanted() <= done {
            loop_thread::take_wanted();
            state::take_loop_wait_since();
            GATHER.with(|g| g.set(None));
            return;
        }
        if self.gather(done) {
            return;
        }
        let want = loop_thread::take_wanted();
        let mut deferred = false;
        loop {
            if let Some(writer) = self.writer.try_lock() {
                return self.commit(writer, want);
            }
            if deferred {
                // The holder had not finished when this loop filed its
                // request, so it will see it after it unlocks.
                loop_thread::note_wait(want);
                return;
            }
            let waker = LOOP_WAKER.with(|w| w.borrow().clone());
            let Some(waker) = waker else {
                // No nudge task on this loop: wait for the sync in progress.
                return self.commit(self.writer.lock(), want);
            };
            self.state.defer(want, waker);
            deferred = true;
            // Retried once: if the holder unlocked before the request was
            // filed, it may have missed it, but then the lock is free now
            // (or held by a later holder, which will see the request).
        }
    }
}

impl LoopSync {
    /// Whether to delay the commit so that more records join it: while the
    /// loop's last commit covered several records (its connections are
    /// concurrent) and records keep arriving, the loop polls for I/O
    /// instead of syncing, until no record arrived for a short gap or the
    /// delay reaches its bound. It wakes its nudge task, so the runtime
    /// polls for I/O without blocking and calls `before_park` again.
    fn gather(&self, synced: u64) -> bool {
        // Gathering saves syncs; EverySecond mode has none to save here.
        if self.state.mode() != FsyncMode::Always || self.state.loop_count() > 1 {
            return false;
        }
        let pending = self.state.appended().saturating_sub(synced);
        let next = Gather::step(
            GATHER.with(Cell::get),
            pending,
            Instant::now(),
            LAST_BATCH.with(Cell::get),
            SYNC_TIME.with(Cell::get),
        );
        // The runtime sees work scheduled by this hook, so it polls for I/O
        // without blocking, runs what arrived, and calls the hook again.
        let woke = next.is_some() && LOOP_WAKER.with(|w| w.borrow().as_ref().map(Waker::wake_by_ref)).is_some();
        GATHER.with(|g| g.set(next.filter(|_| woke)));
        woke
    }

    /// With the writer held: syncs up to `want` unless that is done already,
    /// releases the writer, then wakes the loops that filed requests while
    /// it was held (after the release, so that a woken loop can take it).
    fn commit(&self, mut writer: parking_lot::MutexGuard<'_, Writer>, want: u64) {
        // Every record up to `want` was appended before its task waited, so
        // it is in the tail this cycle takes, or was written by an earlier
        // cycle that this one's sync covers. After a failure `cycle` returns
        // at once, and the failure has already woken every waiter.
        let before = self.state.loop_done();
        let since = state::take_loop_wait_since();
        if want > before {
            let start = Instant::now();
            if let Some(since) = since {
                self.state.timing().loop_delay.add(start.saturating_duration_since(since).as_micros() as u64);
            }
            let committed = writer.cycle();
            let took = start.elapsed();
            self.state.count_loop_cycle();
            // A moving average over about eight commits: one slow sync
            // does not stretch the next gathers much.
            SYNC_TIME.with(|t| t.set((t.get() * 7 + took) / 8));
            let after = self.state.loop_done();
            // A cycle covers every record appended before it took the tail,
            // and this loop's records were appended before its tasks waited;
            // only a cycle that did not run (the log failed or was closed)
            // leaves them uncovered.
            assert!(after >= want || !committed, "a loop's commit up to {want} reached {after}");
            LAST_BATCH.with(|b| b.set(after.saturating_sub(before)));
        }
        drop(writer);
        self.state.wake_deferred();
    }
}

/// The loop's nudge task ([`LoopSync::nudges`]).
#[derive(Debug)]
pub struct Nudges;

impl Future for Nudges {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        LOOP_WAKER.with(|w| {
            let mut w = w.borrow_mut();
            match &mut *w {
                Some(waker) => waker.clone_from(cx.waker()),
                None => *w = Some(cx.waker().clone()),
            }
        });
        loop_wakes::run_own(cx.waker());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::wal::sim::SimFs;
    use crate::wal::{Log, LogOptions, Storage};

    /// The commit delay: none for a lone client, kept while records keep
    /// arriving within the gap, ended by a quiet gap or by the bound.
    #[test]
    fn gather_delays_only_while_concurrent_records_keep_arriving() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let us = Duration::from_micros;
        let sync = us(100);
        // The last commit covered one record: no delay at all.
        assert_eq!(Gather::step(None, 1, t0, 1, sync), None);
        assert_eq!(Gather::step(None, 5, t0, 0, sync), None);

        // Concurrent clients: the first dry run starts a delay. With 4
        // records pending and 100 µs syncs the gap is 25 µs.
        let g = Gather::step(None, 4, t0, 20, sync).expect("a delay starts");
        // Nothing new, within the gap: keep waiting.
        let g = Gather::step(Some(g), 4, at(24), 20, sync).expect("within the gap");
        // Nothing new for the whole gap: commit.
        assert_eq!(Gather::step(Some(g), 4, at(25), 20, sync), None);

        // Many records pending: the gap shrinks to its floor (100 µs / 50
        // is 2 µs, under GATHER_GAP_MIN).
        let min = GATHER_GAP_MIN.as_micros() as u64;
        let g = Gather::step(None, 50, t0, 50, sync).unwrap();
        let g = Gather::step(Some(g), 50, at(min - 1), 50, sync).expect("within the floor");
        assert_eq!(Gather::step(Some(g), 50, at(min), 50, sync), None);
        // 10 pending: 10 µs. An arrival restarts the gap, and the larger
        // count shortens it (100 µs / 20 = 5 µs).
        let g = Gather::step(None, 10, t0, 50, sync).unwrap();
        let g = Gather::step(Some(g), 10, at(9), 50, sync).expect("within 10 µs");
        let g = Gather::step(Some(g), 20, at(9), 50, sync).expect("an arrival");
        let g = Gather::step(Some(g), 20, at(13), 50, sync).expect("within 5 µs of it");
        assert_eq!(Gather::step(Some(g), 20, at(14), 50, sync), None);
        // A slower disk gathers longer: 400 µs syncs, 20 pending: 20 µs.
        let slow = us(400);
        let g = Gather::step(None, 20, t0, 50, slow).unwrap();
        let g = Gather::step(Some(g), 20, at(19), 50, slow).expect("within 20 µs");
        assert_eq!(Gather::step(Some(g), 20, at(20), 50, slow), None);
        // No sync measured yet: the floor.
        let g = Gather::step(None, 2, t0, 20, Duration::ZERO).unwrap();
        assert_eq!(Gather::step(Some(g), 2, at(min), 20, Duration::ZERO), None);

        // Arrivals reset the gap, until the bound.
        let max = GATHER_MAX.as_micros() as u64;
        let mut g = Gather::step(None, 1, t0, 20, sync).unwrap();
        let mut now = 0;
        let mut pending = 1;
        let ended_at = loop {
            now += min / 2;
            pending += 1;
            match Gather::step(Some(g), pending, at(now), 20, sync) {
                Some(next) => g = next,
                None => break now,
            }
        };
        assert!(ended_at >= max && ended_at < max + min, "ended at {ended_at} us, bound {max} us");
        // Even a very slow disk does not stretch the gap past the bound.
        let g = Gather::step(None, 2, t0, 20, Duration::from_secs(1)).unwrap();
        assert_eq!(Gather::step(Some(g), 2, at(max), 20, Duration::from_secs(1)), None);
    }

    /// A log on a simulated disk whose event loop runs on its own thread
    /// until `stop` is sent; its writer thread has had time to go to sleep.
    struct LoopOnThread {
        log: Arc<Log>,
        sync: LoopSync,
        handle: tokio::runtime::Handle,
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    }

    impl LoopOnThread {
        fn start() -> LoopOnThread {
            let storage =
                Storage { vfs: Arc::new(SimFs::new()), segment_bytes_max: 1 << 20, prealloc_after_bytes: None };
            let opts = LogOptions { fsync: FsyncMode::Always, snapshot_after_bytes: 1 << 30 };
            let (log, _) = Log::open_on(std::path::Path::new("/d"), &opts, &storage, &mut |_, _| {}).unwrap();
            let log = Arc::new(log);
            let sync = log.loop_sync();
            let runtime = sync.runtime().unwrap();
            let handle = runtime.handle().clone();
            let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let entered = sync.clone();
            let thread = std::thread::spawn(move || {
                entered.enter();
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
            });
            // The writer thread goes to sleep; the loop's appends leave it so.
            std::thread::sleep(Duration::from_millis(50));
            LoopOnThread { log, sync, handle, stop, thread }
        }
    }

    /// Polls `done` until it holds; fails with `what` after 10 s.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A loop that runs dry while another thread holds the writer does not
    /// block: it files its request, and the holder's `wake_deferred` wakes
    /// it to sync its records.
    #[test]
    fn a_loop_that_finds_a_sync_in_progress_is_woken_to_sync_its_own() {
        let LoopOnThread { log, sync, handle, stop, thread } = LoopOnThread::start();

        let held = sync.writer.lock();
        let appender = log.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let lsn = appender.append(1, &[]).unwrap();
            let outcome = appender.durable(lsn).await;
            done_tx.send(outcome.is_ok()).unwrap();
        });
        wait_until("the loop never filed its request", || sync.state.has_deferred());
        assert!(done_rx.try_recv().is_err(), "acknowledged while the writer was held");
        drop(held);
        sync.state.wake_deferred();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the loop was not woken to sync");
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    /// A sync on another thread that covers a loop's waiters hands them to
    /// that loop: they are woken on it, through its nudge task, and their
    /// replies follow. Here the sync runs on the test thread, which holds
    /// the writer, so only that hand-over can wake the loop's tasks.
    #[test]
    fn a_sync_on_another_thread_wakes_the_loops_waiters_through_the_loop() {
        let LoopOnThread { log, sync, handle, stop, thread } = LoopOnThread::start();

        let mut held = sync.writer.lock();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        const TASKS: usize = 8;
        for i in 0..TASKS {
            let appender = log.clone();
            let done_tx = done_tx.clone();
            handle.spawn(async move {
                let lsn = appender.append(1, &[]).unwrap();
                let outcome = appender.durable(lsn).await;
                done_tx.send((i, outcome.is_ok())).unwrap();
            });
        }
        wait_until("the loop's tasks never waited", || sync.state.has_deferred() && sync.state.waiter_count() >= TASKS);
        assert!(done_rx.try_recv().is_err(), "acknowledged before any sync");
        assert!(held.cycle(), "the test thread's sync ran");
        assert_eq!(sync.state.waiter_count(), 0, "the sync covered every waiter");
        let mut done: Vec<_> = (0..TASKS)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).expect("a waiter of the loop was never woken"))
            .collect();
        done.sort();
        assert_eq!(done, (0..TASKS).map(|i| (i, true)).collect::<Vec<_>>());
        drop(held);
        stop.send(()).unwrap();
        thread.join().unwrap();
    }
}
