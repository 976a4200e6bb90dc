//! The registry of tasks waiting for their records to become durable.
//!
//! Each waiter is filed under the LSN it needs, and a publish wakes exactly
//! the waiters its new marks cover: a task whose record went into the next
//! batch is not woken by the sync of the current one (a broadcast would wake
//! every waiting task at every sync, about twice per request under load).
//!
//! A leaf module: the future that files entries here ([`super::state`]'s
//! `DurableWait`) checks the log's marks under this registry's lock.

use std::collections::BTreeMap;
use std::task::Waker;

use parking_lot::{Mutex, MutexGuard};

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
    entries: BTreeMap<WaiterKey, (Mark, Waker)>,
}

impl Registry {
    /// Files a new waiter for `mark` reaching `lsn`; returns its key.
    pub(crate) fn file(&mut self, lsn: u64, mark: Mark, waker: &Waker) -> WaiterKey {
        let key = (lsn, self.next_id);
        self.next_id += 1;
        let previous = self.entries.insert(key, (mark, waker.clone()));
        debug_assert!(previous.is_none(), "waiter ids are unique");
        key
    }

    /// Updates the waker of the waiter at `key`, filing it again when a
    /// publish that did not cover its mark has woken (and removed) it.
    pub(crate) fn refile(&mut self, key: WaiterKey, mark: Mark, waker: &Waker) {
        match self.entries.get_mut(&key) {
            Some((filed_mark, filed)) => {
                debug_assert_eq!(*filed_mark, mark, "a waiter keeps its mark");
                filed.clone_from(waker);
            }
            None => {
                self.entries.insert(key, (mark, waker.clone()));
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

    /// How many waiters are filed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}
