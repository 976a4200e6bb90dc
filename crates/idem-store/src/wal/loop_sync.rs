//! Group commit on the caller's own event loop (Always mode).
//!
//! A server that runs its connections on single-threaded event loops, one
//! per core, marks each loop thread with [`LoopSync::enter`] and calls
//! [`LoopSync::before_park`] whenever the loop has nothing left to run. A
//! record appended on such a thread does not wake the writer thread; its
//! task's durable wait notes the LSN it needs in the thread, and when the
//! loop runs dry the loop itself writes and syncs the tail (everything every
//! loop appended so far) and wakes the waiters the sync covers, its own ones
//! without leaving the thread.
//!
//! This is how Redis's `appendfsync always` syncs, inside its event loop, but
//! with several loops: while one loop waits for its `fdatasync`, the others
//! keep serving. A loop that runs dry while another thread's sync is in
//! progress files its need (`Shared::defer`) and goes back to serving I/O;
//! the syncing thread, once done, wakes the loops whose records its sync did
//! not cover (through each loop's [`Nudges`] task), and they sync. The
//! hand-off to a writer thread and back (a futex wake, a context switch and a
//! cross-thread task wake-up per sync cycle) is gone from the hot path.
//!
//! Appends and waits on other threads (a multi-threaded runtime, the HTTP
//! API, the ticker) still go through the writer thread. A waiter there that
//! may depend on a loop's record nobody has woken the writer for wakes it
//! (`Shared::unwoken`), so every waiter is covered by some sync.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::writer::{Shared, Writer};
use crate::FsyncMode;

thread_local! {
    /// This thread is an event loop that syncs its own waits.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
    /// The highest LSN a task of this loop waits to see synced.
    static LOOP_WANT: Cell<u64> = const { Cell::new(0) };
    /// Wakes this loop (the waker of its [`LoopSync::nudges`] task).
    static LOOP_WAKER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Whether the calling thread is an event loop that syncs its own waits.
pub(crate) fn in_loop() -> bool {
    IN_LOOP.with(Cell::get)
}

/// Notes, on a loop thread, that a task waits for `lsn` to be synced.
pub(crate) fn note_wait(lsn: u64) {
    LOOP_WANT.with(|w| w.set(w.get().max(lsn)));
}

/// Lets an event loop thread do the group commit for its own connections;
/// get one from [`super::Log::loop_sync`].
#[derive(Clone)]
pub struct LoopSync {
    pub(crate) shared: Arc<Shared>,
    pub(crate) writer: Arc<Mutex<Writer>>,
}

impl std::fmt::Debug for LoopSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSync").field("mode", &self.shared.mode).finish()
    }
}

impl LoopSync {
    /// Marks the calling thread as an event loop that will call
    /// [`LoopSync::before_park`] whenever it runs out of work and runs
    /// [`LoopSync::nudges`] as a task. Call it once, on the loop thread,
    /// before the loop runs anything. In EverySecond mode it does nothing:
    /// the writer thread keeps the one-second rhythm.
    pub fn enter(&self) {
        if self.shared.mode == FsyncMode::Always {
            IN_LOOP.with(|l| l.set(true));
        }
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
    /// a sync that this loop could not start because that one was running.
    pub fn nudges(&self) -> Nudges {
        Nudges
    }

    /// Makes every record a task of this loop waits for durable, unless
    /// that is already so. Call it when the loop has nothing left to run,
    /// before it waits for I/O. It blocks the thread for the write and the
    /// `fdatasync`, and wakes the tasks the sync covers. When another
    /// thread's sync is in progress it returns at once instead, so that the
    /// loop keeps serving, and that thread wakes the loop when it is done.
    pub fn before_park(&self) {
        let want = LOOP_WANT.with(|w| w.replace(0));
        if want <= self.shared.synced.load(Ordering::Acquire) {
            return;
        }
        let mut deferred = false;
        loop {
            if let Some(writer) = self.writer.try_lock() {
                return self.commit(writer, want);
            }
            if deferred {
                // The holder had not finished when this loop filed its
                // request, so it will see it after it unlocks.
                note_wait(want);
                return;
            }
            let waker = LOOP_WAKER.with(|w| w.borrow().clone());
            let Some(waker) = waker else {
                // No nudge task on this loop: wait for the sync in progress.
                return self.commit(self.writer.lock(), want);
            };
            self.shared.defer(want, waker);
            deferred = true;
            // Retried once: if the holder unlocked before the request was
            // filed, it may have missed it, but then the lock is free now
            // (or held by a later holder, which will see the request).
        }
    }
}

impl LoopSync {
    /// With the writer held: syncs up to `want` unless that is done already,
    /// releases the writer, then wakes the loops that filed requests while
    /// it was held (after the release, so that a woken loop can take it).
    fn commit(&self, mut writer: parking_lot::MutexGuard<'_, Writer>, want: u64) {
        // Every record up to `want` was appended before its task waited, so
        // it is in the tail this cycle takes, or was written by an earlier
        // cycle that this one's sync covers. After a failure `cycle` returns
        // at once, and the failure has already woken every waiter.
        if want > self.shared.synced.load(Ordering::Acquire) {
            writer.cycle();
        }
        drop(writer);
        self.shared.wake_deferred();
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
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::wal::sim::SimFs;
    use crate::wal::{Log, LogOptions, Storage};

    /// A loop that runs dry while another thread holds the writer does not
    /// block: it files its request, and the holder's `wake_deferred` wakes
    /// it to sync its records.
    #[test]
    fn a_loop_that_finds_a_sync_in_progress_is_woken_to_sync_its_own() {
        let fs = SimFs::new();
        let storage = Storage { vfs: Arc::new(fs.clone()), segment_bytes_max: 1 << 20, prealloc_after_bytes: None };
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
        // The writer thread goes to sleep; the loop's append leaves it so.
        std::thread::sleep(Duration::from_millis(50));

        let held = sync.writer.lock();
        let appender = log.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let lsn = appender.append(1, &[]).unwrap();
            let outcome = appender.durable(lsn).await;
            done_tx.send(outcome.is_ok()).unwrap();
        });
        let start = Instant::now();
        while sync.shared.deferred.lock().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "the loop never filed its request");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(done_rx.try_recv().is_err(), "acknowledged while the writer was held");
        drop(held);
        sync.shared.wake_deferred();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the loop was not woken to sync");
        stop.send(()).unwrap();
        thread.join().unwrap();
    }
}
