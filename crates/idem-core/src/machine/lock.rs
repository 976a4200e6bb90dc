//! Leases with fencing: LOCK, RENEW, UNLOCK, LOCK.INFO.
//!
//! Decisions where docs/commands.md is silent:
//! - A re-LOCK by the holder sets the lease to `now + LEASE` (like RENEW) and
//!   keeps the fence.
//! - A lock whose lease ran out with nobody waiting is free (and forgotten);
//!   with waiters, the first one acquires it with a new fence the moment the
//!   lease ends (in `tick`, or at the start of the next `apply`).
//! - Waiters are plain FIFO: a parked LOCK whose owner got the lock through
//!   an earlier parked request of the same owner keeps waiting for its turn.

use bytes::Bytes;

use super::expiry::{Expiry, Kind};
use super::waiters::{MachineWaiters, Prim, Waiter};
use super::{keymap, left_ms, own, Applied, Effects, Env, Machine, WaiterId};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::outcome::{LockInfo, LockRenewed, Locked};
use crate::reply::Reply;

/// One held lock.
#[derive(Debug)]
pub(super) struct LockEntry {
    owner: Bytes,
    fence: u64,
    lease_until_ms: u64,
}

/// When a lease of `lease_ms` granted or renewed at `now_ms` ends.
fn lease_end(now_ms: u64, lease_ms: u64) -> u64 {
    // Seeded bug `early-regrant` (test builds only, docs/reliability.md):
    // the lease ends halfway, so the lock is regranted while it still runs.
    #[cfg(feature = "seeded-bugs")]
    if crate::seeded::active(crate::seeded::Bug::EarlyRegrant) {
        return now_ms.saturating_add(lease_ms / 2);
    }
    now_ms.saturating_add(lease_ms)
}

impl LockEntry {
    /// Bytes held besides the key (for `Machine::memory_bytes`).
    pub(super) fn payload_bytes(&self) -> u64 {
        self.owner.len() as u64
    }
}

/// Moves the lease of the lock stored under `k` to `lease_until_ms`, with
/// its expiry entry and its waiters' handover entry.
fn move_lease(expiry: &mut Expiry, waiters: &mut MachineWaiters, k: &Bytes, l: &mut LockEntry, lease_until_ms: u64) {
    expiry.moved(l.lease_until_ms, lease_until_ms, Kind::Lock, k);
    waiters.lease_changed(Prim::Lock, k, lease_until_ms);
    l.lease_until_ms = lease_until_ms;
}

/// Forgets the lock at `found`, with its expiry entry; returns its place,
/// vacant now.
fn forget<'a>(expiry: &mut Expiry, found: keymap::Occupied<'a, LockEntry>) -> keymap::Vacant<'a, LockEntry> {
    let ((k, old), slot) = found.remove();
    expiry.remove(old.lease_until_ms, Kind::Lock, &k);
    slot
}

/// Stores a lock of `name`, which has none, in the vacant `slot` of its
/// name. Callers may still wait for it: when an UNLOCK hands the lock to
/// the first waiter, the others' handover moves to the new lease.
fn store_new(
    expiry: &mut Expiry,
    waiters: &mut MachineWaiters,
    slot: keymap::Vacant<'_, LockEntry>,
    name: &[u8],
    owner: &[u8],
    fence: u64,
    lease_until_ms: u64,
) {
    let k = own(name);
    expiry.insert(lease_until_ms, Kind::Lock, &k);
    waiters.lease_changed(Prim::Lock, &k, lease_until_ms);
    slot.insert((k, LockEntry { owner: own(owner), fence, lease_until_ms }));
}

fn acquired(fence: u64) -> Reply {
    Locked::Acquired { fence }.into_reply()
}

impl Machine {
    pub(super) fn lock_put(&mut self, name: &Bytes, owner: &Bytes, fence: u64, lease_until_ms: u64) {
        match self.locks.entry(name) {
            keymap::Entry::Occupied(mut e) => {
                let (k, old) = e.get_mut();
                // Fences only grow when granted (asserted in the grant paths),
                // but recovery may replay an older LockPut over a snapshot that
                // already holds a newer one, so no assertion here.
                move_lease(&mut self.expiry, &mut self.waiters, k, old, lease_until_ms);
                // Keep the stored owner's allocation when it does not change.
                if old.owner != owner {
                    old.owner = own(owner);
                }
                old.fence = fence;
            }
            keymap::Entry::Vacant(slot) => {
                store_new(&mut self.expiry, &mut self.waiters, slot, name, owner, fence, lease_until_ms);
            }
        }
    }

    pub(super) fn lock_remove(&mut self, name: &[u8]) {
        if let Some(found) = self.locks.find_mut(name) {
            forget(&mut self.expiry, found);
        }
    }

    /// The lock of `name` if its lease is live; forgets an expired one
    /// nobody waits for (lazy expiry).
    fn lock_live(&mut self, now_ms: u64, name: &[u8]) -> Option<&LockEntry> {
        let found = self.locks.find_mut(name)?;
        if now_ms < found.get().1.lease_until_ms {
            return Some(&found.into_mut().1);
        }
        if self.waiters.count(Prim::Lock, name) == 0 {
            forget(&mut self.expiry, found);
        }
        None
    }

    /// Gives `name` to its first waiter with a new fence; false if none waits.
    fn lock_grant_next(&mut self, now_ms: u64, name: &Bytes, env: &mut dyn Env, effects: &mut Effects) -> bool {
        let Some(w) = self.waiters.take_front(Prim::Lock, name) else {
            return false;
        };
        let owner = w.arg.clone().unwrap_or_default();
        let fence = env.next_fence();
        debug_assert!(self.locks.get(name.as_ref()).is_none_or(|l| fence > l.fence), "fences only grow per lock");
        let lease_until_ms = lease_end(now_ms, w.lease_ms);
        self.lock_put(name, &owner, fence, lease_until_ms);
        effects.changes.push(Change::LockPut { name: name.clone(), owner, fence, lease_until_ms });
        effects.woken.push((w.id, Ok(acquired(fence))));
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn lock(
        &mut self,
        now_ms: u64,
        name: &Bytes,
        owner: &Bytes,
        lease_ms: u64,
        wait_ms: u64,
        waiter: Option<WaiterId>,
        env: &mut dyn Env,
        effects: &mut Effects,
    ) -> Applied {
        let lease_until_ms = lease_end(now_ms, lease_ms);
        if self.waiters.count(Prim::Lock, name) > 0 && self.lock_live(now_ms, name).is_none() {
            // The lease ran out while callers wait (normally `tick` hands it
            // over first): the first of them acquires, since callers that
            // queued earlier go first, and this caller finds it held.
            if self.lock_grant_next(now_ms, name, env, effects) {
                return self.lock(now_ms, name, owner, lease_ms, wait_ms, waiter, env, effects);
            }
        }
        // One probe finds the lock, or the slot where a free one is acquired.
        let slot = match self.locks.entry(name) {
            keymap::Entry::Vacant(slot) => slot,
            // Run out, and nobody waits (lazy expiry): forgotten, and
            // acquired in its place.
            keymap::Entry::Occupied(e) if now_ms >= e.get().1.lease_until_ms => forget(&mut self.expiry, e),
            keymap::Entry::Occupied(mut e) => {
                let (k, l) = e.get_mut();
                if l.owner != owner {
                    return match waiter {
                        Some(id) if wait_ms > 0 => {
                            let held_until_ms = l.lease_until_ms;
                            let arg = Some(own(owner));
                            let w = Waiter { id, deadline_ms: now_ms.saturating_add(wait_ms), lease_ms, arg };
                            let max = self.limits.waiters_per_key_max;
                            match self.waiters.park(Prim::Lock, name, held_until_ms, w, max) {
                                Ok(()) => Applied::Parked,
                                Err(e) => Applied::Done(Err(e)),
                            }
                        }
                        _ => Applied::Done(Ok(busy(now_ms, l))),
                    };
                }
                // LOCK again by the holder: a new lease, the same fence.
                let fence = l.fence;
                if l.lease_until_ms != lease_until_ms {
                    move_lease(&mut self.expiry, &mut self.waiters, k, l, lease_until_ms);
                    effects.changes.push(Change::LockPut {
                        name: name.clone(),
                        owner: owner.clone(),
                        fence,
                        lease_until_ms,
                    });
                }
                return Applied::Done(Ok(acquired(fence)));
            }
        };
        let fence = env.next_fence();
        store_new(&mut self.expiry, &mut self.waiters, slot, name, owner, fence, lease_until_ms);
        effects.changes.push(Change::LockPut { name: name.clone(), owner: owner.clone(), fence, lease_until_ms });
        Applied::Done(Ok(acquired(fence)))
    }

    pub(super) fn renew(
        &mut self,
        now_ms: u64,
        name: &Bytes,
        owner: &Bytes,
        lease_ms: u64,
        effects: &mut Effects,
    ) -> CmdResult {
        let Some(l) = self.lock_live(now_ms, name).filter(|l| l.owner == owner) else {
            return Ok(LockRenewed::Lost.into_reply());
        };
        let (fence, old_until_ms) = (l.fence, l.lease_until_ms);
        let lease_until_ms = lease_end(now_ms, lease_ms);
        if lease_until_ms != old_until_ms {
            self.lock_put(name, owner, fence, lease_until_ms);
            effects.changes.push(Change::LockPut { name: name.clone(), owner: owner.clone(), fence, lease_until_ms });
        }
        Ok(LockRenewed::Renewed { fence }.into_reply())
    }

    pub(super) fn unlock(
        &mut self,
        now_ms: u64,
        name: &Bytes,
        owner: &Bytes,
        env: &mut dyn Env,
        effects: &mut Effects,
    ) -> CmdResult {
        if self.lock_live(now_ms, name).is_none_or(|l| l.owner != owner) {
            return Ok(Reply::Int(0));
        }
        self.lock_remove(name);
        effects.changes.push(Change::LockDel { name: name.clone() });
        self.lock_grant_next(now_ms, name, env, effects);
        Ok(Reply::Int(1))
    }

    pub(super) fn lock_info(&mut self, now_ms: u64, name: &Bytes) -> CmdResult {
        let waiters = self.waiters.count(Prim::Lock, name);
        Ok(match self.lock_live(now_ms, name) {
            None => LockInfo::Free.into_reply(),
            Some(l) => LockInfo::Held {
                owner: l.owner.clone(),
                fence: l.fence,
                left_ms: left_ms(now_ms, l.lease_until_ms),
                waiters: waiters as u64,
            }
            .into_reply(),
        })
    }

    /// The reply of a waiter whose WAIT passed: someone else still holds it.
    pub(super) fn lock_busy_reply(&mut self, now_ms: u64, name: &Bytes) -> CmdResult {
        match self.locks.get(name.as_ref()) {
            Some(l) => Ok(busy(now_ms, l)),
            None => {
                debug_assert!(false, "a waiter's lock is held until its WAIT passes");
                Ok(Locked::Busy { holder: Bytes::new(), left_ms: 0 }.into_reply())
            }
        }
    }

    /// The lease of `name` ran out while callers wait: the first acquires.
    pub(super) fn lock_lease_ran_out(&mut self, now_ms: u64, name: &Bytes, env: &mut dyn Env, effects: &mut Effects) {
        let Some(l) = self.locks.get(name.as_ref()) else {
            return;
        };
        if now_ms < l.lease_until_ms {
            // The lock moved on without moving the handover entry; put it back.
            let until_ms = l.lease_until_ms;
            self.waiters.lease_changed(Prim::Lock, name, until_ms);
            return;
        }
        self.lock_grant_next(now_ms, name, env, effects);
    }

    pub(super) fn reclaim_lock(&mut self, at_ms: u64, name: &Bytes) {
        if self.locks.get(name.as_ref()).is_some_and(|l| l.lease_until_ms == at_ms) {
            // `tick` hands expired locks to their waiters before it reclaims,
            // so none wait here; if one did, the next LOCK would serve it.
            debug_assert_eq!(
                self.waiters.count(Prim::Lock, name),
                0,
                "an expired lock with waiters is handed over first"
            );
            self.locks.remove(name.as_ref());
        }
    }

    pub(super) fn dump_locks(&self, now_ms: u64, out: &mut dyn FnMut(Change)) {
        for (name, l) in self.locks.iter() {
            if now_ms < l.lease_until_ms {
                out(Change::LockPut {
                    name: name.clone(),
                    owner: l.owner.clone(),
                    fence: l.fence,
                    lease_until_ms: l.lease_until_ms,
                });
            }
        }
    }
}

fn busy(now_ms: u64, l: &LockEntry) -> Reply {
    Locked::Busy { holder: l.owner.clone(), left_ms: left_ms(now_ms, l.lease_until_ms) }.into_reply()
}

#[cfg(test)]
mod tests {
    use super::super::testkit::T;
    use crate::limits::Limits;

    #[test]
    fn lock_renew_unlock_info() {
        let mut t = T::new();
        assert_eq!(t.cmd("LOCK.INFO l"), "[free]");
        assert_eq!(t.cmd("LOCK l a LEASE 100"), "[acquired 1]");
        assert_eq!(t.cmd("LOCK l b LEASE 100"), "[busy a 100]");
        t.now += 40;
        assert_eq!(t.cmd("LOCK.INFO l"), "[held a 1 60 0]");
        assert_eq!(t.cmd("LOCK l a LEASE 100"), "[acquired 1]", "re-lock keeps the fence");
        assert_eq!(t.cmd("LOCK.INFO l"), "[held a 1 100 0]");
        assert_eq!(t.cmd("RENEW l b LEASE 100"), "[lost]");
        t.now += 10;
        assert_eq!(t.cmd("RENEW l a LEASE 500"), "[renewed 1]");
        assert_eq!(t.cmd("LOCK.INFO l"), "[held a 1 500 0]");
        assert_eq!(t.cmd("UNLOCK l b"), "0");
        assert_eq!(t.cmd("UNLOCK l a"), "1");
        assert_eq!(t.cmd("UNLOCK l a"), "0");
        assert_eq!(t.cmd("LOCK.INFO l"), "[free]");
        assert_eq!(t.cmd("LOCK l b LEASE 100"), "[acquired 2]");
        t.check_replay();
    }

    #[test]
    fn an_expired_lease_is_lost_and_free() {
        let mut t = T::new();
        assert_eq!(t.cmd("LOCK l a LEASE 100"), "[acquired 1]");
        t.now += 100;
        assert_eq!(t.cmd("LOCK.INFO l"), "[free]");
        assert_eq!(t.cmd("RENEW l a LEASE 100"), "[lost]");
        assert_eq!(t.cmd("UNLOCK l a"), "0");
        assert_eq!(t.cmd("LOCK l a LEASE 100"), "[acquired 2]", "a new lease gets a new fence");
        t.tick(t.now + 100);
        assert_eq!(t.m.len(), 0, "tick reclaims an expired lock");
        t.check_replay();
    }

    #[test]
    fn waiters_are_served_first_come_first_served() {
        let mut t = T::new();
        assert_eq!(t.cmd("LOCK l a LEASE 100"), "[acquired 1]");
        assert_eq!(t.wait("LOCK l b LEASE 100 WAIT 1000", 1), "parked");
        assert_eq!(t.wait("LOCK l c LEASE 100 WAIT 1000", 2), "parked");
        assert_eq!(t.cmd("LOCK.INFO l"), "[held a 1 100 2]");
        assert_eq!(t.cmd("UNLOCK l a"), "1");
        assert_eq!(t.woken(), ["1=[acquired 2]"]);
        assert_eq!(t.cmd("LOCK.INFO l"), "[held b 2 100 1]");
        // b's lease runs out: c acquires in tick.
        t.tick(t.now + 100);
        assert_eq!(t.woken(), ["2=[acquired 3]"]);
        assert_eq!(t.cmd("LOCK.INFO l"), "[held c 3 100 0]");
        t.check_replay();
    }

    #[test]
    fn a_wait_that_passes_replies_busy() {
        let mut t = T::new();
        assert_eq!(t.cmd("LOCK l a LEASE 1000"), "[acquired 1]");
        assert_eq!(t.wait("LOCK l b LEASE 100 WAIT 300", 1), "parked");
        assert_eq!(t.m.next_deadline_ms(), Some(t.now + 300));
        t.tick(t.now + 300);
        assert_eq!(t.woken(), ["1=[busy a 700]"]);
        assert_eq!(t.cmd("LOCK.INFO l"), "[held a 1 700 0]");
    }

    #[test]
    fn lazy_handover_before_a_command_when_tick_did_not_run() {
        let mut t = T::new();
        assert_eq!(t.cmd("LOCK l a LEASE 100"), "[acquired 1]");
        assert_eq!(t.wait("LOCK l b LEASE 100 WAIT 1000", 1), "parked");
        t.now += 120;
        assert_eq!(t.cmd("LOCK l c LEASE 100"), "[busy b 100]");
        assert_eq!(t.woken(), ["1=[acquired 2]"]);
        t.check_replay();
    }

    #[test]
    fn waiter_limit_gives_busy() {
        let mut t = T::with_limits(Limits { waiters_per_key_max: 0, ..Limits::default() });
        assert_eq!(t.cmd("LOCK l a LEASE 100"), "[acquired 1]");
        assert_eq!(t.wait("LOCK l b LEASE 100 WAIT 1000", 1), "!BUSY");
        assert_eq!(t.wait("LOCK l a LEASE 100 WAIT 1000", 2), "[acquired 1]", "the holder never waits");
    }
}
