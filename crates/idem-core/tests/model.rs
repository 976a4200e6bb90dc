//! Property tests of `Machine` against a deliberately naive reference model
//! of all eight primitives (docs/commands.md plus the decisions documented in
//! the machine's modules). The model keeps plain maps and vectors, checks
//! every deadline by comparing times on access, never reclaims anything and
//! finds due wake-ups by scanning everything; it shares no code with the
//! machine besides the command parser and the reply type.
//!
//! Random sequences of commands over a tiny alphabet of keys and owners,
//! with random time advances, ticks and cancelled waits, go to both; every
//! reply and every woken reply must match. At the end, replaying the logged
//! changes and replaying a dump must both rebuild the dumped state, and a
//! tick far in the future must leave only the records that never expire.

use std::collections::BTreeMap;

use bytes::Bytes;
use idem_core::command::KEEP_MS_DEFAULT;
use idem_core::machine::{Applied, Effects, Env, Machine, SeqEnv, WaiterId};
use idem_core::{Change, CmdResult, Command, ErrorCode, Limits, Reply};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The environment: both sides draw fences and tokens from identical copies.

fn hex(raw: [u8; 16]) -> Bytes {
    Bytes::from(raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

// ---------------------------------------------------------------------------
// The model.

type Out = Result<Reply, ErrorCode>;

#[derive(Clone, Debug)]
enum MIdem {
    Running { fence: u64, attempt: u32, until: u64 },
    Done { result: Bytes, keep_until: u64 },
}

#[derive(Clone, Debug)]
struct MWaiter {
    id: u64,
    lock: bool,
    key: Bytes,
    deadline: u64,
    lease: u64,
    /// FP of a parked BEGIN, owner of a parked LOCK.
    arg: Option<Bytes>,
}

struct Model {
    now: u64,
    env: SeqEnv,
    max_waiters: usize,
    idem: BTreeMap<Bytes, (Option<Bytes>, MIdem)>,
    claims: BTreeMap<Bytes, (Bytes, Option<u64>)>,
    locks: BTreeMap<Bytes, (Bytes, u64, u64)>,
    tokens: Vec<(Bytes, Bytes, u64)>,
    counters: BTreeMap<Bytes, i64>,
    ops: Vec<(Bytes, Bytes, i64, u64)>,
    values: BTreeMap<Bytes, (Bytes, u64)>,
    fsm: BTreeMap<Bytes, Bytes>,
    slots: BTreeMap<Bytes, Vec<Option<Bytes>>>,
    /// Parked callers in arrival order.
    waiters: Vec<MWaiter>,
    woken: Vec<(u64, Out)>,
}

fn arr(word: &'static str, rest: Vec<Reply>) -> Reply {
    Reply::status_with(word, rest)
}

fn int(v: u64) -> Reply {
    Reply::Int(v as i64)
}

impl Model {
    fn new(max_waiters: usize) -> Model {
        Model {
            now: 0,
            env: SeqEnv::default(),
            max_waiters,
            idem: BTreeMap::new(),
            claims: BTreeMap::new(),
            locks: BTreeMap::new(),
            tokens: Vec::new(),
            counters: BTreeMap::new(),
            ops: Vec::new(),
            values: BTreeMap::new(),
            fsm: BTreeMap::new(),
            slots: BTreeMap::new(),
            waiters: Vec::new(),
            woken: Vec::new(),
        }
    }

    // --- idempotency keys

    /// The idempotency record, unless forgotten: a done record until its
    /// KEEP, a running one until KEEP_MS_DEFAULT after its lease.
    fn idem_rec(&self, key: &Bytes) -> Option<(Option<Bytes>, MIdem)> {
        let (fp, st) = self.idem.get(key)?;
        let alive = match st {
            MIdem::Running { until, .. } => self.now < until + KEEP_MS_DEFAULT,
            MIdem::Done { keep_until, .. } => self.now < *keep_until,
        };
        alive.then(|| (fp.clone(), st.clone()))
    }

    fn start(&mut self, key: &Bytes, fp: Option<Bytes>, attempt: u32, lease: u64) -> Reply {
        let fence = self.env.next_fence();
        self.idem.insert(key.clone(), (fp, MIdem::Running { fence, attempt, until: self.now + lease }));
        arr("started", vec![int(fence), Reply::Int(attempt as i64)])
    }

    fn waiters_of(&self, lock: bool, key: &Bytes) -> usize {
        self.waiters.iter().filter(|w| w.lock == lock && w.key == key).count()
    }

    fn take_first(&mut self, lock: bool, key: &Bytes) -> Option<MWaiter> {
        let i = self.waiters.iter().position(|w| w.lock == lock && w.key == key)?;
        Some(self.waiters.remove(i))
    }

    fn park(&mut self, id: u64, lock: bool, key: &Bytes, wait: u64, lease: u64, arg: Option<Bytes>) -> Option<Out> {
        if self.waiters_of(lock, key) >= self.max_waiters {
            return Some(Err(ErrorCode::Busy));
        }
        self.waiters.push(MWaiter { id, lock, key: key.clone(), deadline: self.now + wait, lease, arg });
        None
    }

    fn conflict(a: &Option<Bytes>, b: &Option<Bytes>) -> bool {
        matches!((a, b), (Some(x), Some(y)) if x != y)
    }

    /// After ABORT or DEL: the first waiter starts afresh with its FP; the
    /// others whose FP differs from it are told MISMATCH.
    fn idem_after_removal(&mut self, key: &Bytes) {
        let Some(w) = self.take_first(false, key) else { return };
        let r = self.start(key, w.arg.clone(), 1, w.lease);
        self.woken.push((w.id, Ok(r)));
        let mut i = 0;
        while i < self.waiters.len() {
            let o = &self.waiters[i];
            if !o.lock && o.key == key && Self::conflict(&w.arg, &o.arg) {
                let o = self.waiters.remove(i);
                self.woken.push((o.id, Err(ErrorCode::Mismatch)));
            } else {
                i += 1;
            }
        }
    }

    fn running_reply(&self, fence: u64, until: u64) -> Reply {
        arr("running", vec![int(fence), int(until.saturating_sub(self.now))])
    }

    fn idem_holds(&self, key: &Bytes, fence: u64) -> bool {
        matches!(self.idem_rec(key), Some((_, MIdem::Running { fence: f, until, .. })) if f == fence && self.now < until)
    }

    // --- locks

    fn lock_rec(&self, key: &Bytes) -> Option<(Bytes, u64, u64)> {
        self.locks.get(key).filter(|l| self.now < l.2).cloned()
    }

    fn lock_grant_first(&mut self, key: &Bytes) -> bool {
        let Some(w) = self.take_first(true, key) else { return false };
        let fence = self.env.next_fence();
        self.locks.insert(key.clone(), (w.arg.clone().expect("owner"), fence, self.now + w.lease));
        self.woken.push((w.id, Ok(arr("acquired", vec![int(fence)]))));
        true
    }

    // --- wake-ups

    /// Runs every due wake-up in time order: a lease that ran out under
    /// waiters goes to the first waiter (before a WAIT ending at the same
    /// time; by primitive then key among leases), then WAITs that passed (by id).
    fn events(&mut self) {
        loop {
            let mut best: Option<(u64, u8, u8, Bytes, u64)> = None;
            let mut consider = |c: (u64, u8, u8, Bytes, u64)| {
                if best.as_ref().is_none_or(|b| c < *b) {
                    best = Some(c);
                }
            };
            for w in &self.waiters {
                let until = if w.lock {
                    self.locks.get(&w.key).map(|l| l.2)
                } else {
                    match self.idem.get(&w.key) {
                        Some((_, MIdem::Running { until, .. })) => Some(*until),
                        _ => None,
                    }
                };
                if let Some(until) = until.filter(|&u| u <= self.now) {
                    consider((until, 0, w.lock as u8, w.key.clone(), 0));
                }
                if w.deadline <= self.now {
                    consider((w.deadline, 1, 0, Bytes::new(), w.id));
                }
            }
            let Some((_, class, lock, key, id)) = best else { return };
            if class == 0 && lock == 0 {
                let Some((fp, MIdem::Running { attempt, .. })) = self.idem.get(&key).cloned() else { unreachable!() };
                let w = self.take_first(false, &key).expect("a waiter");
                let r = self.start(&key, fp, attempt + 1, w.lease);
                self.woken.push((w.id, Ok(r)));
            } else if class == 0 {
                self.lock_grant_first(&key);
            } else {
                let i = self.waiters.iter().position(|w| w.id == id).expect("waiter");
                let w = self.waiters.remove(i);
                let r = if w.lock {
                    let (owner, _, until) = self.locks[&w.key].clone();
                    arr("busy", vec![Reply::Bulk(owner), int(until.saturating_sub(self.now))])
                } else {
                    match &self.idem[&w.key].1 {
                        MIdem::Running { fence, until, .. } => self.running_reply(*fence, *until),
                        other => panic!("a waiter outlived its attempt: {other:?}"),
                    }
                };
                self.woken.push((w.id, Ok(r)));
            }
        }
    }

    fn cancel(&mut self, id: u64) {
        self.waiters.retain(|w| w.id != id);
    }

    // --- commands

    /// Applies one command; `None` means parked.
    fn apply(&mut self, cmd: &Command, waiter: u64) -> Option<Out> {
        self.events();
        let now = self.now;
        Some(Ok(match cmd {
            Command::IdemBegin { key, fingerprint, lease_ms, wait_ms } => match self.idem_rec(key) {
                None => self.start(key, fingerprint.clone(), 1, *lease_ms),
                Some((fp, _)) if Self::conflict(&fp, fingerprint) => return Some(Err(ErrorCode::Mismatch)),
                Some((_, MIdem::Done { result, .. })) => arr("done", vec![Reply::Bulk(result)]),
                Some((_, MIdem::Running { fence, until, .. })) if now < until => {
                    if *wait_ms > 0 {
                        return self.park(waiter, false, key, *wait_ms, *lease_ms, fingerprint.clone());
                    }
                    self.running_reply(fence, until)
                }
                Some((fp, MIdem::Running { attempt, .. })) => self.start(key, fp, attempt + 1, *lease_ms),
            },
            Command::IdemCommit { key, fence, result, keep_ms } => {
                if !self.idem_holds(key, *fence) {
                    return Some(Err(ErrorCode::Stale));
                }
                let fp = self.idem[key].0.clone();
                self.idem.insert(key.clone(), (fp, MIdem::Done { result: result.clone(), keep_until: now + keep_ms }));
                while let Some(w) = self.take_first(false, key) {
                    self.woken.push((w.id, Ok(arr("done", vec![Reply::Bulk(result.clone())]))));
                }
                arr("ok", vec![])
            }
            Command::IdemAbort { key, fence } => {
                if !self.idem_holds(key, *fence) {
                    return Some(Err(ErrorCode::Stale));
                }
                self.idem.remove(key);
                self.idem_after_removal(key);
                arr("ok", vec![])
            }
            Command::IdemRenew { key, fence, lease_ms } => {
                if !self.idem_holds(key, *fence) {
                    return Some(Err(ErrorCode::Stale));
                }
                let (fp, st) = self.idem[key].clone();
                let MIdem::Running { attempt, .. } = st else { unreachable!() };
                self.idem.insert(key.clone(), (fp, MIdem::Running { fence: *fence, attempt, until: now + lease_ms }));
                arr("renewed", vec![int(*fence)])
            }
            Command::IdemGet { key } => match self.idem_rec(key) {
                Some((_, MIdem::Running { fence, until, .. })) if now < until => self.running_reply(fence, until),
                Some((_, MIdem::Done { result, .. })) => arr("done", vec![Reply::Bulk(result)]),
                _ => arr("absent", vec![]),
            },
            Command::IdemDel { key } => {
                if self.idem_rec(key).is_none() {
                    Reply::Int(0)
                } else {
                    self.idem.remove(key);
                    self.idem_after_removal(key);
                    Reply::Int(1)
                }
            }
            Command::Claim { key, owner, ttl_ms } => match self.claim_holder(key) {
                Some(h) if h != owner => arr("held", vec![Reply::Bulk(h)]),
                _ => {
                    self.claims.insert(key.clone(), (owner.clone(), ttl_ms.map(|t| now + t)));
                    arr("claimed", vec![])
                }
            },
            Command::ClaimAll { owner, keys } => {
                let mut held: Vec<Reply> = Vec::new();
                let mut seen: Vec<&Bytes> = Vec::new();
                for k in keys {
                    if let Some(h) = self.claim_holder(k).filter(|h| h != owner) {
                        if !seen.contains(&k) {
                            seen.push(k);
                            held.push(Reply::Bulk(k.clone()));
                            held.push(Reply::Bulk(h));
                        }
                    }
                }
                if !held.is_empty() {
                    arr("held", held)
                } else {
                    for k in keys {
                        self.claims.insert(k.clone(), (owner.clone(), None));
                    }
                    arr("claimed", vec![])
                }
            }
            Command::Release { key, owner } => {
                if self.claim_holder(key).as_ref() == Some(owner) {
                    self.claims.remove(key);
                    Reply::Int(1)
                } else {
                    Reply::Int(0)
                }
            }
            Command::Owner { key } => self.claim_holder(key).map_or(Reply::Nil, Reply::Bulk),
            Command::Lock { name, owner, lease_ms, wait_ms } => loop {
                match self.lock_rec(name) {
                    Some((o, fence, _)) if o == owner => {
                        self.locks.insert(name.clone(), (o, fence, now + lease_ms));
                        break arr("acquired", vec![int(fence)]);
                    }
                    Some((o, _, until)) => {
                        if *wait_ms > 0 {
                            return self.park(waiter, true, name, *wait_ms, *lease_ms, Some(owner.clone()));
                        }
                        break arr("busy", vec![Reply::Bulk(o), int(until - now)]);
                    }
                    None => {
                        if self.lock_grant_first(name) {
                            continue;
                        }
                        let fence = self.env.next_fence();
                        self.locks.insert(name.clone(), (owner.clone(), fence, now + lease_ms));
                        break arr("acquired", vec![int(fence)]);
                    }
                }
            },
            Command::Renew { name, owner, lease_ms } => match self.lock_rec(name) {
                Some((o, fence, _)) if o == owner => {
                    self.locks.insert(name.clone(), (o, fence, now + lease_ms));
                    arr("renewed", vec![int(fence)])
                }
                _ => arr("lost", vec![]),
            },
            Command::Unlock { name, owner } => match self.lock_rec(name) {
                Some((o, _, _)) if o == owner => {
                    self.locks.remove(name);
                    self.lock_grant_first(name);
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            },
            Command::LockInfo { name } => match self.lock_rec(name) {
                Some((o, fence, until)) => arr(
                    "held",
                    vec![Reply::Bulk(o), int(fence), int(until - now), int(self.waiters_of(true, name) as u64)],
                ),
                None => arr("free", vec![]),
            },
            Command::TokenNew { scope, ttl_ms } => {
                let token = hex(self.env.random_token());
                self.tokens.push((scope.clone(), token.clone(), now + ttl_ms));
                Reply::Bulk(token)
            }
            Command::TokenUse { scope, token } => {
                let i = self.tokens.iter().position(|(s, t, exp)| s == scope && t == token && now < *exp);
                match i {
                    Some(i) => {
                        self.tokens.remove(i);
                        Reply::Int(1)
                    }
                    None => Reply::Int(0),
                }
            }
            Command::CounterAdd { key, delta, min, max, op, keep_ms } => {
                if let Some(op) = op {
                    if let Some(o) = self.ops.iter().find(|o| o.0 == key && o.1 == op && now < o.3) {
                        return Some(Ok(arr("replayed", vec![Reply::Int(o.2)])));
                    }
                }
                let cur = self.counters.get(key).copied().unwrap_or(0);
                match cur.checked_add(*delta) {
                    Some(v) if min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m) => {
                        self.counters.insert(key.clone(), v);
                        if let Some(op) = op {
                            self.ops.retain(|o| !(o.0 == key && o.1 == op));
                            self.ops.push((key.clone(), op.clone(), v, now + keep_ms));
                        }
                        arr("ok", vec![Reply::Int(v)])
                    }
                    _ => arr("refused", vec![Reply::Int(cur)]),
                }
            }
            Command::CounterGet { key } => Reply::Int(self.counters.get(key).copied().unwrap_or(0)),
            Command::ValueGet { key } => match self.values.get(key) {
                Some((v, ver)) => Reply::Array(vec![Reply::Bulk(v.clone()), int(*ver)]),
                None => Reply::Nil,
            },
            Command::ValueSet { key, value, if_version } => {
                let cur = self.values.get(key).map_or(0, |v| v.1);
                if if_version.is_some_and(|v| v != cur) {
                    arr("conflict", vec![int(cur)])
                } else {
                    self.values.insert(key.clone(), (value.clone(), cur + 1));
                    arr("ok", vec![int(cur + 1)])
                }
            }
            Command::FsmMove { key, to, from } => {
                let cur = self.fsm.get(key).cloned().unwrap_or_else(|| Bytes::from_static(b"none"));
                if cur == to {
                    arr("already", vec![Reply::Bulk(to.clone())])
                } else if from.contains(&cur) {
                    self.fsm.insert(key.clone(), to.clone());
                    arr("moved", vec![Reply::Bulk(to.clone())])
                } else {
                    arr("refused", vec![Reply::Bulk(cur)])
                }
            }
            Command::FsmGet { key } => self.fsm.get(key).cloned().map_or(Reply::Nil, Reply::Bulk),
            Command::SlotsReserve { resource, first, last, holder, size } => {
                let existing = self.slots.get(resource);
                if let (Some(e), Some(s)) = (existing, size) {
                    if e.len() != *s as usize {
                        return Some(Err(ErrorCode::Err));
                    }
                }
                let n = existing.map_or(size.unwrap_or(48) as usize, |e| e.len());
                if *last as usize >= n {
                    return Some(Err(ErrorCode::Err));
                }
                let mut conflicts = Vec::new();
                if let Some(e) = existing {
                    for i in *first..=*last {
                        if let Some(h) = e[i as usize].as_ref().filter(|h| *h != holder) {
                            conflicts.push(Reply::Int(i as i64));
                            conflicts.push(Reply::Bulk(h.clone()));
                        }
                    }
                }
                if !conflicts.is_empty() {
                    arr("conflict", conflicts)
                } else {
                    let e = self.slots.entry(resource.clone()).or_insert_with(|| vec![None; n]);
                    for i in *first..=*last {
                        e[i as usize] = Some(holder.clone());
                    }
                    arr("reserved", vec![])
                }
            }
            Command::SlotsRelease { resource, first, last, holder } => {
                let mut freed = 0;
                if let Some(e) = self.slots.get_mut(resource) {
                    for (i, s) in e.iter_mut().enumerate() {
                        if (*first as usize..=*last as usize).contains(&i) && s.as_ref() == Some(holder) {
                            *s = None;
                            freed += 1;
                        }
                    }
                    if e.iter().all(Option::is_none) {
                        self.slots.remove(resource);
                    }
                }
                Reply::Int(freed)
            }
            Command::SlotsGet { resource } => Reply::Array(
                self.slots
                    .get(resource)
                    .map(|e| e.iter().map(|s| s.clone().map_or(Reply::Nil, Reply::Bulk)).collect())
                    .unwrap_or_default(),
            ),
        }))
    }

    fn claim_holder(&self, key: &Bytes) -> Option<Bytes> {
        self.claims.get(key).filter(|c| c.1.is_none_or(|e| self.now < e)).map(|c| c.0.clone())
    }

    /// Records that never expire: they must survive any tick.
    fn permanent_records(&self) -> usize {
        self.claims.values().filter(|c| c.1.is_none()).count()
            + self.counters.values().filter(|v| **v != 0).count()
            + self.values.len()
            + self.fsm.len()
            + self.slots.len()
    }
}

// ---------------------------------------------------------------------------
// Generated steps.

#[derive(Clone, Debug)]
enum Op {
    Begin { k: u8, fp: Option<u8>, lease: Option<u64>, wait: u64 },
    Commit { k: u8, fence: u8, result: u8, keep: Option<u64> },
    Abort { k: u8, fence: u8 },
    IdemRenew { k: u8, fence: u8, lease: u64 },
    IdemGet { k: u8 },
    IdemDel { k: u8 },
    Claim { k: u8, o: u8, ttl: Option<u64> },
    ClaimAll { o: u8, ks: Vec<u8> },
    Release { k: u8, o: u8 },
    Owner { k: u8 },
    Lock { k: u8, o: u8, lease: u64, wait: u64 },
    Renew { k: u8, o: u8, lease: u64 },
    Unlock { k: u8, o: u8 },
    LockInfo { k: u8 },
    TokenNew { k: u8, ttl: u64 },
    TokenUse { k: u8, pick: u8 },
    CounterAdd { k: u8, delta: i64, min: Option<i64>, max: Option<i64>, op: Option<u8>, keep: Option<u64> },
    CounterGet { k: u8 },
    ValueSet { k: u8, v: u8, ifv: Option<u64> },
    ValueGet { k: u8 },
    FsmMove { k: u8, to: u8, from: Vec<u8> },
    FsmGet { k: u8 },
    SlotsReserve { k: u8, first: u32, last: u32, h: u8, size: Option<u32> },
    SlotsRelease { k: u8, first: u32, last: u32, h: u8 },
    SlotsGet { k: u8 },
}

#[derive(Clone, Debug)]
enum Step {
    Cmd(Op),
    Advance(u64),
    Tick,
    Cancel(u8),
}

/// Mostly one key, so that commands meet each other's records often.
fn key() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 1 => Just(1)]
}
fn owner() -> impl Strategy<Value = u8> {
    0u8..3
}
fn short_ms() -> impl Strategy<Value = u64> {
    prop_oneof![Just(1u64), Just(20), Just(50), Just(100), Just(300)]
}
fn wait_ms() -> impl Strategy<Value = u64> {
    prop_oneof![2 => Just(0u64), 1 => Just(20), 1 => Just(50), 1 => Just(100), 1 => Just(250)]
}

fn idem_op(wait: impl Strategy<Value = u64>) -> impl Strategy<Value = Op> {
    let fp = prop_oneof![Just(None), Just(Some(0u8)), Just(Some(1))];
    let keep = prop_oneof![3 => short_ms().prop_map(Some), 1 => Just(None)];
    prop_oneof![
        4 => (key(), fp, proptest::option::of(short_ms()), wait)
            .prop_map(|(k, fp, lease, wait)| Op::Begin { k, fp, lease, wait }),
        2 => (key(), any::<u8>(), 0u8..2, keep).prop_map(|(k, fence, result, keep)| Op::Commit { k, fence, result, keep }),
        2 => (key(), any::<u8>()).prop_map(|(k, fence)| Op::Abort { k, fence }),
        2 => (key(), any::<u8>(), short_ms()).prop_map(|(k, fence, lease)| Op::IdemRenew { k, fence, lease }),
        1 => key().prop_map(|k| Op::IdemGet { k }),
        1 => key().prop_map(|k| Op::IdemDel { k }),
    ]
}

fn lock_op(wait: impl Strategy<Value = u64>) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (key(), owner(), short_ms(), wait).prop_map(|(k, o, lease, wait)| Op::Lock { k, o, lease, wait }),
        1 => (key(), owner(), short_ms()).prop_map(|(k, o, lease)| Op::Renew { k, o, lease }),
        2 => (key(), owner()).prop_map(|(k, o)| Op::Unlock { k, o }),
        1 => key().prop_map(|k| Op::LockInfo { k }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let claim = prop_oneof![
        (key(), owner(), proptest::option::of(short_ms())).prop_map(|(k, o, ttl)| Op::Claim { k, o, ttl }),
        (owner(), proptest::collection::vec(0u8..3, 1..4)).prop_map(|(o, ks)| Op::ClaimAll { o, ks }),
        (key(), owner()).prop_map(|(k, o)| Op::Release { k, o }),
        key().prop_map(|k| Op::Owner { k }),
    ];
    let token = prop_oneof![
        (key(), short_ms()).prop_map(|(k, ttl)| Op::TokenNew { k, ttl }),
        (key(), any::<u8>()).prop_map(|(k, pick)| Op::TokenUse { k, pick }),
    ];
    let bound = || proptest::option::of(prop_oneof![Just(-2i64), Just(0), Just(3), Just(5)]);
    let delta = prop_oneof![8 => -3i64..=3, 1 => Just(i64::MAX), 1 => Just(i64::MIN)];
    let counter = prop_oneof![
        4 => (key(), delta, bound(), bound(), proptest::option::of(0u8..2), proptest::option::of(short_ms()))
            .prop_map(|(k, delta, min, max, op, keep)| Op::CounterAdd { k, delta, min, max, op, keep }),
        1 => key().prop_map(|k| Op::CounterGet { k }),
    ];
    let value = prop_oneof![
        (key(), 0u8..2, proptest::option::of(0u64..4)).prop_map(|(k, v, ifv)| Op::ValueSet { k, v, ifv }),
        key().prop_map(|k| Op::ValueGet { k }),
    ];
    let fsm = prop_oneof![
        3 => (key(), 0u8..3, proptest::collection::vec(0u8..4, 1..3)).prop_map(|(k, to, from)| Op::FsmMove { k, to, from }),
        1 => key().prop_map(|k| Op::FsmGet { k }),
    ];
    let slots = prop_oneof![
        3 => (key(), 0u32..6, 0u32..3, owner(), proptest::option::of(prop_oneof![Just(3u32), Just(6), Just(48)]))
            .prop_map(|(k, first, len, h, size)| Op::SlotsReserve { k, first, last: first + len, h, size }),
        2 => (key(), 0u32..6, 0u32..3, owner())
            .prop_map(|(k, first, len, h)| Op::SlotsRelease { k, first, last: first + len, h }),
        1 => key().prop_map(|k| Op::SlotsGet { k }),
    ];
    prop_oneof![4 => idem_op(wait_ms()), 2 => claim, 4 => lock_op(wait_ms()), 1 => token, 2 => counter, 1 => value, 1 => fsm, 2 => slots]
}

fn step_with(op: impl Strategy<Value = Op>) -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => op.prop_map(Step::Cmd),
        4 => prop_oneof![
            4 => Just(1u64), 4 => Just(20), 4 => Just(50), 3 => Just(100), 1 => Just(300),
            1 => Just(1000), 1 => Just(KEEP_MS_DEFAULT)
        ].prop_map(Step::Advance),
        2 => Just(Step::Tick),
        1 => any::<u8>().prop_map(Step::Cancel),
    ]
}

/// Any primitive.
fn step() -> impl Strategy<Value = Step> {
    step_with(op())
}

/// Only the primitives with waiters, to exercise parking and handovers.
fn waiting_step() -> impl Strategy<Value = Step> {
    let long_wait = || prop_oneof![1 => Just(0u64), 2 => Just(100), 2 => Just(300), 1 => Just(1000)];
    step_with(prop_oneof![idem_op(long_wait()), lock_op(long_wait())])
}

/// The argument list of `op`. COMMIT, ABORT and RENEW usually name the key's
/// current fence (from the model), sometimes a small arbitrary one.
fn args(op: &Op, m: &Model) -> Vec<String> {
    let k = |p: &str, k: &u8| format!("{p}{k}");
    let o = |o: &u8| format!("o{o}");
    let fence = |key: &u8, pick: &u8| -> String {
        let current = match m.idem.get(format!("i{key}").as_bytes()) {
            Some((_, MIdem::Running { fence, .. })) => Some(*fence),
            _ => None,
        };
        match current {
            Some(f) if !pick.is_multiple_of(4) => f.to_string(),
            _ => (pick / 4 % 6).to_string(),
        }
    };
    let mut v: Vec<String> = match op {
        Op::Begin { k: key, fp, lease, wait } => {
            let mut v = vec!["IDEM.BEGIN".into(), k("i", key)];
            if let Some(fp) = fp {
                v.extend(["FP".into(), format!("fp{fp}")]);
            }
            if let Some(l) = lease {
                v.extend(["LEASE".into(), l.to_string()]);
            }
            v.extend(["WAIT".into(), wait.to_string()]);
            v
        }
        Op::Commit { k: key, fence: f, result, keep } => {
            let mut v = vec!["IDEM.COMMIT".into(), k("i", key), fence(key, f), format!("r{result}")];
            if let Some(keep) = keep {
                v.extend(["KEEP".into(), keep.to_string()]);
            }
            v
        }
        Op::Abort { k: key, fence: f } => vec!["IDEM.ABORT".into(), k("i", key), fence(key, f)],
        Op::IdemRenew { k: key, fence: f, lease } => {
            vec!["IDEM.RENEW".into(), k("i", key), fence(key, f), "LEASE".into(), lease.to_string()]
        }
        Op::IdemGet { k: key } => vec!["IDEM.GET".into(), k("i", key)],
        Op::IdemDel { k: key } => vec!["IDEM.DEL".into(), k("i", key)],
        Op::Claim { k: key, o: ow, ttl } => {
            let mut v = vec!["CLAIM".into(), k("c", key), o(ow)];
            if let Some(t) = ttl {
                v.extend(["TTL".into(), t.to_string()]);
            }
            v
        }
        Op::ClaimAll { o: ow, ks } => {
            let mut v = vec!["CLAIM.ALL".into(), o(ow)];
            v.extend(ks.iter().map(|key| k("c", key)));
            v
        }
        Op::Release { k: key, o: ow } => vec!["RELEASE".into(), k("c", key), o(ow)],
        Op::Owner { k: key } => vec!["OWNER".into(), k("c", key)],
        Op::Lock { k: key, o: ow, lease, wait } => {
            vec!["LOCK".into(), k("l", key), o(ow), "LEASE".into(), lease.to_string(), "WAIT".into(), wait.to_string()]
        }
        Op::Renew { k: key, o: ow, lease } => {
            vec!["RENEW".into(), k("l", key), o(ow), "LEASE".into(), lease.to_string()]
        }
        Op::Unlock { k: key, o: ow } => vec!["UNLOCK".into(), k("l", key), o(ow)],
        Op::LockInfo { k: key } => vec!["LOCK.INFO".into(), k("l", key)],
        Op::TokenNew { k: key, ttl } => vec!["TOKEN.NEW".into(), k("t", key), "TTL".into(), ttl.to_string()],
        Op::TokenUse { k: key, pick } => {
            let n = m.env.tokens as usize;
            // Mostly the newest token, sometimes an older or unknown one.
            let t = if n == 0 || pick % 8 == 0 {
                "nope".to_string()
            } else {
                let raw = if pick % 8 < 5 { n as u8 } else { (*pick as usize % n + 1) as u8 };
                String::from_utf8(hex([raw; 16]).to_vec()).expect("hex")
            };
            vec!["TOKEN.USE".into(), k("t", key), t]
        }
        Op::CounterAdd { k: key, delta, min, max, op, keep } => {
            let mut v = vec!["COUNTER.ADD".into(), k("n", key), delta.to_string()];
            if let Some(x) = min {
                v.extend(["MIN".into(), x.to_string()]);
            }
            if let Some(x) = max {
                v.extend(["MAX".into(), x.to_string()]);
            }
            if let Some(x) = op {
                v.extend(["OP".into(), format!("op{x}")]);
                if let Some(keep) = keep {
                    v.extend(["KEEP".into(), keep.to_string()]);
                }
            }
            v
        }
        Op::CounterGet { k: key } => vec!["COUNTER.GET".into(), k("n", key)],
        Op::ValueSet { k: key, v: val, ifv } => {
            let mut v = vec!["VALUE.SET".into(), k("v", key), format!("val{val}")];
            if let Some(x) = ifv {
                v.extend(["IFVERSION".into(), x.to_string()]);
            }
            v
        }
        Op::ValueGet { k: key } => vec!["VALUE.GET".into(), k("v", key)],
        Op::FsmMove { k: key, to, from } => {
            let mut v = vec!["FSM.MOVE".into(), k("f", key), format!("s{to}"), "FROM".into()];
            v.extend(from.iter().map(|s| if *s == 3 { "none".to_string() } else { format!("s{s}") }));
            v
        }
        Op::FsmGet { k: key } => vec!["FSM.GET".into(), k("f", key)],
        Op::SlotsReserve { k: key, first, last, h, size } => {
            let mut v = vec!["SLOTS.RESERVE".into(), k("s", key), first.to_string(), last.to_string(), format!("h{h}")];
            if let Some(s) = size {
                v.extend(["SIZE".into(), s.to_string()]);
            }
            v
        }
        Op::SlotsRelease { k: key, first, last, h } => {
            vec!["SLOTS.RELEASE".into(), k("s", key), first.to_string(), last.to_string(), format!("h{h}")]
        }
        Op::SlotsGet { k: key } => vec!["SLOTS.GET".into(), k("s", key)],
    };
    v.shrink_to_fit();
    v
}

// ---------------------------------------------------------------------------
// The runner.

fn code(r: &CmdResult) -> Out {
    r.clone().map_err(|e| e.code)
}

/// Commands that reveal the state of every key. With `first`, also those
/// that reveal hidden parts (FP, attempt, op ids, tokens) by changing them.
fn probes(m: &Model, first: bool) -> Vec<String> {
    let mut v = Vec::new();
    for k in 0..2 {
        if first {
            v.push(format!("IDEM.BEGIN i{k} FP fp0 LEASE 50"));
        }
        v.push(format!("IDEM.GET i{k}"));
        v.push(format!("LOCK.INFO l{k}"));
        v.push(format!("COUNTER.GET n{k}"));
        for op in 0..2 {
            v.push(format!("COUNTER.ADD n{k} 0 OP op{op} KEEP 1"));
        }
        v.push(format!("VALUE.GET v{k}"));
        v.push(format!("FSM.GET f{k}"));
        v.push(format!("SLOTS.GET s{k}"));
    }
    for k in 0..3 {
        v.push(format!("OWNER c{k}"));
    }
    // Scope t0 is probed at once, t1 later, so that expiry shows too.
    for raw in 1..=m.env.tokens {
        let t = String::from_utf8(hex([raw; 16]).to_vec()).expect("hex");
        v.push(format!("TOKEN.USE t0 {t}"));
        if !first {
            v.push(format!("TOKEN.USE t1 {t}"));
        }
    }
    v
}

fn dump_sorted(m: &Machine, now: u64) -> Vec<String> {
    let mut v = Vec::new();
    m.dump(now, &mut |c| v.push(format!("{c:?}")));
    v.sort();
    v
}

fn run(steps: &[Step], max_waiters: usize) -> Result<(), TestCaseError> {
    let limits = Limits { waiters_per_key_max: max_waiters, ..Limits::default() };
    let mut m = Machine::new(limits.clone());
    let mut model = Model::new(max_waiters);
    let mut env = SeqEnv::default();
    let mut log: Vec<Change> = Vec::new();
    let mut next_waiter = 0u64;
    let mut effects = Effects::default();
    for (i, s) in steps.iter().enumerate() {
        effects.clear();
        let now = model.now;
        match s {
            Step::Advance(ms) => {
                model.now += ms;
                continue;
            }
            Step::Tick => {
                m.tick(now, &mut env, &mut effects);
                model.events();
                prop_assert!(m.next_deadline_ms().is_none_or(|t| t > now), "step {i}: tick left due work");
            }
            Step::Cancel(pick) => {
                if model.waiters.is_empty() {
                    continue;
                }
                let id = model.waiters[*pick as usize % model.waiters.len()].id;
                m.cancel(WaiterId(id));
                model.cancel(id);
            }
            Step::Cmd(op) => {
                let a: Vec<Bytes> = args(op, &model).into_iter().map(Bytes::from).collect();
                let Ok(cmd) = Command::parse(&a, &limits) else { continue };
                next_waiter += 1;
                let got = match m.apply(now, &cmd, Some(WaiterId(next_waiter)), &mut env, &mut effects) {
                    Applied::Done(r) => Some(code(&r)),
                    Applied::Parked => None,
                };
                let want = model.apply(&cmd, next_waiter);
                prop_assert_eq!(got, want, "step {}: {:?} at {}", i, cmd, now);
            }
        }
        let got: Vec<(u64, Out)> = effects.woken.iter().map(|(id, r)| (id.0, code(r))).collect();
        let want = std::mem::take(&mut model.woken);
        prop_assert_eq!(got, want, "step {}: woken replies of {:?} at {}", i, s, now);
        log.append(&mut effects.changes);
    }

    // Replaying the log, and replaying a dump, rebuild the dumped state.
    let now = model.now;
    let want = dump_sorted(&m, now);
    let mut from_log = Machine::new(limits.clone());
    log.iter().for_each(|c| from_log.replay(c));
    prop_assert_eq!(dump_sorted(&from_log, now), want.clone(), "replay of the log");
    let mut from_dump = Machine::new(limits.clone());
    m.dump(now, &mut |c| from_dump.replay(&c));
    prop_assert_eq!(dump_sorted(&from_dump, now), want, "replay of the dump");

    // Equal dumps prove little if `dump` itself leaves something out, so
    // the restored machines must also *behave* like the original and the
    // model: probe every key at several later times. Waiters are not
    // persisted, so the original's are cancelled first.
    for w in std::mem::take(&mut model.waiters) {
        m.cancel(WaiterId(w.id));
    }
    let mut restored = [(from_log, env.clone()), (from_dump, env.clone())];
    for (dt, first) in [(0, true), (20, false), (100, false), (1000, false), (KEEP_MS_DEFAULT + 1000, false)] {
        model.now = now + dt;
        for probe in probes(&model, first) {
            let a: Vec<Bytes> = probe.split(' ').map(|w| Bytes::from(w.to_string())).collect();
            let cmd = Command::parse(&a, &limits).expect("probes parse");
            effects.clear();
            let Applied::Done(got) = m.apply(model.now, &cmd, None, &mut env, &mut effects) else { unreachable!() };
            let want = model.apply(&cmd, 0).expect("probes never park");
            prop_assert_eq!(code(&got), want.clone(), "probe {} at +{}", probe, dt);
            for (i, (r, renv)) in restored.iter_mut().enumerate() {
                let Applied::Done(got) = r.apply(model.now, &cmd, None, renv, &mut effects) else { unreachable!() };
                prop_assert_eq!(
                    code(&got),
                    want.clone(),
                    "restored machine {} (0: log, 1: dump): probe {} at +{}",
                    i,
                    probe,
                    dt
                );
            }
        }
    }
    let now = model.now;

    // Far in the future only records without a deadline remain. The first
    // tick may still hand a lease to a waiter (leases start when granted),
    // which the second reclaims.
    for far in [now + 3 * KEEP_MS_DEFAULT, now + 6 * KEEP_MS_DEFAULT] {
        effects.clear();
        m.tick(far, &mut env, &mut effects);
        model.now = far;
        model.events();
        let got: Vec<(u64, Out)> = effects.woken.iter().map(|(id, r)| (id.0, code(r))).collect();
        prop_assert_eq!(got, std::mem::take(&mut model.woken), "woken replies of the final ticks");
        for (r, renv) in restored.iter_mut() {
            r.tick(far, renv, &mut effects);
        }
    }
    for (r, _) in &restored {
        prop_assert_eq!(r.len(), model.permanent_records(), "records a restored machine keeps");
    }
    prop_assert_eq!(m.len(), model.permanent_records(), "records left after every deadline");
    prop_assert_eq!(m.next_deadline_ms(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn machine_matches_model(steps in proptest::collection::vec(step(), 1..120)) {
        run(&steps, 3)?;
    }

    #[test]
    fn machine_matches_model_on_waits_and_handovers(steps in proptest::collection::vec(waiting_step(), 1..80)) {
        run(&steps, 3)?;
    }

    #[test]
    fn machine_matches_model_with_one_waiter_per_key(steps in proptest::collection::vec(step(), 1..60)) {
        run(&steps, 1)?;
    }
}
