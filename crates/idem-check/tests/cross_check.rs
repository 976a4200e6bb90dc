//! The Wing–Gong–Lowe search agrees with a brute-force search over every
//! order of every subset of unknown ops, on small random histories of the
//! time-dependent primitives (locks, idempotency keys) and a counter.
//!
//! The brute force shares only the models with the checker: it is a second
//! opinion on the search (real-time order, unknown outcomes, backtracking
//! over nondeterministic steps, the cache), not on the models, which
//! `known_histories.rs` pins down against the contract.

mod common;

use common::*;
use idem_check::history::{Call, History, Op, Primitive, Reply};
use idem_check::model::{CounterModel, IdemModel, LockModel, Model};
use idem_check::{check_linearizable, CheckOptions, Verdict};
use proptest::prelude::*;

fn brute<M: Model>(m: &M, ops: &[Op]) -> bool {
    fn go<M: Model>(m: &M, ops: &[Op], placed: &mut Vec<bool>, s: &M::State) -> bool {
        let known_left = ops.iter().zip(placed.iter()).any(|(o, p)| !p && o.return_ns.is_some());
        if !known_left {
            return true;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            // Every unplaced op with a known return before this call must
            // come first.
            let blocked =
                ops.iter().zip(placed.iter()).any(|(b, p)| !p && b.return_ns.is_some_and(|r| r < ops[i].invoke_ns));
            if blocked {
                continue;
            }
            for next in m.step(s, &ops[i]) {
                placed[i] = true;
                let ok = go(m, ops, placed, &next);
                placed[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }
    go(m, ops, &mut vec![false; ops.len()], &m.init())
}

fn brute_verdict(history: &History) -> Verdict {
    let ops: Vec<Op> = history.ops().to_vec();
    let Some((p, _)) = ops.first().and_then(|o| o.call.partition(o.reply.as_ref())) else { return Verdict::Pass };
    let ok = match p {
        Primitive::Lock => brute(&LockModel::default(), &ops),
        Primitive::Idem => brute(&IdemModel::default(), &ops),
        Primitive::Counter => brute(&CounterModel, &ops),
        other => panic!("no generator for {other:?}"),
    };
    if ok {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// A small deterministic generator, so the agreement test is replayable.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn lock_op(r: &mut Rng) -> (Call, Reply) {
    let owner = r.pick(&["a", "b"]);
    let fence = 1 + r.below(3);
    match r.below(4) {
        0 => (
            lock("l", owner, 50),
            if r.below(2) == 0 { Reply::Acquired { fence } } else { Reply::Busy { holder: s(r.pick(&["a", "b"])) } },
        ),
        1 => (
            Call::Renew { name: s("l"), owner: s(owner), lease_ms: 50 },
            if r.below(2) == 0 { Reply::Renewed { fence } } else { Reply::Lost },
        ),
        2 => (Call::Unlock { name: s("l"), owner: s(owner) }, Reply::Int { n: r.below(2) as i64 }),
        _ => (
            Call::LockInfo { name: s("l") },
            if r.below(2) == 0 { Reply::LockFree } else { Reply::LockHeld { owner: s(r.pick(&["a", "b"])), fence } },
        ),
    }
}

fn idem_op(r: &mut Rng) -> (Call, Reply) {
    let fence = 1 + r.below(3);
    let result = r.pick(&["r1", "r2"]);
    match r.below(4) {
        0 => (
            begin("k", 50),
            match r.below(3) {
                0 => Reply::Started { fence, attempt: 1 + r.below(2) as u32 },
                1 => Reply::Running { fence },
                _ => Reply::Done { result: s(result) },
            },
        ),
        1 => (commit("k", fence, result), if r.below(2) == 0 { Reply::Ok } else { Reply::Stale }),
        2 => (Call::IdemAbort { key: s("k"), fence }, if r.below(2) == 0 { Reply::Ok } else { Reply::Stale }),
        _ => (
            Call::IdemGet { key: s("k") },
            match r.below(3) {
                0 => Reply::Absent,
                1 => Reply::Running { fence },
                _ => Reply::Done { result: s(result) },
            },
        ),
    }
}

fn counter_op(r: &mut Rng) -> (Call, Reply) {
    let value = r.below(5) as i64;
    if r.below(3) == 0 {
        return (Call::CounterGet { key: s("c") }, Reply::CounterValue { value });
    }
    let id = r.pick(&["x", "y", "z"]);
    let reply = match r.below(3) {
        0 => Reply::CounterOk { value },
        1 => Reply::Refused { value },
        _ => Reply::Replayed { value },
    };
    (add("c", 1 + r.below(2) as i64, 3, Some(id)), reply)
}

fn random_history(seed: u64, kind: u64) -> H {
    let mut r = Rng(seed | 1);
    let mut h = H::new();
    let n = 2 + r.below(5);
    for _ in 0..n {
        let (call, reply) = match kind {
            0 => lock_op(&mut r),
            1 => idem_op(&mut r),
            _ => counter_op(&mut r),
        };
        let inv = r.below(150);
        if r.below(5) == 0 {
            h.info(inv, call);
        } else {
            h.op(inv, inv + 1 + r.below(60), call, reply);
        }
    }
    h
}

#[test]
fn search_agrees_with_brute_force_and_both_verdicts_occur() {
    for kind in 0..3 {
        let (mut pass, mut fail) = (0, 0);
        for seed in 1..=1500u64 {
            let h = random_history(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), kind);
            let history = h.history();
            let wgl = check_linearizable(&history, CheckOptions::default()).verdict;
            assert_eq!(wgl, brute_verdict(&history), "kind {kind} seed {seed}: {:#?}", history.ops());
            match wgl {
                Verdict::Pass => pass += 1,
                _ => fail += 1,
            }
        }
        assert!(pass >= 25 && fail >= 25, "kind {kind}: {pass} pass, {fail} fail: the generator must give both");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn search_agrees_with_brute_force(seed in any::<u64>(), kind in 0u64..3) {
        let history = random_history(seed, kind).history();
        let wgl = check_linearizable(&history, CheckOptions::default()).verdict;
        prop_assert_eq!(wgl, brute_verdict(&history));
    }
}
