//! Parked callers (IDEM.BEGIN and LOCK with WAIT). Waiters live only in
//! memory: they are never logged, and a restart forgets them (their
//! connections are gone too).
//!
//! Two kinds of events come from here, merged in time order by `pop_due`:
//! a *handover* when the lease of a record with waiters runs out (the first
//! waiter takes over), and a *timeout* when a waiter's WAIT passes. At equal
//! times the handover goes first, so a waiter whose WAIT ends exactly when
//! the lease ends is served rather than told to retry. Handovers at the same
//! time run in `(Prim, key)` order and timeouts in `WaiterId` order, which
//! keeps fence assignment deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::WaiterId;
use crate::error::CmdError;

/// The primitive a waiter waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Prim {
    /// IDEM.BEGIN waiting for a running attempt to end.
    Idem = 0,
    /// LOCK waiting for the holder to let go.
    Lock = 1,
}

/// One parked request.
#[derive(Clone, Debug)]
pub(super) struct Waiter {
    /// Who to answer.
    pub(super) id: WaiterId,
    /// Engine time at which the WAIT passes.
    pub(super) deadline_ms: u64,
    /// The LEASE of the parked request, used if it is handed the key.
    pub(super) lease_ms: u64,
    /// The FP of a parked IDEM.BEGIN, or the owner of a parked LOCK.
    pub(super) arg: Option<Bytes>,
}

/// The FIFO of one key. `lease_until_ms` mirrors the lease of the record the
/// waiters wait on, so that the handover entry can be found and moved.
#[derive(Debug)]
struct Queue {
    lease_until_ms: u64,
    list: BTreeMap<u64, Waiter>,
}

/// Something `pop_due` found due.
#[derive(Debug)]
pub(super) enum Due {
    /// The lease of this key ran out while callers wait on it.
    Handover(Prim, Bytes),
    /// This waiter's WAIT passed; it has been removed from its queue.
    Timeout(Prim, Bytes, Waiter),
}

/// Every parked caller of one machine.
#[derive(Debug, Default)]
pub(super) struct MachineWaiters {
    /// FIFO queues per key, one map per `Prim`.
    queues: [HashMap<Bytes, Queue>; 2],
    /// Where each waiter is: primitive, key, and its position in the FIFO.
    by_id: HashMap<WaiterId, (Prim, Bytes, u64)>,
    /// WAIT deadlines.
    deadlines: BTreeSet<(u64, WaiterId)>,
    /// Lease ends of keys that have waiters.
    handovers: BTreeSet<(u64, Prim, Bytes)>,
    /// Position counter: FIFO order across all queues.
    seq: u64,
}

impl MachineWaiters {
    /// How many callers wait on `key`.
    pub(super) fn count(&self, p: Prim, key: &[u8]) -> usize {
        self.queues[p as usize].get(key).map_or(0, |q| q.list.len())
    }

    /// Parks `w` on `key`, whose record's lease ends at `lease_until_ms`.
    /// Refuses with `BUSY` when the queue already holds `max` waiters.
    pub(super) fn park(
        &mut self,
        p: Prim,
        key: &Bytes,
        lease_until_ms: u64,
        w: Waiter,
        max: usize,
    ) -> Result<(), CmdError> {
        if self.count(p, key) >= max {
            return Err(CmdError::busy(format!("too many callers wait on this key (limit {max})")));
        }
        debug_assert!(!self.by_id.contains_key(&w.id), "waiter ids must be unique among live waiters");
        let q = self.queues[p as usize]
            .entry(key.clone())
            .or_insert_with(|| Queue { lease_until_ms, list: BTreeMap::new() });
        debug_assert_eq!(q.lease_until_ms, lease_until_ms, "a queue mirrors its record's lease");
        if q.list.is_empty() {
            self.handovers.insert((lease_until_ms, p, key.clone()));
        }
        self.seq += 1;
        self.by_id.insert(w.id, (p, key.clone(), self.seq));
        self.deadlines.insert((w.deadline_ms, w.id));
        q.list.insert(self.seq, w);
        Ok(())
    }

    /// Removes the queue of `key` if it is empty, with its handover entry.
    fn drop_if_empty(&mut self, p: Prim, key: &Bytes) {
        let map = &mut self.queues[p as usize];
        if let Some(q) = map.get(key) {
            if q.list.is_empty() {
                self.handovers.remove(&(q.lease_until_ms, p, key.clone()));
                map.remove(key);
            }
        }
    }

    /// Takes the first waiter of `key`.
    pub(super) fn take_front(&mut self, p: Prim, key: &Bytes) -> Option<Waiter> {
        let q = self.queues[p as usize].get_mut(key)?;
        let (_, w) = q.list.pop_first()?;
        self.by_id.remove(&w.id);
        self.deadlines.remove(&(w.deadline_ms, w.id));
        self.drop_if_empty(p, key);
        Some(w)
    }

    /// Takes every waiter of `key`, in FIFO order.
    pub(super) fn take_all(&mut self, p: Prim, key: &Bytes) -> Vec<Waiter> {
        // `remove` hashes the key even when nobody waits anywhere (the
        // common case of every IDEM.COMMIT); `get` and friends do not.
        let map = &mut self.queues[p as usize];
        if map.is_empty() {
            return Vec::new();
        }
        let Some(q) = map.remove(key) else {
            return Vec::new();
        };
        self.handovers.remove(&(q.lease_until_ms, p, key.clone()));
        q.list
            .into_values()
            .inspect(|w| {
                self.by_id.remove(&w.id);
                self.deadlines.remove(&(w.deadline_ms, w.id));
            })
            .collect()
    }

    /// Takes the waiters of `key` for which `pred` holds, in FIFO order.
    pub(super) fn take_where(&mut self, p: Prim, key: &Bytes, mut pred: impl FnMut(&Waiter) -> bool) -> Vec<Waiter> {
        let Some(q) = self.queues[p as usize].get_mut(key) else {
            return Vec::new();
        };
        let seqs: Vec<u64> = q.list.iter().filter(|(_, w)| pred(w)).map(|(s, _)| *s).collect();
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs {
            if let Some(w) = q.list.remove(&s) {
                self.by_id.remove(&w.id);
                self.deadlines.remove(&(w.deadline_ms, w.id));
                out.push(w);
            }
        }
        self.drop_if_empty(p, key);
        out
    }

    /// The record of `key` now has a lease ending at `lease_until_ms`:
    /// moves its handover entry if callers wait on it.
    pub(super) fn lease_changed(&mut self, p: Prim, key: &Bytes, lease_until_ms: u64) {
        if let Some(q) = self.queues[p as usize].get_mut(key) {
            if q.lease_until_ms != lease_until_ms {
                self.handovers.remove(&(q.lease_until_ms, p, key.clone()));
                q.lease_until_ms = lease_until_ms;
                self.handovers.insert((lease_until_ms, p, key.clone()));
            } else {
                // The entry may have been popped by `pop_due` already.
                self.handovers.insert((lease_until_ms, p, key.clone()));
            }
        }
    }

    /// Forgets one waiter; false if it was not parked.
    pub(super) fn cancel(&mut self, id: WaiterId) -> bool {
        let Some((p, key, seq)) = self.by_id.remove(&id) else {
            return false;
        };
        if let Some(w) = self.queues[p as usize].get_mut(&key).and_then(|q| q.list.remove(&seq)) {
            self.deadlines.remove(&(w.deadline_ms, w.id));
        }
        self.drop_if_empty(p, &key);
        true
    }

    /// The earliest due event at or before `now_ms`, removed from the index.
    pub(super) fn pop_due(&mut self, now_ms: u64) -> Option<Due> {
        let h = self.handovers.first().map(|e| e.0).filter(|&t| t <= now_ms);
        let d = self.deadlines.first().map(|e| e.0).filter(|&t| t <= now_ms);
        match (h, d) {
            (Some(h), d) if d.is_none_or(|d| h <= d) => {
                let (_, p, key) = self.handovers.pop_first()?;
                Some(Due::Handover(p, key))
            }
            (_, Some(_)) => {
                let (_, id) = self.deadlines.pop_first()?;
                let (p, key, seq) = self.by_id.remove(&id)?;
                let w = self.queues[p as usize].get_mut(&key)?.list.remove(&seq)?;
                self.drop_if_empty(p, &key);
                Some(Due::Timeout(p, key, w))
            }
            _ => None,
        }
    }

    /// The earliest handover or WAIT deadline.
    pub(super) fn next_deadline_ms(&self) -> Option<u64> {
        let h = self.handovers.first().map(|e| e.0);
        let d = self.deadlines.first().map(|e| e.0);
        match (h, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
