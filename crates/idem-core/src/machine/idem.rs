//! Idempotency keys: IDEM.BEGIN, IDEM.COMMIT, IDEM.ABORT, IDEM.RENEW, IDEM.GET,
//! IDEM.DEL.
//!
//! Decisions where docs/commands.md is silent:
//! - A running record whose lease ran out is kept for `KEEP_MS_DEFAULT` after
//!   the lease ended, so that a later BEGIN takes over with `attempt + 1`;
//!   after that it is forgotten and the next BEGIN starts at attempt 1.
//! - The record keeps the FP of the BEGIN that created it, also across
//!   takeovers. `MISMATCH` iff both the record and the request carry an FP
//!   and they differ (running, lease ran out, or done).
//! - ABORT and DEL remove the record, so the caller that starts next (the
//!   first parked waiter, or the next BEGIN) gets attempt 1 and the record
//!   takes *its* FP. Parked waiters whose FP differs from that new FP are
//!   answered `MISMATCH` at once.
//! - IDEM.RENEW sets the lease to `now + LEASE` (like RENEW of a lock), so
//!   it may also shorten it; the fence and attempt stay. Parked BEGINs wait
//!   for the new lease end.
//! - IDEM.GET of a running record whose lease ran out replies `["absent"]`:
//!   the key is available again. IDEM.DEL of such a record still removes it
//!   (and its attempt count) and replies 1.

use bytes::Bytes;

use super::idem_table::{Entry, EntryState, IdemRec};
use super::waiters::{MachineWaiters, Prim, Waiter};
use super::{left_ms, own, Applied, Effects, Env, Machine, WaiterId};
use crate::backend::CmdResult;
use crate::change::{Change, IdemRecord, IdemState};
use crate::error::CmdError;
use crate::outcome::{Begin, Ended, IdemGot, IdemRenewed};
use crate::reply::Reply;

fn started(fence: u64, attempt: u32) -> Reply {
    Begin::Started { fence, attempt }.into_reply()
}

fn running(now_ms: u64, fence: u64, lease_until_ms: u64) -> Reply {
    Begin::Running { fence, left_ms: left_ms(now_ms, lease_until_ms) }.into_reply()
}

fn done(result: Bytes) -> Reply {
    Begin::Done { result }.into_reply()
}

fn stale() -> CmdError {
    CmdError::stale("the fence is not the current one, or its lease ran out")
}

fn mismatch() -> CmdError {
    CmdError::mismatch("this key was begun with a different fingerprint")
}

fn fp_conflict(stored: Option<&[u8]>, req: Option<&[u8]>) -> bool {
    matches!((stored, req), (Some(a), Some(b)) if a != b)
}

/// Whether `rec` is running under `fence` with a live lease.
fn holds(rec: &IdemRec, now_ms: u64, fence: u64) -> bool {
    matches!(rec.state(), EntryState::Running { fence: f, lease_until_ms, .. } if f == fence && now_ms < lease_until_ms)
}

/// What the table calls when a probe forgets an expired record.
fn check_no_waiters(waiters: &MachineWaiters) -> impl FnOnce(&[u8]) + '_ {
    move |key| debug_assert_eq!(waiters.count(Prim::Idem, key), 0, "waiters outlive no record")
}

impl Machine {
    /// Stores a record, keeping the waiters' handover entry in step.
    fn idem_store(&mut self, key: &Bytes, fp: Option<&[u8]>, result: &[u8], st: EntryState) {
        self.idem.put(key, fp, result, st);
        if let EntryState::Running { lease_until_ms, .. } = st {
            self.waiters.lease_changed(Prim::Idem, key, lease_until_ms);
        }
    }

    /// Replay of `IdemPut`.
    pub(super) fn idem_put(&mut self, key: &Bytes, rec: &IdemRecord) {
        let fp = rec.fingerprint.as_deref();
        match &rec.state {
            IdemState::Running { fence, attempt, lease_until_ms } => {
                let st = EntryState::Running { fence: *fence, attempt: *attempt, lease_until_ms: *lease_until_ms };
                self.idem_store(key, fp, b"", st);
            }
            IdemState::Done { result, keep_until_ms } => {
                self.idem_store(key, fp, result, EntryState::Done { keep_until_ms: *keep_until_ms });
            }
        }
    }

    /// Removes the record of `key` (waiters are the caller's business).
    pub(super) fn idem_remove(&mut self, key: &[u8]) {
        self.idem.remove(key);
    }

    /// Creates a running record with a new fence and returns the `started`
    /// reply (the waiter paths; IDEM.BEGIN stores through its probe).
    #[allow(clippy::too_many_arguments)]
    fn idem_start(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        fingerprint: Option<Bytes>,
        attempt: u32,
        lease_ms: u64,
        prev_fence: Option<u64>,
        env: &mut dyn Env,
        effects: &mut Effects,
    ) -> Reply {
        let fence = env.next_fence();
        debug_assert!(prev_fence.is_none_or(|p| fence > p), "fences only grow per key");
        let lease_until_ms = now_ms.saturating_add(lease_ms);
        self.idem_store(key, fingerprint.as_deref(), b"", EntryState::Running { fence, attempt, lease_until_ms });
        let record = IdemRecord { fingerprint, state: IdemState::Running { fence, attempt, lease_until_ms } };
        effects.changes.push(Change::IdemPut { key: key.clone(), record });
        started(fence, attempt)
    }

    /// After IDEM.BEGIN stored a running record: moves the handover entry,
    /// logs the record and returns the `started` reply.
    fn idem_started(
        &mut self,
        key: &Bytes,
        fingerprint: Option<Bytes>,
        fence: u64,
        attempt: u32,
        lease_until_ms: u64,
        effects: &mut Effects,
    ) -> Applied {
        self.waiters.lease_changed(Prim::Idem, key, lease_until_ms);
        let record = IdemRecord { fingerprint, state: IdemState::Running { fence, attempt, lease_until_ms } };
        effects.changes.push(Change::IdemPut { key: key.clone(), record });
        Applied::Done(Ok(started(fence, attempt)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn idem_begin(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        fp: Option<&Bytes>,
        lease_ms: u64,
        wait_ms: u64,
        waiter: Option<WaiterId>,
        env: &mut dyn Env,
        effects: &mut Effects,
    ) -> Applied {
        let lease_until_ms = now_ms.saturating_add(lease_ms);
        let mut rec = match self.idem.entry(now_ms, key, check_no_waiters(&self.waiters)) {
            Entry::Vacant(slot) => {
                debug_assert_eq!(self.waiters.count(Prim::Idem, key), 0, "waiters outlive no record");
                let fence = env.next_fence();
                let attempt = 1;
                slot.insert(key, fp.map(|f| f.as_ref()), b"", EntryState::Running { fence, attempt, lease_until_ms });
                return self.idem_started(key, fp.map(|f| own(f)), fence, attempt, lease_until_ms, effects);
            }
            Entry::Occupied(rec) => rec,
        };
        if fp_conflict(rec.rec().fp(), fp.map(|f| f.as_ref())) {
            return Applied::Done(Err(mismatch()));
        }
        match rec.rec().state() {
            EntryState::Done { .. } => Applied::Done(Ok(done(Bytes::copy_from_slice(rec.rec().result())))),
            EntryState::Running { fence, lease_until_ms: held_until_ms, .. } if now_ms < held_until_ms => {
                match waiter {
                    Some(id) if wait_ms > 0 => {
                        let w = Waiter {
                            id,
                            deadline_ms: now_ms.saturating_add(wait_ms),
                            lease_ms,
                            arg: fp.map(|f| own(f)),
                        };
                        let max = self.limits.waiters_per_key_max;
                        match self.waiters.park(Prim::Idem, key, held_until_ms, w, max) {
                            Ok(()) => Applied::Parked,
                            Err(e) => Applied::Done(Err(e)),
                        }
                    }
                    _ => Applied::Done(Ok(running(now_ms, fence, held_until_ms))),
                }
            }
            EntryState::Running { fence: prev_fence, attempt, .. } => {
                // The lease ran out: take over with a new fence, in place.
                let fingerprint = rec.rec().fp().map(Bytes::copy_from_slice);
                let attempt = attempt.saturating_add(1);
                let fence = env.next_fence();
                debug_assert!(fence > prev_fence, "fences only grow per key");
                rec.set_state(EntryState::Running { fence, attempt, lease_until_ms });
                self.idem_started(key, fingerprint, fence, attempt, lease_until_ms, effects)
            }
        }
    }

    pub(super) fn idem_commit(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        fence: u64,
        result: &Bytes,
        keep_ms: u64,
        effects: &mut Effects,
    ) -> CmdResult {
        let mut rec = match self.idem.find(now_ms, key, check_no_waiters(&self.waiters)) {
            Some(rec) if holds(rec.rec(), now_ms, fence) => rec,
            _ => return Err(stale()),
        };
        let fingerprint = rec.rec().fp().map(Bytes::copy_from_slice);
        let keep_until_ms = now_ms.saturating_add(keep_ms);
        rec.set_result(result, EntryState::Done { keep_until_ms });
        let record = IdemRecord { fingerprint, state: IdemState::Done { result: result.clone(), keep_until_ms } };
        effects.changes.push(Change::IdemPut { key: key.clone(), record });
        for w in self.waiters.take_all(Prim::Idem, key) {
            effects.woken.push((w.id, Ok(done(result.clone()))));
        }
        Ok(Ended.into_reply())
    }

    pub(super) fn idem_renew(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        fence: u64,
        lease_ms: u64,
        effects: &mut Effects,
    ) -> CmdResult {
        let mut rec = match self.idem.find(now_ms, key, check_no_waiters(&self.waiters)) {
            Some(rec) if holds(rec.rec(), now_ms, fence) => rec,
            _ => return Err(stale()),
        };
        let EntryState::Running { attempt, lease_until_ms: old_until_ms, .. } = rec.rec().state() else {
            unreachable!("`holds` checked that the record is running");
        };
        let lease_until_ms = now_ms.saturating_add(lease_ms);
        assert!(lease_until_ms > now_ms, "a renewed lease is live");
        if lease_until_ms != old_until_ms {
            let fingerprint = rec.rec().fp().map(Bytes::copy_from_slice);
            rec.set_state(EntryState::Running { fence, attempt, lease_until_ms });
            self.waiters.lease_changed(Prim::Idem, key, lease_until_ms);
            let record = IdemRecord { fingerprint, state: IdemState::Running { fence, attempt, lease_until_ms } };
            effects.changes.push(Change::IdemPut { key: key.clone(), record });
        }
        Ok(IdemRenewed { fence }.into_reply())
    }

    pub(super) fn idem_abort(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        fence: u64,
        env: &mut dyn Env,
        effects: &mut Effects,
    ) -> CmdResult {
        match self.idem.find(now_ms, key, check_no_waiters(&self.waiters)) {
            Some(rec) if holds(rec.rec(), now_ms, fence) => rec.remove(),
            _ => return Err(stale()),
        }
        effects.changes.push(Change::IdemDel { key: key.clone() });
        self.idem_start_waiter(now_ms, key, env, effects);
        Ok(Ended.into_reply())
    }

    /// After the record of `key` was removed: the first waiter starts a new
    /// record (attempt 1, its own FP); waiters whose FP conflicts with it
    /// get `MISMATCH`.
    fn idem_start_waiter(&mut self, now_ms: u64, key: &Bytes, env: &mut dyn Env, effects: &mut Effects) {
        let Some(w) = self.waiters.take_front(Prim::Idem, key) else {
            return;
        };
        let fp = w.arg.clone();
        let reply = self.idem_start(now_ms, key, fp.clone(), 1, w.lease_ms, None, env, effects);
        effects.woken.push((w.id, Ok(reply)));
        if fp.is_some() {
            let conflicts = |o: &Waiter| fp_conflict(fp.as_deref(), o.arg.as_deref());
            for other in self.waiters.take_where(Prim::Idem, key, conflicts) {
                effects.woken.push((other.id, Err(mismatch())));
            }
        }
    }

    pub(super) fn idem_get(&mut self, now_ms: u64, key: &Bytes) -> CmdResult {
        let Some(rec) = self.idem.find(now_ms, key, check_no_waiters(&self.waiters)) else {
            return Ok(IdemGot::Absent.into_reply());
        };
        let rec = rec.rec();
        Ok(match rec.state() {
            EntryState::Running { fence, lease_until_ms, .. } if now_ms < lease_until_ms => {
                IdemGot::Running { fence, left_ms: left_ms(now_ms, lease_until_ms) }.into_reply()
            }
            EntryState::Done { .. } => IdemGot::Done { result: Bytes::copy_from_slice(rec.result()) }.into_reply(),
            EntryState::Running { .. } => IdemGot::Absent.into_reply(),
        })
    }

    pub(super) fn idem_del(&mut self, now_ms: u64, key: &Bytes, env: &mut dyn Env, effects: &mut Effects) -> CmdResult {
        let Some(rec) = self.idem.find(now_ms, key, check_no_waiters(&self.waiters)) else {
            return Ok(Reply::Int(0));
        };
        rec.remove();
        effects.changes.push(Change::IdemDel { key: key.clone() });
        self.idem_start_waiter(now_ms, key, env, effects);
        Ok(Reply::Int(1))
    }

    /// The reply of a waiter whose WAIT passed: the attempt still runs.
    pub(super) fn idem_running_reply(&mut self, now_ms: u64, key: &Bytes) -> CmdResult {
        match self.idem.get(key).map(|r| r.state()) {
            Some(EntryState::Running { fence, lease_until_ms, .. }) => Ok(running(now_ms, fence, lease_until_ms)),
            _ => self.idem_get(now_ms, key),
        }
    }

    /// The lease of `key` ran out while callers wait: the first takes over.
    pub(super) fn idem_lease_ran_out(&mut self, now_ms: u64, key: &Bytes, env: &mut dyn Env, effects: &mut Effects) {
        let Some(rec) = self.idem.get(key) else {
            return;
        };
        let EntryState::Running { fence, attempt, lease_until_ms } = rec.state() else {
            return;
        };
        if now_ms < lease_until_ms {
            // The record moved on without moving the handover entry; put it back.
            self.waiters.lease_changed(Prim::Idem, key, lease_until_ms);
            return;
        }
        let fingerprint = rec.fp().map(Bytes::copy_from_slice);
        if let Some(w) = self.waiters.take_front(Prim::Idem, key) {
            let attempt = attempt.saturating_add(1);
            let reply = self.idem_start(now_ms, key, fingerprint, attempt, w.lease_ms, Some(fence), env, effects);
            effects.woken.push((w.id, Ok(reply)));
        }
    }

    /// `tick`: forgets idempotency records whose time is up.
    pub(super) fn reclaim_idem(&mut self, now_ms: u64) {
        let waiters = &self.waiters;
        self.idem.reclaim_due(now_ms, |key| {
            debug_assert_eq!(waiters.count(Prim::Idem, key), 0, "waiters outlive no record");
        });
    }

    pub(super) fn dump_idem(&self, now_ms: u64, out: &mut dyn FnMut(Change)) {
        for rec in self.idem.iter() {
            if now_ms < rec.state().reclaim_at() {
                out(Change::IdemPut { key: Bytes::copy_from_slice(rec.key()), record: rec.to_record() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::T;
    use crate::command::KEEP_MS_DEFAULT;
    use crate::limits::Limits;

    #[test]
    fn begin_commit_replay() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.GET k"), "[absent]");
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.last.len(), 1);
        t.now += 10;
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[running 1 29990]");
        assert!(t.last.is_empty(), "a `running` reply changes nothing");
        assert_eq!(t.cmd("IDEM.GET k"), "[running 1 29990]");
        assert_eq!(t.cmd("IDEM.COMMIT k 1 res"), "[ok]");
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[done res]");
        assert_eq!(t.cmd("IDEM.GET k"), "[done res]");
        assert_eq!(t.m.len(), 1);
        t.check_replay();
    }

    #[test]
    fn commit_and_abort_need_the_current_live_fence() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.COMMIT nope 1 r"), "!STALE");
        assert_eq!(t.cmd("IDEM.ABORT nope 1"), "!STALE");
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 1 1]");
        assert_eq!(t.cmd("IDEM.COMMIT k 2 r"), "!STALE");
        assert_eq!(t.cmd("IDEM.ABORT k 2"), "!STALE");
        t.now += 100;
        assert_eq!(t.cmd("IDEM.COMMIT k 1 r"), "!STALE", "the lease ran out");
        assert_eq!(t.cmd("IDEM.ABORT k 1"), "!STALE");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 2 2]");
        assert_eq!(t.cmd("IDEM.COMMIT k 2 r"), "[ok]");
        assert_eq!(t.cmd("IDEM.COMMIT k 2 r"), "!STALE", "done already");
        assert_eq!(t.cmd("IDEM.ABORT k 2"), "!STALE");
        t.check_replay();
    }

    #[test]
    fn renew_keeps_the_attempt_alive_past_its_first_lease() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k FP a LEASE 100"), "[started 1 1]");
        t.now += 90;
        assert_eq!(t.cmd("IDEM.RENEW k 1 LEASE 100"), "[renewed 1]");
        assert_eq!(t.last.len(), 1, "the new lease is logged");
        t.now += 90;
        assert_eq!(t.cmd("IDEM.BEGIN k FP a"), "[running 1 10]", "alive past the first lease");
        assert_eq!(t.cmd("IDEM.RENEW k 1 LEASE 10"), "[renewed 1]");
        assert_eq!(t.cmd("IDEM.RENEW k 1 LEASE 10"), "[renewed 1]");
        assert!(t.last.is_empty(), "the same lease end changes nothing");
        assert_eq!(t.cmd("IDEM.RENEW k 1 LEASE 5"), "[renewed 1]", "a renewal may shorten the lease");
        assert_eq!(t.cmd("IDEM.GET k"), "[running 1 5]");
        t.check_replay();
        assert_eq!(t.cmd("IDEM.COMMIT k 1 r"), "[ok]");
        t.check_replay();
    }

    #[test]
    fn renew_needs_the_current_live_fence() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.RENEW nope 1 LEASE 100"), "!STALE");
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 1 1]");
        assert_eq!(t.cmd("IDEM.RENEW k 2 LEASE 100"), "!STALE");
        t.now += 100;
        assert_eq!(t.cmd("IDEM.RENEW k 1 LEASE 100"), "!STALE", "the lease ran out, nobody took over");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 2 2]");
        assert_eq!(t.cmd("IDEM.RENEW k 1 LEASE 100"), "!STALE", "another attempt holds it");
        assert_eq!(t.cmd("IDEM.COMMIT k 2 r"), "[ok]");
        assert_eq!(t.cmd("IDEM.RENEW k 2 LEASE 100"), "!STALE", "done");
        assert_eq!(t.cmd("IDEM.GET k"), "[done r]");
        t.check_replay();
    }

    #[test]
    fn renew_moves_the_handover_to_waiters() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 1000", 1), "parked");
        assert_eq!(t.cmd("IDEM.RENEW k 1 LEASE 300"), "[renewed 1]");
        let lease_end = t.now + 300;
        assert_eq!(t.m.next_deadline_ms(), Some(lease_end));
        t.tick(lease_end - 1);
        assert!(t.woken().is_empty(), "the renewed lease is still live");
        t.tick(lease_end);
        assert_eq!(t.woken(), ["1=[started 2 2]"]);
        t.check_replay();
    }

    #[test]
    fn lease_running_out_allows_takeover_with_larger_attempt() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 1 1]");
        t.now += 99;
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[running 1 1]");
        t.now += 1;
        assert_eq!(t.cmd("IDEM.GET k"), "[absent]", "an expired lease leaves the key available");
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 2 2]");
        t.now += 100;
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 3 3]");
        t.check_replay();
    }

    #[test]
    fn fingerprint_of_the_first_begin_is_kept() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k FP a LEASE 100"), "[started 1 1]");
        assert_eq!(t.cmd("IDEM.BEGIN k FP b"), "!MISMATCH");
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[running 1 100]", "no FP: no check");
        t.now += 100;
        assert_eq!(t.cmd("IDEM.BEGIN k FP b"), "!MISMATCH", "also on takeover");
        assert_eq!(t.cmd("IDEM.BEGIN k FP a"), "[started 2 2]");
        assert_eq!(t.cmd("IDEM.COMMIT k 2 r"), "[ok]");
        assert_eq!(t.cmd("IDEM.BEGIN k FP b"), "!MISMATCH", "also when done");
        assert_eq!(t.cmd("IDEM.BEGIN k FP a"), "[done r]");
        assert_eq!(t.cmd("IDEM.BEGIN j"), "[started 3 1]");
        assert_eq!(t.cmd("IDEM.BEGIN j FP z"), "[running 3 30000]", "a record without FP accepts any");
        t.check_replay();
    }

    #[test]
    fn abort_and_del_remove_the_record() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.cmd("IDEM.ABORT k 1"), "[ok]");
        assert_eq!(t.cmd("IDEM.GET k"), "[absent]");
        assert_eq!(t.m.len(), 0);
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 2 1]", "ABORT removed the attempt count");
        assert_eq!(t.cmd("IDEM.DEL k"), "1");
        assert_eq!(t.cmd("IDEM.DEL k"), "0");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 3 1]");
        assert_eq!(t.cmd("IDEM.COMMIT k 3 r"), "[ok]");
        assert_eq!(t.cmd("IDEM.DEL k"), "1");
        assert_eq!(t.cmd("IDEM.GET k"), "[absent]");
        t.check_replay();
    }

    #[test]
    fn commit_wakes_every_waiter_with_done() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 5000", 7), "parked");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 5000", 3), "parked");
        assert!(t.last.is_empty(), "parking changes nothing");
        assert_eq!(t.m.next_deadline_ms(), Some(t.now + 5000));
        assert_eq!(t.cmd("IDEM.COMMIT k 1 r"), "[ok]");
        assert_eq!(t.woken(), ["7=[done r]", "3=[done r]"]);
        t.tick(t.now + 10_000);
        assert!(t.woken().is_empty(), "served waiters do not time out");
        t.check_replay();
    }

    #[test]
    fn abort_hands_the_key_to_the_first_waiter() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 60000 LEASE 100", 1), "parked");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 60000", 2), "parked");
        assert_eq!(t.cmd("IDEM.ABORT k 1"), "[ok]");
        assert_eq!(t.woken(), ["1=[started 2 1]"]);
        assert_eq!(t.cmd("IDEM.GET k"), "[running 2 100]");
        // The new holder's lease runs out: the next waiter takes over in tick.
        assert_eq!(t.m.next_deadline_ms(), Some(t.now + 100));
        t.tick(t.now + 100);
        assert_eq!(t.woken(), ["2=[started 3 2]"]);
        assert_eq!(t.last.len(), 1, "the takeover is logged");
        assert_eq!(t.cmd("IDEM.DEL k"), "1");
        t.check_replay();
    }

    #[test]
    fn del_wakes_the_first_waiter() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 100", 1), "parked");
        assert_eq!(t.cmd("IDEM.DEL k"), "1");
        assert_eq!(t.woken(), ["1=[started 2 1]"]);
        t.check_replay();
    }

    #[test]
    fn after_abort_waiters_with_another_fingerprint_get_mismatch() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k FP a WAIT 100", 1), "parked");
        assert_eq!(t.wait("IDEM.BEGIN k FP b WAIT 100", 2), "parked");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 100", 3), "parked");
        assert_eq!(t.cmd("IDEM.ABORT k 1"), "[ok]");
        assert_eq!(t.woken(), ["1=[started 2 1]", "2=!MISMATCH"]);
        t.tick(t.now + 100);
        assert_eq!(t.woken(), ["3=[running 2 29900]"]);
    }

    #[test]
    fn lazy_handover_happens_before_the_next_command() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 1000", 1), "parked");
        t.now += 150;
        // No tick ran: the waiter still comes first.
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[running 2 30000]");
        assert_eq!(t.woken(), ["1=[started 2 2]"]);
        t.check_replay();
    }

    #[test]
    fn wait_timeout_replies_running() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 500", 1), "parked");
        t.tick(t.now + 499);
        assert!(t.woken().is_empty());
        t.tick(t.now + 1);
        assert_eq!(t.woken(), ["1=[running 1 29500]"]);
        assert!(t.last.is_empty());
    }

    #[test]
    fn wait_ending_with_the_lease_is_served() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 500"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 500", 1), "parked");
        t.tick(t.now + 500);
        assert_eq!(t.woken(), ["1=[started 2 2]"]);
    }

    #[test]
    fn cancelled_waiters_are_forgotten() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 500", 1), "parked");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 500", 2), "parked");
        t.m.cancel(super::WaiterId(1));
        assert_eq!(t.cmd("IDEM.COMMIT k 1 r"), "[ok]");
        assert_eq!(t.woken(), ["2=[done r]"]);
    }

    #[test]
    fn waiter_queue_is_bounded() {
        let mut t = T::with_limits(Limits { waiters_per_key_max: 1, ..Limits::default() });
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 1 1]");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 500", 1), "parked");
        assert_eq!(t.wait("IDEM.BEGIN k WAIT 500", 2), "!BUSY");
        assert_eq!(t.cmd("IDEM.BEGIN k WAIT 500"), "[running 1 30000]", "no waiter id: no parking");
    }

    #[test]
    fn done_records_expire_lazily_and_tick_reclaims_them() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN a"), "[started 1 1]");
        assert_eq!(t.cmd("IDEM.COMMIT a 1 r KEEP 100"), "[ok]");
        assert_eq!(t.cmd("IDEM.BEGIN b"), "[started 2 1]");
        assert_eq!(t.cmd("IDEM.COMMIT b 2 r KEEP 200"), "[ok]");
        assert_eq!(t.m.next_deadline_ms(), Some(t.now + 100));
        t.now += 100;
        assert_eq!(t.cmd("IDEM.GET b"), "[done r]");
        assert_eq!(t.m.len(), 2);
        t.check_replay();
        t.tick(t.now);
        assert_eq!(t.m.len(), 1, "tick reclaims the expired record");
        assert_eq!(t.cmd("IDEM.BEGIN a"), "[started 3 1]");
        t.now += 100;
        assert_eq!(t.cmd("IDEM.GET b"), "[absent]", "expired before any tick");
        t.check_replay();
    }

    #[test]
    fn an_expired_attempt_is_remembered_for_keep_ms_default() {
        let mut t = T::new();
        assert_eq!(t.cmd("IDEM.BEGIN k LEASE 100"), "[started 1 1]");
        let lease_end = t.now + 100;
        t.tick(lease_end + KEEP_MS_DEFAULT - 1);
        assert_eq!(t.m.len(), 1);
        t.tick(lease_end + KEEP_MS_DEFAULT);
        assert_eq!(t.m.len(), 0);
        assert_eq!(t.m.next_deadline_ms(), None);
        assert_eq!(t.cmd("IDEM.BEGIN k"), "[started 2 1]");
    }
}
