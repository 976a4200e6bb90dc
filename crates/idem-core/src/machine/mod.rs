//! The state machine of one shard: command + time in, reply + effects out.
//! No sockets, files, threads or clocks: the caller supplies `now_ms` (the
//! engine's monotonic clock), fences and randomness through [`Env`], and
//! carries out the [`Effects`] (log the changes, deliver the woken replies).
//!
//! API CONTRACT (stable; the store and the server are written against it).
//!
//! # Layout
//! One file per primitive (`idem.rs`, `claim.rs`, `lock.rs`, `token.rs`,
//! `counter.rs`, `value.rs`, `fsm.rs`, `slots.rs`); this file dispatches.
//! Each primitive's file documents the decisions taken where docs/commands.md is
//! silent. `idem_table.rs` stores idempotency records compactly, `expiry.rs`
//! orders the other records' deadlines, so that [`Machine::tick`] touches
//! only what is due, and `waiters.rs` holds parked callers.
//!
//! # Changes
//! Every mutation pushes the [`Change`]s that describe the new state; a
//! command that changes nothing (including every read, a `running`/`busy`
//! reply, a refused or conflicting request, a re-claim or re-reserve that
//! is already in place) pushes none. Expiry is never logged. Waiters are
//! never logged either: a restart forgets them, as their connections are gone.
//!
//! # Time
//! Records store absolute deadlines. A record is expired when
//! `now_ms >= deadline`; an expired record behaves as absent on access even
//! if `tick` has not reclaimed it yet, and reclaiming it logs nothing,
//! because replaying its last change gives a record that is just as expired.
//!
//! Events that answer parked callers (a lease running out under waiters, a
//! WAIT passing) are processed in time order by `tick` *and* at the start of
//! every `apply`, so that no reply ever depends on whether `tick` ran before
//! it. Such an event may hand a key to a waiter, which logs a change of that
//! key from inside an unrelated `apply`.

use std::collections::HashMap;

use bytes::Bytes;

use crate::backend::CmdResult;
use crate::change::Change;
use crate::command::Command;
use crate::limits::Limits;
use crate::outcome::ClaimedAll;

mod claim;
mod counter;
mod expiry;
mod fsm;
mod grow;
mod idem;
mod idem_table;
mod inspect;
mod key_hash;
mod keymap;
mod lock;
mod memory;
mod slots;
mod token;
mod value;
mod waiters;

#[cfg(test)]
mod testkit;

pub use inspect::{IdemView, MachineCounts, StoredIdem, WaitersScope};
pub use memory::{token_record_bytes, RECORD_OVERHEAD_BYTES};

use expiry::{Expiry, Kind};
use waiters::{Due, MachineWaiters, Prim};

/// Identifies a parked caller (a WAIT on IDEM.BEGIN or LOCK). Chosen by the
/// caller of [`Machine::apply`]; unique among live waiters of a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// What the machine needs from the world besides time.
pub trait Env {
    /// The next fence of the server-wide sequence: strictly greater than every
    /// fence returned before, across all shards and restarts.
    fn next_fence(&mut self) -> u64;
    /// 16 random bytes for a one-time token.
    fn random_token(&mut self) -> [u8; 16];
}

/// A deterministic [`Env`] for simulation, tests and benchmarks — never for a
/// server, whose fences must survive restarts and whose tokens must be
/// random. Fences count up from 1; the n-th token is [`SeqEnv::token`]`(n)`
/// (n wraps after 255). `Clone` lets a model and the machine under test draw
/// identical sequences.
#[derive(Clone, Debug, Default)]
pub struct SeqEnv {
    /// The last fence handed out (0 before the first).
    pub fence: u64,
    /// How many tokens were handed out, modulo 256.
    pub tokens: u8,
}

impl SeqEnv {
    /// The bytes of the n-th token.
    pub fn token(n: u8) -> [u8; 16] {
        [n; 16]
    }
}

impl Env for SeqEnv {
    fn next_fence(&mut self) -> u64 {
        self.fence += 1;
        self.fence
    }
    fn random_token(&mut self) -> [u8; 16] {
        self.tokens = self.tokens.wrapping_add(1);
        Self::token(self.tokens)
    }
}

/// What a call made happen besides its own reply.
#[derive(Debug, Default)]
pub struct Effects {
    /// State changes, in the order they were made; the store logs them
    /// before any reply that depends on them is released.
    pub changes: Vec<Change>,
    /// Parked callers to answer now (served, timed out), in FIFO order.
    pub woken: Vec<(WaiterId, CmdResult)>,
}

impl Effects {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.changes.clear();
        self.woken.clear();
    }
}

/// The result of [`Machine::apply`].
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The command finished with this reply.
    Done(CmdResult),
    /// The caller is parked (WAIT); its reply will come through `Effects::woken`.
    Parked,
}

/// One shard's state.
#[derive(Debug)]
pub struct Machine {
    limits: Limits,
    idem: idem_table::IdemTable,
    claims: keymap::KeyMap<claim::ClaimEntry>,
    locks: keymap::KeyMap<lock::LockEntry>,
    /// Key: `pair_key(scope, token)`; value: expiry time.
    tokens: keymap::KeyMap<u64>,
    /// A counter at 0 is not stored: 0 is what an absent counter reads.
    counters: keymap::KeyMap<i64>,
    /// Key: `pair_key(counter key, op id)`.
    counter_ops: keymap::KeyMap<counter::OpEntry>,
    values: keymap::KeyMap<value::ValueEntry>,
    fsm: keymap::KeyMap<Bytes>,
    slots: HashMap<Bytes, slots::Resource>,
    expiry: Expiry,
    waiters: MachineWaiters,
}

impl Machine {
    /// An empty shard.
    pub fn new(limits: Limits) -> Self {
        Machine {
            limits,
            idem: idem_table::IdemTable::default(),
            claims: Default::default(),
            locks: Default::default(),
            tokens: Default::default(),
            counters: Default::default(),
            counter_ops: Default::default(),
            values: Default::default(),
            fsm: Default::default(),
            slots: HashMap::new(),
            expiry: Expiry::default(),
            waiters: MachineWaiters::default(),
        }
    }

    /// The limits this machine enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Applies one command at engine time `now_ms`. `waiter` must be `Some`
    /// when `cmd.wait_ms() > 0`; the machine then parks it when it would
    /// otherwise reply `running`/`busy`. CLAIM.ALL whose keys all live in this
    /// shard may be applied here; otherwise use [`claim_all`].
    ///
    /// Wake-ups that are due at `now_ms` (see the module docs) run first.
    pub fn apply(
        &mut self,
        now_ms: u64,
        cmd: &Command,
        waiter: Option<WaiterId>,
        env: &mut dyn Env,
        effects: &mut Effects,
    ) -> Applied {
        self.run_due(now_ms, env, effects);
        let waiter = if cmd.wait_ms() > 0 { waiter } else { None };
        let now = now_ms;
        let r = match cmd {
            Command::IdemBegin { key, fingerprint, lease_ms, wait_ms } => {
                return self.idem_begin(now, key, fingerprint.as_ref(), *lease_ms, *wait_ms, waiter, env, effects)
            }
            Command::IdemCommit { key, fence, result, keep_ms } => {
                self.idem_commit(now, key, *fence, result, *keep_ms, effects)
            }
            Command::IdemAbort { key, fence } => self.idem_abort(now, key, *fence, env, effects),
            Command::IdemRenew { key, fence, lease_ms } => self.idem_renew(now, key, *fence, *lease_ms, effects),
            Command::IdemGet { key } => self.idem_get(now, key),
            Command::IdemDel { key } => self.idem_del(now, key, env, effects),
            Command::Claim { key, owner, ttl_ms } => self.claim(now, key, owner, *ttl_ms, effects),
            Command::ClaimAll { owner, keys } => {
                let mut shards = [&mut *self];
                claim_all(now, owner, keys, &mut shards, &|_| 0, effects)
            }
            Command::Release { key, owner } => self.release(now, key, owner, effects),
            Command::Owner { key } => self.owner(now, key),
            Command::Lock { name, owner, lease_ms, wait_ms } => {
                return self.lock(now, name, owner, *lease_ms, *wait_ms, waiter, env, effects)
            }
            Command::Renew { name, owner, lease_ms } => self.renew(now, name, owner, *lease_ms, effects),
            Command::Unlock { name, owner } => self.unlock(now, name, owner, env, effects),
            Command::LockInfo { name } => self.lock_info(now, name),
            Command::TokenNew { scope, ttl_ms } => self.token_new(now, scope, *ttl_ms, env, effects),
            Command::TokenUse { scope, token } => self.token_use(now, scope, token, effects),
            Command::CounterAdd { key, delta, min, max, op, keep_ms } => {
                self.counter_add(now, key, *delta, *min, *max, op.as_ref(), *keep_ms, effects)
            }
            Command::CounterGet { key } => self.counter_get(key),
            Command::ValueGet { key } => self.value_get(key),
            Command::ValueSet { key, value, if_version } => self.value_set(key, value, *if_version, effects),
            Command::FsmMove { key, to, from } => self.fsm_move(key, to, from, effects),
            Command::FsmGet { key } => self.fsm_get(key),
            Command::SlotsReserve { resource, first, last, holder, size } => {
                self.slots_reserve(resource, *first, *last, holder, *size, effects)
            }
            Command::SlotsRelease { resource, first, last, holder } => {
                self.slots_release(resource, *first, *last, holder, effects)
            }
            Command::SlotsGet { resource } => self.slots_get(resource),
        };
        Applied::Done(r)
    }

    /// Advances time: expired leases hand over to the first waiter, waits that
    /// passed their deadline are answered, expired records are reclaimed.
    pub fn tick(&mut self, now_ms: u64, env: &mut dyn Env, effects: &mut Effects) {
        self.run_due(now_ms, env, effects);
        self.reclaim_idem(now_ms);
        while let Some((at, kind, key)) = self.expiry.pop_due(now_ms) {
            // The entry is popped already; each `reclaim_*` removes the
            // record only if its deadline is the one popped (it always is,
            // since deadlines are unindexed before they change).
            match kind {
                Kind::Claim => self.reclaim_claim(at, &key),
                Kind::Lock => self.reclaim_lock(at, &key),
                Kind::Token => self.reclaim_token(at, &key),
                Kind::CounterOp => self.reclaim_counter_op(at, &key),
            }
        }
    }

    /// Answers parked callers whose events are due, in time order.
    fn run_due(&mut self, now_ms: u64, env: &mut dyn Env, effects: &mut Effects) {
        while let Some(due) = self.waiters.pop_due(now_ms) {
            match due {
                Due::Handover(Prim::Idem, key) => self.idem_lease_ran_out(now_ms, &key, env, effects),
                Due::Handover(Prim::Lock, key) => self.lock_lease_ran_out(now_ms, &key, env, effects),
                Due::Timeout(Prim::Idem, key, w) => {
                    let reply = self.idem_running_reply(now_ms, &key);
                    effects.woken.push((w.id, reply));
                }
                Due::Timeout(Prim::Lock, key, w) => {
                    let reply = self.lock_busy_reply(now_ms, &key);
                    effects.woken.push((w.id, reply));
                }
            }
        }
    }

    /// The earliest engine time at which `tick` has work to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        [self.expiry.first_ms(), self.idem.first_deadline_ms(), self.waiters.next_deadline_ms()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Forgets a parked waiter whose caller went away.
    pub fn cancel(&mut self, waiter: WaiterId) {
        self.waiters.cancel(waiter);
    }

    /// Applies a logged change during recovery (no waiters exist then).
    pub fn replay(&mut self, change: &Change) {
        match change {
            Change::IdemPut { key, record } => self.idem_put(key, record),
            Change::IdemDel { key } => self.idem_remove(key),
            Change::ClaimPut { key, owner, expires_at_ms } => self.claim_put(key, owner, *expires_at_ms),
            Change::ClaimDel { key } => self.claim_remove(key),
            Change::LockPut { name, owner, fence, lease_until_ms } => {
                self.lock_put(name, owner, *fence, *lease_until_ms)
            }
            Change::LockDel { name } => self.lock_remove(name),
            Change::TokenPut { scope, token, expires_at_ms } => self.token_put(pair_key(scope, token), *expires_at_ms),
            Change::TokenDel { scope, token } => self.token_remove(&pair_key(scope, token)),
            Change::CounterPut { key, value } => self.counter_put(key, *value),
            Change::CounterOpPut { key, op, value, expires_at_ms } => {
                self.counter_op_put(pair_key(key, op), *value, *expires_at_ms)
            }
            Change::ValuePut { key, value, version } => self.value_put(key, value, *version),
            Change::FsmPut { key, state } => self.fsm_put(key, state),
            Change::SlotsReserve { resource, size, first, last, holder } => {
                self.slots_put(resource, *size, *first, *last, holder);
            }
            Change::SlotsRelease { resource, first, last, holder } => {
                self.slots_free(resource, *first, *last, holder);
            }
        }
    }

    /// Calls `out` with changes that rebuild every live record at `now_ms`
    /// (for snapshots); replaying them into an empty machine gives this state.
    /// Records already expired at `now_ms` are left out. The order is
    /// unspecified.
    pub fn dump(&self, now_ms: u64, out: &mut dyn FnMut(Change)) {
        self.dump_idem(now_ms, out);
        self.dump_claims(now_ms, out);
        self.dump_locks(now_ms, out);
        self.dump_tokens(now_ms, out);
        self.dump_counters(now_ms, out);
        self.dump_values(out);
        self.dump_fsm(out);
        self.dump_slots(out);
    }

    /// Live records held (all primitives). Expired records count until `tick`
    /// reclaims them.
    pub fn len(&self) -> usize {
        self.idem.len()
            + self.claims.len()
            + self.locks.len()
            + self.tokens.len()
            + self.counters.len()
            + self.counter_ops.len()
            + self.values.len()
            + self.fsm.len()
            + self.slots.len()
    }

    /// Whether the shard holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// CLAIM.ALL across shards: all or nothing. `shards[shard_of(key)]` owns each
/// key. Either every key is claimed by `owner` (reply `["claimed"]`) or none
/// changes and the reply lists every conflicting key and its owner.
///
/// A key listed twice is claimed once and, if held by someone else, reported
/// once. Claims made by CLAIM.ALL have no TTL (a TTL of an earlier CLAIM by
/// the same owner is dropped, as by a CLAIM without TTL).
pub fn claim_all(
    now_ms: u64,
    owner: &Bytes,
    keys: &[Bytes],
    shards: &mut [&mut Machine],
    shard_of: &dyn Fn(&[u8]) -> usize,
    effects: &mut Effects,
) -> CmdResult {
    let mut conflicts: Vec<(Bytes, Bytes)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if let Some(holder) = shards[shard_of(key)].claim_conflict(now_ms, key, owner) {
            if seen.insert(key.clone()) {
                conflicts.push((key.clone(), holder));
            }
        }
    }
    if !conflicts.is_empty() {
        return Ok(ClaimedAll::Held(conflicts).into_reply());
    }
    for key in keys {
        shards[shard_of(key)].claim_set(key, owner, None, effects);
    }
    Ok(ClaimedAll::Claimed.into_reply())
}

/// A copy of `b` in its own allocation. Records outlive requests; keeping a
/// slice of a request buffer would pin the whole buffer in memory.
fn own(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// One map key made of two byte strings: `len(a)` as 4 bytes big-endian,
/// then `a`, then `b`. Unambiguous for any `a` and `b`.
fn pair_key(a: &[u8], b: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(4 + a.len() + b.len());
    v.extend_from_slice(&(a.len() as u32).to_be_bytes());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    Bytes::from(v)
}

/// The two parts of a `pair_key`.
fn split_pair(k: &Bytes) -> (Bytes, Bytes) {
    let n = u32::from_be_bytes([k[0], k[1], k[2], k[3]]) as usize;
    (k.slice(4..4 + n), k.slice(4 + n..))
}

/// Milliseconds left until `until_ms`, 0 when passed.
fn left_ms(now_ms: u64, until_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms)
}

#[cfg(test)]
mod tests {
    use super::testkit::{b, render, T};
    use super::SeqEnv;
    use super::*;

    #[test]
    fn a_machine_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Machine>();
        send_sync::<Effects>();
    }

    #[test]
    fn claim_all_spans_shards_all_or_nothing() {
        let (mut m0, mut m1) = (Machine::new(Limits::default()), Machine::new(Limits::default()));
        let shard_of = |k: &[u8]| usize::from(k[0] % 2);
        let mut effects = Effects::default();
        let keys = [b("a"), b("b"), b("c")];
        let r = claim_all(0, &b("x"), &keys, &mut [&mut m0, &mut m1], &shard_of, &mut effects);
        assert_eq!(render(&r), "[claimed]");
        assert_eq!(effects.changes.len(), 3);
        assert_eq!((m0.len(), m1.len()), (1, 2), "each key lives in its shard");
        effects.clear();
        let keys = [b("d"), b("b"), b("c")];
        let r = claim_all(0, &b("y"), &keys, &mut [&mut m0, &mut m1], &shard_of, &mut effects);
        assert_eq!(render(&r), "[held b x c x]");
        assert!(effects.changes.is_empty());
        assert_eq!((m0.len(), m1.len()), (1, 2), "nothing changed");
    }

    #[test]
    fn tick_is_ordered_and_next_deadline_covers_everything() {
        let mut t = T::new();
        assert_eq!(t.m.next_deadline_ms(), None);
        t.cmd("TOKEN.NEW s TTL 300");
        t.cmd("CLAIM c o TTL 200");
        t.cmd("LOCK l o LEASE 100");
        t.cmd("COUNTER.ADD n 1 OP x KEEP 400");
        t.cmd("IDEM.BEGIN i LEASE 10000");
        t.cmd("IDEM.COMMIT i 2 r KEEP 500");
        t.cmd("VALUE.SET v x");
        t.cmd("FSM.MOVE f a FROM none");
        t.cmd("SLOTS.RESERVE s 0 0 h");
        assert_eq!(t.m.len(), 9);
        let start = t.now;
        assert_eq!(t.m.next_deadline_ms(), Some(start + 100));
        for (step, left) in [(100, 8), (200, 7), (300, 6), (400, 5), (500, 4)] {
            t.tick(start + step);
            assert_eq!(t.m.len(), left, "at +{step}");
        }
        assert_eq!(t.m.next_deadline_ms(), None);
        assert!(t.log.len() >= 9);
        t.check_replay();
    }

    #[test]
    fn reads_log_nothing_and_waits_need_a_waiter() {
        let mut t = T::new();
        for c in ["IDEM.GET k", "OWNER k", "LOCK.INFO k", "COUNTER.GET k", "VALUE.GET k", "FSM.GET k", "SLOTS.GET k"] {
            t.cmd(c);
            assert!(t.last.is_empty(), "{c}");
        }
        assert!(t.m.is_empty());
        let mut env = SeqEnv::default();
        let mut effects = Effects::default();
        let cmd = Command::parse(&[b("IDEM.BEGIN"), b("k")], &Limits::default()).expect("parses");
        let mut m = Machine::new(Limits::default());
        assert!(matches!(m.apply(0, &cmd, Some(WaiterId(1)), &mut env, &mut effects), Applied::Done(Ok(_))));
    }
}
