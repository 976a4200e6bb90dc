//! The registry of tasks waiting for their records to become durable.
//!
//! Each waiter is filed under the LSN it needs, and a publish wakes exactly
//! the waiters its new marks cover: a task whose record went into the next
//! batch is not woken by the sync of the current one (a broadcast would wake
//! every waiting task at every sync, about twice per request under load).
//!
//! A waiter filed on an event loop is woken from another thread through its
//! loop's [`LoopWakes`]: one wake-up of the loop for all its waiters.
//!
//! Depends only on [`super::loop_wakes`]: the future that files entries
//! here ([`super::state`]'s `DurableWait`) checks the log's marks under
//! this registry's lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::Waker;

use parking_lot::{Mutex, MutexGuard};

use super::loop_wakes::{self, LoopWakes};

/// Which mark a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Records on stable storage.
    Synced,
    /// Records handed to the OS (EverySecond mode).
    Written,
}

/// Where a waiter is filed: the LSN it needs, then a unique id.
pub(crate) type WaiterKey = (u64, u64);

/// The registry of tasks waiting for durability, by [`WaiterKey`].
#[derive(Debug, Default)]
pub(crate) struct DurableWaiters {
    inner: Mutex<Registry>,
}

/// The registry's entries, reached through [`DurableWaiters::lock`].
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next_id: u64,
    entries: BTreeMap<WaiterKey, Entry>,
}

/// A filed waiter: its mark, its waker, and the loop it waits on, if any.
#[derive(Debug)]
struct Entry {
    mark: Mark,
    waker: Waker,
    wakes: Option<Arc<LoopWakes>>,
}

impl Registry {
    /// Files a new waiter for `mark` reaching `lsn` on the calling thread
    /// (through its loop when it is one); returns its key.
    pub(crate) fn file(&mut self, lsn: u64, mark: Mark, waker: &Waker) -> WaiterKey {
        let key = (lsn, self.next_id);
        self.next_id += 1;
        let entry = Entry { mark, waker: waker.clone(), wakes: loop_wakes::own() };
        let previous = self.entries.insert(key, entry);
        debug_assert!(previous.is_none(), "waiter ids are unique");
        key
    }

    /// Updates the waker of the waiter at `key`, filing it again when a
    /// publish that did not cover its mark has woken (and removed) it.
    pub(crate) fn refile(&mut self, key: WaiterKey, mark: Mark, waker: &Waker) {
        match self.entries.get_mut(&key) {
            Some(entry) => {
                debug_assert_eq!(entry.mark, mark, "a waiter keeps its mark");
                entry.waker.clone_from(waker);
            }
            None => {
                self.entries.insert(key, Entry { mark, waker: waker.clone(), wakes: loop_wakes::own() });
            }
        }
    }

    /// Removes the waiter at `key`, if it is still filed.
    pub(crate) fn remove(&mut self, key: WaiterKey) {
        self.entries.remove(&key);
    }
}

impl DurableWaiters {
    /// The registry, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock()
    }

    /// Wakes every waiter that `written`/`synced` cover, or every waiter when
    /// `all` (the log failed). The marks must be stored before this is called.
    pub(crate) fn wake(&self, written: u64, synced: u64, all: bool) {
        debug_assert!(all || synced <= written, "synced {synced} <= written {written}");
        let mut woken = Vec::new();
        {
            let mut reg = self.inner.lock();
            if all {
                woken.extend(std::mem::take(&mut reg.entries).into_values());
            } else {
                // Entries above `written` stay; of the rest, Synced waiters
                // above `synced` stay too.
                let later = reg.entries.split_off(&(written.saturating_add(1), 0));
                let covered = std::mem::replace(&mut reg.entries, later);
                for (key, entry) in covered {
                    if entry.mark == Mark::Synced && key.0 > synced {
                        reg.entries.insert(key, entry);
                    } else {
                        woken.push(entry);
                    }
                }
            }
        }
        // A waiter of this thread's own loop (or of no loop) is woken here;
        // one of another loop is handed to it, which costs one wake-up of
        // that loop for all of its waiters.
        let own = loop_wakes::own();
        for Entry { waker, wakes, .. } in woken {
            let now = match wakes {
                Some(l) if !own.as_ref().is_some_and(|o| Arc::ptr_eq(o, &l)) => l.hand(waker),
                _ => Some(waker),
            };
            if let Some(w) = now {
                w.wake();
            }
        }
    }

    /// How many waiters are filed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}
