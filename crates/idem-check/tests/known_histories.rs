//! The checker fails known-bad histories and passes their good twins.

mod common;

use common::*;
use idem_check::history::{Call, Fault, Reply};
use idem_check::{check_linearizable, CheckOptions, SideOptions, Verdict};
use std::time::Duration;

#[test]
fn stale_read_fails_and_fresh_read_passes() {
    let mut h = H::new();
    h.op(0, 10, set("k", "a", None), Reply::ValueOk { version: 1 });
    h.op(20, 30, set("k", "b", None), Reply::ValueOk { version: 2 });
    let mut stale = h.clone();
    stale.op(40, 50, get("k"), versioned("a", 1));
    assert_eq!(stale.linear(), Verdict::Fail, "a read after a newer write saw the old value");
    let mut fresh = h.clone();
    fresh.op(40, 50, get("k"), versioned("b", 2));
    assert_eq!(fresh.linear(), Verdict::Pass);
    // A read concurrent with the second write may see either value.
    let mut concurrent = H::new();
    concurrent.op(0, 10, set("k", "a", None), Reply::ValueOk { version: 1 });
    concurrent.op(20, 30, set("k", "b", None), Reply::ValueOk { version: 2 });
    concurrent.op(25, 35, get("k"), versioned("a", 1));
    assert_eq!(concurrent.linear(), Verdict::Pass);
}

#[test]
fn lost_update_fails() {
    // Two compare-and-sets on the same version both succeed.
    let mut h = H::new();
    h.op(0, 10, set("k", "a", None), Reply::ValueOk { version: 1 });
    h.op(20, 30, set("k", "b", Some(1)), Reply::ValueOk { version: 2 });
    h.op(40, 50, set("k", "c", Some(1)), Reply::ValueOk { version: 3 });
    assert_eq!(h.linear(), Verdict::Fail);
    let mut good = H::new();
    good.op(0, 10, set("k", "a", None), Reply::ValueOk { version: 1 });
    good.op(20, 30, set("k", "b", Some(1)), Reply::ValueOk { version: 2 });
    good.op(40, 50, set("k", "c", Some(1)), Reply::Conflict { version: 2 });
    assert_eq!(good.linear(), Verdict::Pass);
    // Two counter adds that each saw the same value lost one increment.
    let mut counter = H::new();
    counter.op(0, 10, add("c", 1, 100, None), Reply::CounterOk { value: 1 });
    counter.op(20, 30, add("c", 1, 100, None), Reply::CounterOk { value: 1 });
    assert_eq!(counter.linear(), Verdict::Fail);
}

#[test]
fn fence_reused_fails() {
    let mut h = H::new();
    h.op(0, 10, lock("l", "a", 1000), Reply::Acquired { fence: 5 });
    h.op(20, 30, Call::Unlock { name: s("l"), owner: s("a") }, Reply::Int { n: 1 });
    h.op(40, 50, lock("l", "b", 1000), Reply::Acquired { fence: 5 });
    assert_eq!(h.linear(), Verdict::Fail);
    assert!(h.side_kinds().contains(&"fence-reused"), "{:?}", h.side());
    // Across keys too: one server-wide sequence.
    let mut across = H::new();
    across.op(0, 10, lock("l", "a", 1000), Reply::Acquired { fence: 5 });
    across.op(20, 30, begin("k", 1000), Reply::Started { fence: 5, attempt: 1 });
    assert_eq!(across.linear(), Verdict::Pass, "each key alone is fine");
    assert_eq!(across.side_kinds(), vec!["fence-reused"]);
    let mut good = H::new();
    good.op(0, 10, lock("l", "a", 1000), Reply::Acquired { fence: 5 });
    good.op(20, 30, Call::Unlock { name: s("l"), owner: s("a") }, Reply::Int { n: 1 });
    good.op(40, 50, lock("l", "b", 1000), Reply::Acquired { fence: 6 });
    assert_eq!(good.linear(), Verdict::Pass);
    assert!(good.side().anomalies.is_empty());
}

#[test]
fn fence_going_back_after_a_restart_fails() {
    let mut h = H::new();
    h.op(0, 10, lock("l", "a", 1000), Reply::Acquired { fence: 9 });
    h.kill(20, 30);
    h.op(40, 50, lock("m", "b", 1000), Reply::Acquired { fence: 3 });
    assert_eq!(h.linear(), Verdict::Pass, "different locks: only the side check sees it");
    assert_eq!(h.side_kinds(), vec!["fence-not-increasing"]);
}

#[test]
fn double_grant_fails_and_expiry_takeover_passes() {
    let mut h = H::new();
    h.op(0, 10, lock("l", "a", 10_000), Reply::Acquired { fence: 1 });
    h.op(20, 30, lock("l", "b", 10_000), Reply::Acquired { fence: 2 });
    assert_eq!(h.linear(), Verdict::Fail, "b got a lock whose lease had 9.98 s left");
    assert_eq!(h.side_kinds(), vec!["lease-overlap"]);
    let mut good = H::new();
    good.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    good.op(20, 30, lock("l", "b", 100), Reply::Busy { holder: s("a") });
    good.op(120, 130, lock("l", "b", 100), Reply::Acquired { fence: 2 });
    good.op(140, 150, Call::Renew { name: s("l"), owner: s("a"), lease_ms: 100 }, Reply::Lost);
    assert_eq!(good.linear(), Verdict::Pass);
    assert!(good.side().anomalies.is_empty(), "{:?}", good.side());
    // Granted just before the lease could have ended: too early.
    let mut early = H::new();
    early.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    early.op(50, 90, lock("l", "b", 100), Reply::Acquired { fence: 2 });
    assert_eq!(early.linear(), Verdict::Fail);
    // A renewal after someone else took over is a stale holder resurrected.
    let mut resurrected = H::new();
    resurrected.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    resurrected.op(120, 130, lock("l", "b", 100), Reply::Acquired { fence: 2 });
    resurrected.op(140, 150, Call::Renew { name: s("l"), owner: s("a"), lease_ms: 100 }, Reply::Renewed { fence: 1 });
    assert_eq!(resurrected.linear(), Verdict::Fail);
}

#[test]
fn an_unknown_waiter_grant_given_back_early_passes_and_an_acknowledged_one_fails() {
    // `a` parks on the lock and its outcome is lost; the store hands it the
    // lock when `x` unlocks (`b` sees `a` as the holder), then gives the
    // unused grant back when `a`'s caller is gone, and `c` takes the lock
    // long before `a`'s 800 ms lease could have run out. Found by the Redis
    // run under network faults (docs/reliability.md).
    let waiting = |owner: &str| Call::Lock { name: s("l"), owner: s(owner), lease_ms: 800, wait_ms: 200 };
    let mut h = H::new();
    h.op(0, 5, lock("l", "x", 10_000), Reply::Acquired { fence: 1 });
    h.info(10, waiting("a"));
    h.op(50, 55, Call::Unlock { name: s("l"), owner: s("x") }, Reply::Int { n: 1 });
    h.op(60, 65, lock("l", "b", 800), Reply::Busy { holder: s("a") });
    h.op(100, 105, lock("l", "c", 800), Reply::Acquired { fence: 3 });
    assert_eq!(h.linear(), Verdict::Pass, "a grant nobody picked up may be given back");
    // The same with `a` answered `acquired`: its fence is known and in use,
    // so nobody else may get the lock before its lease ends.
    let mut acked = H::new();
    acked.op(0, 5, lock("l", "x", 10_000), Reply::Acquired { fence: 1 });
    acked.op(10, 58, waiting("a"), Reply::Acquired { fence: 2 });
    acked.op(50, 55, Call::Unlock { name: s("l"), owner: s("x") }, Reply::Int { n: 1 });
    acked.op(60, 65, lock("l", "b", 800), Reply::Busy { holder: s("a") });
    acked.op(100, 105, lock("l", "c", 800), Reply::Acquired { fence: 3 });
    assert_eq!(acked.linear(), Verdict::Fail);
    // Without WAIT an unknown LOCK is never parked: its grant, once seen,
    // lasts its lease.
    let mut plain = H::new();
    plain.op(0, 5, lock("l", "x", 100), Reply::Acquired { fence: 1 });
    plain.info(200, lock("l", "a", 800));
    plain.op(250, 255, lock("l", "b", 800), Reply::Busy { holder: s("a") });
    plain.op(300, 305, lock("l", "c", 800), Reply::Acquired { fence: 3 });
    assert_eq!(plain.linear(), Verdict::Fail);
}

#[test]
fn a_lease_that_never_ends_fails() {
    // 5 s after a 100 ms lease ended, without restart, the holder is still
    // reported: expiry does not work.
    let mut h = H::new();
    h.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    h.op(5000, 5010, lock("l", "b", 100), Reply::Busy { holder: s("a") });
    assert_eq!(h.linear(), Verdict::Fail);
    // Across a restart the engine clock resumes behind: allowed.
    let mut restarted = H::new();
    restarted.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    restarted.kill(50, 4000);
    restarted.op(5000, 5010, lock("l", "b", 100), Reply::Busy { holder: s("a") });
    assert_eq!(restarted.linear(), Verdict::Pass);
}

#[test]
fn overlapping_idempotency_attempts_fail() {
    let mut h = H::new();
    h.op(0, 10, begin("k", 1000), Reply::Started { fence: 1, attempt: 1 });
    h.op(100, 110, begin("k", 1000), Reply::Started { fence: 2, attempt: 2 });
    assert_eq!(h.linear(), Verdict::Fail);
    assert_eq!(h.side_kinds(), vec!["lease-overlap"]);
    let mut good = H::new();
    good.op(0, 10, begin("k", 100), Reply::Started { fence: 1, attempt: 1 });
    good.op(50, 60, begin("k", 100), Reply::Running { fence: 1 });
    good.op(200, 210, begin("k", 100), Reply::Started { fence: 2, attempt: 2 });
    good.op(220, 230, commit("k", 1, "late"), Reply::Stale);
    good.op(240, 250, commit("k", 2, "r"), Reply::Ok);
    good.op(260, 270, begin("k", 100), Reply::Done { result: s("r") });
    assert_eq!(good.linear(), Verdict::Pass);
    assert!(good.side().anomalies.is_empty(), "{:?}", good.side());
}

#[test]
fn a_commit_after_the_lease_ended_must_be_stale() {
    let mut h = H::new();
    h.op(0, 10, begin("k", 100), Reply::Started { fence: 1, attempt: 1 });
    h.op(500, 510, commit("k", 1, "r"), Reply::Ok);
    assert_eq!(h.linear(), Verdict::Fail);
}

#[test]
fn changed_replay_fails() {
    let mut h = H::new();
    h.op(0, 10, begin("k", 1000), Reply::Started { fence: 1, attempt: 1 });
    h.op(20, 30, commit("k", 1, "r1"), Reply::Ok);
    h.op(40, 50, begin("k", 1000), Reply::Done { result: s("r1") });
    h.op(60, 70, Call::IdemGet { key: s("k") }, Reply::Done { result: s("r2") });
    assert_eq!(h.linear(), Verdict::Fail);
    assert_eq!(h.side_kinds(), vec!["replay-differs"]);
}

#[test]
fn counter_past_its_bound_fails() {
    let mut h = H::new();
    h.op(0, 10, add("c", 2, 3, Some("a")), Reply::CounterOk { value: 2 });
    h.op(20, 30, add("c", 2, 3, Some("b")), Reply::CounterOk { value: 4 });
    assert_eq!(h.linear(), Verdict::Fail);
    assert_eq!(h.side_kinds(), vec!["counter-out-of-bounds"]);
    let mut good = H::new();
    good.op(0, 10, add("c", 2, 3, Some("a")), Reply::CounterOk { value: 2 });
    good.op(20, 30, add("c", 2, 3, Some("b")), Reply::Refused { value: 2 });
    good.op(40, 50, add("c", 2, 3, Some("a")), Reply::Replayed { value: 2 });
    assert_eq!(good.linear(), Verdict::Pass);
    assert!(good.side().anomalies.is_empty());
}

#[test]
fn an_op_id_applied_twice_fails() {
    let mut h = H::new();
    h.op(0, 10, add("c", 1, 100, Some("a")), Reply::CounterOk { value: 1 });
    h.op(20, 30, add("c", 1, 100, Some("a")), Reply::CounterOk { value: 2 });
    assert_eq!(h.linear(), Verdict::Fail);
    assert_eq!(h.side_kinds(), vec!["counter-op-applied-twice"]);
}

#[test]
fn unknown_outcomes_may_apply_late_or_never() {
    // An add whose reply was lost shows up later: fine.
    let mut late = H::new();
    late.info(0, add("c", 5, 100, Some("a")));
    late.op(20, 30, Call::CounterGet { key: s("c") }, Reply::CounterValue { value: 0 });
    late.op(40, 50, Call::CounterGet { key: s("c") }, Reply::CounterValue { value: 5 });
    late.op(60, 70, add("c", 5, 100, Some("a")), Reply::Replayed { value: 5 });
    assert_eq!(late.linear(), Verdict::Pass);
    // ... or never.
    let mut never = H::new();
    never.info(0, add("c", 5, 100, Some("a")));
    never.op(60, 70, add("c", 5, 100, Some("a")), Reply::CounterOk { value: 5 });
    assert_eq!(never.linear(), Verdict::Pass);
    // But not before it was sent.
    let mut early = H::new();
    early.op(0, 10, Call::CounterGet { key: s("c") }, Reply::CounterValue { value: 5 });
    early.info(20, add("c", 5, 100, Some("a")));
    assert_eq!(early.linear(), Verdict::Fail);
    // A lost LOCK may have granted: a later holder must wait its lease out.
    let mut lock_lost = H::new();
    lock_lost.info(0, lock("l", "a", 1000));
    lock_lost.op(20, 30, lock("l", "b", 1000), Reply::Busy { holder: s("a") });
    lock_lost.op(1100, 1110, lock("l", "b", 1000), Reply::Acquired { fence: 3 });
    assert_eq!(lock_lost.linear(), Verdict::Pass);
}

#[test]
fn acknowledged_commit_lost_in_a_restart_fails() {
    let mut h = H::new();
    h.op(0, 10, begin("k", 60_000), Reply::Started { fence: 1, attempt: 1 });
    h.op(20, 30, commit("k", 1, "r"), Reply::Ok);
    h.kill(40, 50);
    h.op(60, 70, Call::IdemGet { key: s("k") }, Reply::Absent);
    assert_eq!(h.linear(), Verdict::Fail);
    assert_eq!(h.side_kinds(), vec!["acknowledged-write-lost"]);
    let mut claim = H::new();
    claim.op(0, 10, Call::Claim { key: s("e"), owner: s("a") }, Reply::Claimed);
    claim.kill(40, 50);
    claim.op(60, 70, Call::Owner { key: s("e") }, Reply::Name { name: None });
    assert_eq!(claim.linear(), Verdict::Fail);
    assert_eq!(claim.side_kinds(), vec!["acknowledged-write-lost"]);
}

#[test]
fn token_spent_twice_or_issued_twice_fails() {
    let new = || Call::TokenNew { scope: s("s"), ttl_ms: 10_000 };
    let use_ = || Call::TokenUse { scope: s("s"), token: s("t1") };
    let mut h = H::new();
    h.op(0, 10, new(), Reply::Token { token: s("t1") });
    h.op(20, 30, use_(), Reply::Int { n: 1 });
    h.op(40, 50, use_(), Reply::Int { n: 1 });
    assert_eq!(h.linear(), Verdict::Fail);
    let mut twice = H::new();
    twice.op(0, 10, new(), Reply::Token { token: s("t1") });
    twice.op(20, 30, new(), Reply::Token { token: s("t1") });
    assert_eq!(twice.linear(), Verdict::Fail);
}

#[test]
fn claims_fsm_and_slots_fail_on_double_ownership() {
    let mut claim = H::new();
    claim.op(0, 10, Call::Claim { key: s("e"), owner: s("a") }, Reply::Claimed);
    claim.op(20, 30, Call::Claim { key: s("e"), owner: s("b") }, Reply::Claimed);
    assert_eq!(claim.linear(), Verdict::Fail);
    let mv =
        |to: &str, from: &[&str]| Call::FsmMove { key: s("o"), to: s(to), from: from.iter().map(|x| s(x)).collect() };
    let mut fsm = H::new();
    fsm.op(0, 10, mv("paid", &["none"]), Reply::Moved);
    fsm.op(20, 30, mv("paid", &["none"]), Reply::Moved);
    assert_eq!(fsm.linear(), Verdict::Fail, "a replayed move is `already`");
    let mut fsm_ok = H::new();
    fsm_ok.op(0, 10, mv("paid", &["none"]), Reply::Moved);
    fsm_ok.op(20, 30, mv("paid", &["none"]), Reply::Already);
    fsm_ok.op(40, 50, mv("shipped", &["none"]), Reply::FsmRefused { current: Some(s("paid")) });
    assert_eq!(fsm_ok.linear(), Verdict::Pass);
    let reserve =
        |h: &str, a: u32, b: u32| Call::SlotsReserve { resource: s("r"), first: a, last: b, holder: s(h), size: 8 };
    let mut slots = H::new();
    slots.op(0, 10, reserve("a", 0, 3), Reply::Reserved);
    slots.op(20, 30, reserve("b", 2, 5), Reply::Reserved);
    assert_eq!(slots.linear(), Verdict::Fail);
    let mut slots_ok = H::new();
    slots_ok.op(0, 10, reserve("a", 0, 3), Reply::Reserved);
    slots_ok.op(20, 30, reserve("b", 2, 5), Reply::SlotConflict { held: vec![(2, s("a")), (3, s("a"))] });
    assert_eq!(slots_ok.linear(), Verdict::Pass);
}

#[test]
fn lease_overlap_under_a_clock_fault_is_excused() {
    let mut h = H::new();
    h.fault(Fault::Clock, 5, 40);
    h.op(0, 10, lock("l", "a", 10_000), Reply::Acquired { fence: 1 });
    h.op(20, 30, lock("l", "b", 10_000), Reply::Acquired { fence: 2 });
    let side = h.side();
    assert!(side.anomalies.is_empty());
    assert_eq!(side.excused_overlaps, 1);
}

#[test]
fn a_seen_wall_clock_step_excuses_an_overlap_only_where_leases_follow_the_wall_clock() {
    // a asked for a 100 ms lease at 0 ms; b got the lock at 96 ms, 4 ms
    // early (3 ms beyond the clock's resolution).
    let history = |steps: &[(u64, u64, i64)]| {
        let mut h = H::new();
        h.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
        for &(since, at, us) in steps {
            h.host_step(since, at, us);
        }
        h.op(90, 96, lock("l", "b", 100), Reply::Acquired { fence: 2 });
        h
    };
    let wall = SideOptions { wall_clock_leases: true, ..SideOptions::default() };
    let kinds = |h: &H| h.side_with(wall).anomalies.iter().map(|a| a.kind).collect::<Vec<_>>();
    // The wall clock jumped 3 ms forward at about 50 ms: an engine counting
    // on it ended a's lease 3 ms early by the harness's clock.
    let forward = history(&[(45, 50, 3_000)]);
    let side = forward.side_with(wall);
    assert!(side.anomalies.is_empty(), "{side:?}");
    assert_eq!(side.excused_overlaps, 1);
    // Two smaller forward steps add up the same.
    assert!(kinds(&history(&[(20, 25, 1_500), (60, 65, 1_500)])).is_empty());
    // idem's own leases run on its monotonic clock: there it is an overlap.
    assert_eq!(forward.side_kinds(), vec!["lease-overlap"]);
    // Too small a step does not account for the overlap.
    assert_eq!(kinds(&history(&[(45, 50, 2_000)])), vec!["lease-overlap"]);
    // A backward step lengthens wall-clock leases: it excuses nothing.
    assert_eq!(kinds(&history(&[(45, 50, -3_000)])), vec!["lease-overlap"]);
    // A step after b's grant returned moved nothing b's grant depended on.
    let mut after = H::new();
    after.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    after.op(90, 96, lock("l", "b", 100), Reply::Acquired { fence: 2 });
    after.host_step(97, 98, 3_000);
    assert_eq!(kinds(&after), vec!["lease-overlap"]);
    // Nor one before a's lease was asked for.
    let mut before = H::new();
    before.host_step(1, 5, 3_000);
    before.op(20, 30, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    before.op(110, 116, lock("l", "b", 100), Reply::Acquired { fence: 2 });
    assert_eq!(kinds(&before), vec!["lease-overlap"]);
}

#[test]
fn an_exhausted_budget_is_unknown_never_pass() {
    // Many concurrent ops on one key, checked with no time at all.
    let mut h = H::new();
    for i in 0..2000 {
        h.op(i, i + 5000, add("c", 1, 1_000_000, None), Reply::CounterOk { value: (2000 - i) as i64 });
    }
    let report = check_linearizable(&h.history(), CheckOptions { budget: Duration::ZERO, ..CheckOptions::default() });
    assert_eq!(report.verdict, Verdict::Unknown);
}

#[test]
fn a_release_with_an_unknown_outcome_ends_the_holders_lease() {
    // The holder sent UNLOCK, the server died: the lock may be free, and
    // the holder no longer relies on it.
    let mut h = H::new();
    h.op(0, 10, lock("l", "a", 10_000), Reply::Acquired { fence: 1 });
    h.info(20, Call::Unlock { name: s("l"), owner: s("a") });
    h.kill(25, 40);
    h.op(50, 60, lock("l", "b", 10_000), Reply::Acquired { fence: 2 });
    assert_eq!(h.linear(), Verdict::Pass);
    assert!(h.side().anomalies.is_empty(), "{:?}", h.side());
}

#[test]
fn a_release_concurrent_with_a_reclaim_may_empty_the_claim() {
    // The owner claims again while its own release is in flight; the
    // release may come second, so an empty claim after a restart is fine.
    let mut h = H::new();
    h.op(0, 10, Call::Claim { key: s("e"), owner: s("a") }, Reply::Claimed);
    h.op(20, 40, Call::Claim { key: s("e"), owner: s("a") }, Reply::Claimed);
    h.op(30, 50, Call::Release { key: s("e"), owner: s("a") }, Reply::Int { n: 1 });
    h.kill(60, 70);
    h.op(80, 90, Call::Owner { key: s("e") }, Reply::Name { name: None });
    assert_eq!(h.linear(), Verdict::Pass);
    assert!(h.side().anomalies.is_empty(), "{:?}", h.side());
}

#[test]
fn lease_overlap_within_the_clock_resolution_is_not_an_anomaly() {
    // idem counts leases in whole milliseconds: a lease may end up to 1 ms
    // before invoke + lease by the harness's clock.
    let mut within = H::new();
    within.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    within.op(90, 99, lock("l", "b", 100), Reply::Acquired { fence: 2 });
    assert!(within.side().anomalies.is_empty(), "1 ms is the clock's resolution");
    let mut beyond = H::new();
    beyond.op(0, 10, lock("l", "a", 100), Reply::Acquired { fence: 1 });
    beyond.op(90, 98, lock("l", "b", 100), Reply::Acquired { fence: 2 });
    assert_eq!(beyond.side_kinds(), vec!["lease-overlap"]);
}
