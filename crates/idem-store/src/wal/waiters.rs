//! Tasks waiting for their records to become durable.
//!
//! Each waiter is filed under the LSN it needs, and a publish wakes exactly
//! the waiters its new marks cover: a task whose record went into the next
//! batch is not woken by the sync of the current one (a broadcast would wake
//! every waiting task at every sync, about twice per request under load).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::loop_sync;
use super::writer::Shared;
use crate::StoreError;

/// Which mark a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Records on stable storage.
    Synced,
    /// Records handed to the OS (EverySecond mode).
    Written,
}

/// The registry of waiting tasks, by `(lsn, id)`.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    entries: BTreeMap<(u64, u64), (Mark, Waker)>,
}

impl Waiters {
    /// Wakes every waiter that `written`/`synced` cover, or every waiter when
    /// `all` (the log failed). The marks must be stored before this is called.
    pub(crate) fn wake(&self, written: u64, synced: u64, all: bool) {
        let mut woken = Vec::new();
        {
            let mut reg = self.inner.lock();
            if all {
                woken.extend(std::mem::take(&mut reg.entries).into_values().map(|(_, w)| w));
            } else {
                // Entries above `written` stay; of the rest, Synced waiters
                // above `synced` stay too.
                let later = reg.entries.split_off(&(written.saturating_add(1), 0));
                let covered = std::mem::replace(&mut reg.entries, later);
                for (key, (mark, waker)) in covered {
                    if mark == Mark::Synced && key.0 > synced {
                        reg.entries.insert(key, (mark, waker));
                    } else {
                        woken.push(waker);
                    }
                }
            }
        }
        for waker in woken {
            waker.wake();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

/// Resolves once `mark` reaches `lsn`, or with an error once the log fails.
pub(crate) struct Wait<'a> {
    shared: &'a Shared,
    mark: Mark,
    lsn: u64,
    key: Option<(u64, u64)>,
}

impl<'a> Wait<'a> {
    pub(crate) fn new(shared: &'a Shared, mark: Mark, lsn: u64) -> Wait<'a> {
        Wait { shared, mark, lsn, key: None }
    }

    fn reached(&self) -> bool {
        self.lsn <= self.shared.mark_lsn(self.mark).load(Ordering::Acquire)
    }

    fn outcome(&self) -> Option<Result<(), StoreError>> {
        if self.reached() {
            return Some(Ok(()));
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Some(Err(self.shared.failed_error()));
        }
        None
    }
}

impl Future for Wait<'_> {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(done) = this.outcome() {
            return Poll::Ready(done);
        }
        let mut reg = this.shared.waiters.inner.lock();
        // Checked again under the lock: a publish stores its marks before it
        // takes the lock, so either this sees them or the publish sees the entry.
        if let Some(done) = this.outcome() {
            if let Some(key) = this.key.take() {
                reg.entries.remove(&key);
            }
            return Poll::Ready(done);
        }
        match this.key {
            Some(key) => match reg.entries.get_mut(&key) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                // Woken (and removed) by a publish that did not cover the
                // mark this waiter needs: file it again.
                None => {
                    reg.entries.insert(key, (this.mark, cx.waker().clone()));
                }
            },
            None => {
                let key = (this.lsn, reg.next_id);
                reg.next_id += 1;
                reg.entries.insert(key, (this.mark, cx.waker().clone()));
                this.key = Some(key);
            }
        }
        drop(reg);
        if this.mark == this.shared.loop_mark() && loop_sync::in_loop() {
            loop_sync::note_wait(this.lsn);
        } else {
            this.shared.wake_writer_for_loop_records();
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.shared.waiters.inner.lock().entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsyncMode;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(Default::default()));
        (f.clone(), Waker::from(f))
    }

    fn poll(w: &mut Wait<'_>, waker: &Waker) -> Poll<Result<(), StoreError>> {
        Pin::new(w).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_publish_wakes_only_the_waiters_it_covers() {
        let shared = Shared::new(FsyncMode::Always, 1, 0);
        let (f5, w5) = flag();
        let (f9, w9) = flag();
        let mut a = Wait::new(&shared, Mark::Synced, 5);
        let mut b = Wait::new(&shared, Mark::Synced, 9);
        assert!(poll(&mut a, &w5).is_pending());
        assert!(poll(&mut b, &w9).is_pending());
        shared.written.store(6, Ordering::Release);
        shared.synced.store(6, Ordering::Release);
        shared.waiters.wake(6, 6, false);
        assert!(f5.0.load(Ordering::SeqCst));
        assert!(!f9.0.load(Ordering::SeqCst), "LSN 9 is not synced yet");
        assert!(matches!(poll(&mut a, &w5), Poll::Ready(Ok(()))));
        drop(a);
        assert_eq!(shared.waiters.len(), 1);
        drop(b);
        assert_eq!(shared.waiters.len(), 0, "a dropped waiter leaves no entry");
    }

    #[test]
    fn written_covers_written_waiters_but_not_synced_ones() {
        let shared = Shared::new(FsyncMode::EverySecond, 1, 0);
        let (fw, ww) = flag();
        let (fs, ws) = flag();
        let mut w = Wait::new(&shared, Mark::Written, 3);
        let mut s = Wait::new(&shared, Mark::Synced, 3);
        assert!(poll(&mut w, &ww).is_pending());
        assert!(poll(&mut s, &ws).is_pending());
        shared.written.store(3, Ordering::Release);
        shared.waiters.wake(3, 0, false);
        assert!(fw.0.load(Ordering::SeqCst));
        assert!(!fs.0.load(Ordering::SeqCst));
        assert!(matches!(poll(&mut w, &ww), Poll::Ready(Ok(()))));
        assert!(poll(&mut s, &ws).is_pending(), "re-polled while still waiting: stays filed");
        assert_eq!(shared.waiters.len(), 1);
    }

    #[test]
    fn a_failure_wakes_everyone_with_an_error() {
        let shared = Shared::new(FsyncMode::Always, 1, 0);
        let (f, waker) = flag();
        let mut a = Wait::new(&shared, Mark::Synced, 100);
        assert!(poll(&mut a, &waker).is_pending());
        shared.tail.lock().failure = Some("disk on fire".into());
        shared.failed.store(true, Ordering::Release);
        shared.waiters.wake(0, 0, true);
        assert!(f.0.load(Ordering::SeqCst));
        assert!(matches!(poll(&mut a, &waker), Poll::Ready(Err(_))));
    }
}
