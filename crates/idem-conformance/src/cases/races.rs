//! Concurrency races: many requests in flight at once against one key; the
//! engine must serialise them so exactly the contract's outcome happens.

use std::collections::BTreeSet;

use idem_core::{Backend, Reply};

use crate::{expect, int, int_at, ok, race, show, status, text_at, Ctx};

/// 50 callers race IDEM.BEGIN on one key: exactly one is `started`, every
/// other sees `running` with the winner's fence.
pub async fn race_idem_begin(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let replies = race(50, |_| async { ok(b, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await }).await;
    let started: Vec<&Reply> = replies.iter().filter(|r| status(r) == "started").collect();
    assert_eq!(started.len(), 1, "exactly one started: {:?}", replies.iter().map(show).collect::<Vec<_>>());
    let fence = int_at(started[0], 1);
    for r in &replies {
        if status(r) != "started" {
            assert_eq!(status(r), "running", "{}", show(r));
            assert_eq!(int_at(r, 1), fence, "running reports the winner's fence: {}", show(r));
        }
    }
}

/// 40 concurrent `COUNTER.ADD k -1 MIN 0` against 10: exactly 10 succeed,
/// the value never goes below 0.
pub async fn race_counter_min(b: &dyn Backend, c: &Ctx) {
    let k = c.key("stock");
    expect(b, &["COUNTER.ADD", &k, "10"], "ok").await;
    let replies = race(40, |_| async { ok(b, &["COUNTER.ADD", &k, "-1", "MIN", "0"]).await }).await;
    let mut values = BTreeSet::new();
    let mut oks = 0;
    for r in &replies {
        let v = int_at(r, 1);
        assert!(v >= 0, "never below 0: {}", show(r));
        match status(r).as_str() {
            "ok" => {
                oks += 1;
                values.insert(v);
            }
            "refused" => assert_eq!(v, 0, "refused only at 0: {}", show(r)),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(oks, 10, "exactly 10 decrements applied");
    assert_eq!(values, (0..10).collect(), "each decrement saw a distinct value");
    assert_eq!(int(&ok(b, &["COUNTER.GET", &k]).await), 0);
}

/// 20 holders race SLOTS.RESERVE on ranges that all overlap: exactly one wins
/// and holds its whole range; no other slot is taken.
pub async fn race_slots_reserve(b: &dyn Backend, c: &Ctx) {
    let r = c.key("room");
    let replies = race(20, |i| {
        let (first, last, holder) = (i.to_string(), (i + 20).to_string(), format!("h{i}"));
        let r = r.clone();
        async move { ok(b, &["SLOTS.RESERVE", &r, &first, &last, &holder, "SIZE", "48"]).await }
    })
    .await;
    let winners: Vec<usize> = (0..20).filter(|&i| status(&replies[i]) == "reserved").collect();
    assert_eq!(winners.len(), 1, "exactly one reserved: {:?}", replies.iter().map(show).collect::<Vec<_>>());
    let w = winners[0];
    for (i, rep) in replies.iter().enumerate() {
        if i != w {
            assert_eq!(status(rep), "conflict", "{}", show(rep));
            assert_eq!(text_at(rep, 2), format!("h{w}"), "conflicts name the winner: {}", show(rep));
        }
    }
    let h = super::slots::holders(b, &r).await;
    for (slot, holder) in h.iter().enumerate() {
        let want = (w..=w + 20).contains(&slot).then(|| format!("h{w}"));
        assert_eq!(holder, &want, "slot {slot}");
    }
}

/// 30 owners race CLAIM on one key: one claimed, every other `held` by it.
pub async fn race_claim(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    let replies = race(30, |i| {
        let (k, o) = (k.clone(), format!("o{i}"));
        async move { ok(b, &["CLAIM", &k, &o]).await }
    })
    .await;
    let winners: Vec<usize> = (0..30).filter(|&i| status(&replies[i]) == "claimed").collect();
    assert_eq!(winners.len(), 1, "exactly one claimed");
    let owner = format!("o{}", winners[0]);
    for r in replies.iter().filter(|r| status(r) != "claimed") {
        assert_eq!(status(r), "held");
        assert_eq!(text_at(r, 1), owner, "{}", show(r));
    }
}

/// 20 owners race CLAIM.ALL of {shared, own}: one wins both, the others claim nothing.
pub async fn race_claim_all(b: &dyn Backend, c: &Ctx) {
    let shared = c.tagged("shared");
    let replies = race(20, |i| {
        let (shared, own, o) = (shared.clone(), c.tagged(&format!("own{i}")), format!("o{i}"));
        async move { ok(b, &["CLAIM.ALL", &o, &own, &shared]).await }
    })
    .await;
    let winners: Vec<usize> = (0..20).filter(|&i| status(&replies[i]) == "claimed").collect();
    assert_eq!(winners.len(), 1, "exactly one claimed: {:?}", replies.iter().map(show).collect::<Vec<_>>());
    let w = winners[0];
    for i in 0..20 {
        let own = crate::text_or_nil(&ok(b, &["OWNER", &c.tagged(&format!("own{i}"))]).await);
        let want = (i == w).then(|| format!("o{w}"));
        assert_eq!(own, want, "own{i}: all or nothing");
    }
}

/// 20 owners race LOCK: exactly one acquires.
pub async fn race_lock(b: &dyn Backend, c: &Ctx) {
    let n = c.key("n");
    let replies = race(20, |i| {
        let (n, o) = (n.clone(), format!("w{i}"));
        async move { ok(b, &["LOCK", &n, &o, "LEASE", "30000"]).await }
    })
    .await;
    assert_eq!(replies.iter().filter(|r| status(r) == "acquired").count(), 1, "exactly one acquired");
    assert_eq!(replies.iter().filter(|r| status(r) == "busy").count(), 19);
}

/// 20 writers race VALUE.SET IFVERSION 0, then IFVERSION 1: one wins each round.
pub async fn race_value_ifversion(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    for v in ["0", "1"] {
        let replies = race(20, |i| {
            let (k, val) = (k.clone(), format!("w{i}"));
            async move { ok(b, &["VALUE.SET", &k, &val, "IFVERSION", v]).await }
        })
        .await;
        assert_eq!(replies.iter().filter(|r| status(r) == "ok").count(), 1, "IFVERSION {v}: exactly one ok");
    }
    let r = ok(b, &["VALUE.GET", &k]).await;
    assert_eq!(int_at(&r, 1), 2, "{}", show(&r));
}

/// 20 callers race the same FSM move: one `moved`, the rest `already`.
pub async fn race_fsm(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    expect(b, &["FSM.MOVE", &k, "created", "FROM", "none"], "moved").await;
    let replies = race(20, |_| async { ok(b, &["FSM.MOVE", &k, "paid", "FROM", "created"]).await }).await;
    assert_eq!(replies.iter().filter(|r| status(r) == "moved").count(), 1, "exactly one moved");
    assert_eq!(replies.iter().filter(|r| status(r) == "already").count(), 19);
}

/// 20 callers race TOKEN.USE of one token: exactly one gets 1.
pub async fn race_token_use(b: &dyn Backend, c: &Ctx) {
    let scope = c.key("s");
    let t = crate::text_or_nil(&ok(b, &["TOKEN.NEW", &scope, "TTL", "60000"]).await).expect("a token");
    let replies = race(20, |_| async { ok(b, &["TOKEN.USE", &scope, &t]).await }).await;
    assert_eq!(replies.iter().filter(|r| int(r) == 1).count(), 1, "exactly one use");
}

/// 4 workers each run 8 rounds of IDEM.BEGIN + IDEM.DEL and of LOCK +
/// UNLOCK on one shared key: a deleted and re-created record (or a freed
/// and re-taken lock) never gets a fence again, and each worker sees its
/// fences grow, since its later grant happened after its earlier one.
pub async fn race_fence_after_delete(b: &dyn Backend, c: &Ctx) {
    let (k, n) = (c.key("k"), c.key("n"));
    let rounds = race(4, |i| {
        let (k, n, o) = (k.clone(), n.clone(), format!("w{i}"));
        async move {
            let (mut idem, mut lock) = (Vec::new(), Vec::new());
            for _ in 0..8 {
                let r = ok(b, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await;
                if status(&r) == "started" {
                    idem.push(int_at(&r, 1));
                    assert_eq!(int(&ok(b, &["IDEM.DEL", &k]).await), 1, "the starter deletes its record");
                }
                let r = ok(b, &["LOCK", &n, &o, "LEASE", "30000"]).await;
                if status(&r) == "acquired" {
                    lock.push(int_at(&r, 1));
                    assert_eq!(int(&ok(b, &["UNLOCK", &n, &o]).await), 1, "the holder unlocks");
                }
            }
            (idem, lock)
        }
    })
    .await;
    let idem: Vec<&Vec<i64>> = rounds.iter().map(|r| &r.0).collect();
    let lock: Vec<&Vec<i64>> = rounds.iter().map(|r| &r.1).collect();
    for (what, fences) in [("IDEM.BEGIN", idem), ("LOCK", lock)] {
        let mut all = BTreeSet::new();
        for mine in &fences {
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{what}: a worker's fences grow: {mine:?}");
            for f in mine.iter() {
                assert!(all.insert(*f), "{what}: fence {f} granted twice after delete/re-create: {fences:?}");
            }
        }
        assert!(!all.is_empty(), "{what}: some round was granted");
    }
    // After every delete, a new grant is above all of them.
    let last = ok(b, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await;
    let top = rounds.iter().flat_map(|r| r.0.iter()).max().copied().unwrap_or(0);
    assert!(int_at(&last, 1) > top, "a re-created record's fence {} is above {top}", show(&last));
}
