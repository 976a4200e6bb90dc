//! Contract cases run against both SQL backends (tests/postgres.rs and
//! tests/mysql.rs instantiate them with `sql_cases!`). Every case uses its own
//! random key prefix, so cases run in parallel and re-runs never collide.
//! Expiry is exercised with short leases and real sleeps; no case asserts how
//! long anything took.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, CmdResult, Command, ErrorCode, Limits, Reply};

/// A backend under test.
pub type B = Arc<dyn Backend>;

/// A random prefix for this case's keys.
pub fn prefix() -> String {
    format!("t{:016x}:", rand::random::<u64>())
}

/// Parses a command from text arguments.
pub fn cmd(args: &[&str]) -> Command {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    Command::parse(&args, &Limits::default()).expect("test command parses")
}

/// Runs one command.
pub async fn run(b: &B, args: &[&str]) -> CmdResult {
    b.execute(cmd(args)).await
}

/// Runs one command that must succeed.
pub async fn ok(b: &B, args: &[&str]) -> Reply {
    match run(b, args).await {
        Ok(r) => r,
        Err(e) => panic!("{args:?} failed: {e}"),
    }
}

/// The error code of a command that must fail.
pub async fn err(b: &B, args: &[&str]) -> ErrorCode {
    match run(b, args).await {
        Ok(r) => panic!("{args:?} should fail, got {r:?}"),
        Err(e) => e.code,
    }
}

/// The elements of an array reply.
pub fn items(r: &Reply) -> &[Reply] {
    match r {
        Reply::Array(v) => v,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The status word of a reply.
pub fn word(r: &Reply) -> &'static str {
    r.word().unwrap_or_else(|| panic!("expected a status word, got {r:?}"))
}

/// Element `i` of an array reply as an integer.
pub fn int_at(r: &Reply, i: usize) -> i64 {
    match &items(r)[i] {
        Reply::Int(n) => *n,
        other => panic!("expected an integer at {i} of {r:?}, got {other:?}"),
    }
}

/// An integer reply.
pub fn int(r: &Reply) -> i64 {
    match r {
        Reply::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// A bulk reply of these bytes.
pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn sleep_ms(ms: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(ms))
}

/// Generates one `#[tokio::test]` per case for the backend `$connect()` opens.
#[macro_export]
macro_rules! sql_cases {
    ($connect:path) => {
        $crate::sql_cases!(@one $connect; 1; idem_begin_commit_replay, idem_fingerprint_mismatch, idem_abort_frees_the_key,
            idem_lease_expiry_takeover, idem_wait_gets_done, idem_wait_times_out_running,
            idem_wait_gets_started_after_lease_runs_out, claims, claim_ttl_expiry, claim_all_is_all_or_nothing,
            locks, lock_expiry_and_fences, lock_wait_is_fifo_in_process, tokens, counters, counter_op_race,
            values, fsm, slots, pipeline_sees_earlier_effects, begin_race_exactly_one_started,
            binary_safe_keys, dbsize_counts);
        $crate::sql_cases!(@one $connect; 2; idem_wait_across_processes, lock_wait_across_processes,
            deduction_race_never_below_min, claim_race_one_winner, lock_race_one_winner, slots_race_no_double_booking);
    };
    (@one $connect:path; 1; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                sql_cases::$case(&$connect().await).await;
            }
        )*
    };
    (@one $connect:path; 2; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                // Two backends on one database stand for two idem processes.
                sql_cases::$case(&$connect().await, &$connect().await).await;
            }
        )*
    };
}

// ---------------------------------------------------------------- IDEM.*

pub async fn idem_begin_commit_replay(b: &B) {
    let k = format!("{}op", prefix());
    let r = ok(b, &["IDEM.BEGIN", &k, "FP", "f1", "LEASE", "10000"]).await;
    assert_eq!(word(&r), "started");
    let fence = int_at(&r, 1);
    assert!(fence > 0);
    assert_eq!(int_at(&r, 2), 1, "first attempt");

    let r = ok(b, &["IDEM.BEGIN", &k, "FP", "f1"]).await;
    assert_eq!(word(&r), "running");
    assert_eq!(int_at(&r, 1), fence);
    assert!(int_at(&r, 2) > 0 && int_at(&r, 2) <= 10000, "left_ms within the lease: {r:?}");

    let r = ok(b, &["IDEM.GET", &k]).await;
    assert_eq!(word(&r), "running");
    assert_eq!(int_at(&r, 1), fence);

    assert_eq!(err(b, &["IDEM.COMMIT", &k, &(fence + 1000).to_string(), "nope"]).await, ErrorCode::Stale);
    assert_eq!(ok(b, &["IDEM.COMMIT", &k, &fence.to_string(), "result-1"]).await, Reply::status("ok"));
    // A second commit with the same fence: the record is done, nothing runs.
    assert_eq!(err(b, &["IDEM.COMMIT", &k, &fence.to_string(), "result-2"]).await, ErrorCode::Stale);
    assert_eq!(err(b, &["IDEM.ABORT", &k, &fence.to_string()]).await, ErrorCode::Stale);

    let done = Reply::status_with("done", [bulk("result-1")]);
    assert_eq!(ok(b, &["IDEM.BEGIN", &k, "FP", "f1"]).await, done);
    assert_eq!(ok(b, &["IDEM.BEGIN", &k]).await, done, "no FP: no fingerprint check");
    assert_eq!(ok(b, &["IDEM.GET", &k]).await, done);

    assert_eq!(ok(b, &["IDEM.DEL", &k]).await, Reply::Int(1));
    assert_eq!(ok(b, &["IDEM.DEL", &k]).await, Reply::Int(0));
    assert_eq!(ok(b, &["IDEM.GET", &k]).await, Reply::status("absent"));
    let r = ok(b, &["IDEM.BEGIN", &k]).await;
    assert_eq!(word(&r), "started");
    assert!(int_at(&r, 1) > fence, "a new grant has a larger fence");

    // Empty results are results too; KEEP bounds retention.
    let k2 = format!("{}empty", prefix());
    let f2 = int_at(&ok(b, &["IDEM.BEGIN", &k2]).await, 1);
    ok(b, &["IDEM.COMMIT", &k2, &f2.to_string(), "", "KEEP", "150"]).await;
    assert_eq!(ok(b, &["IDEM.GET", &k2]).await, Reply::status_with("done", [bulk("")]));
    sleep_ms(400).await;
    assert_eq!(ok(b, &["IDEM.GET", &k2]).await, Reply::status("absent"), "KEEP ran out");
    let r = ok(b, &["IDEM.BEGIN", &k2]).await;
    assert_eq!((word(&r), int_at(&r, 2)), ("started", 1));
}

pub async fn idem_fingerprint_mismatch(b: &B) {
    let k = format!("{}op", prefix());
    let fence = int_at(&ok(b, &["IDEM.BEGIN", &k, "FP", "aaa"]).await, 1);
    assert_eq!(err(b, &["IDEM.BEGIN", &k, "FP", "bbb"]).await, ErrorCode::Mismatch);
    ok(b, &["IDEM.COMMIT", &k, &fence.to_string(), "r"]).await;
    assert_eq!(err(b, &["IDEM.BEGIN", &k, "FP", "bbb"]).await, ErrorCode::Mismatch);
    assert_eq!(word(&ok(b, &["IDEM.BEGIN", &k, "FP", "aaa"]).await), "done");
}

pub async fn idem_abort_frees_the_key(b: &B) {
    let k = format!("{}op", prefix());
    let f1 = int_at(&ok(b, &["IDEM.BEGIN", &k]).await, 1);
    assert_eq!(err(b, &["IDEM.ABORT", &k, &(f1 + 1).to_string()]).await, ErrorCode::Stale);
    assert_eq!(ok(b, &["IDEM.ABORT", &k, &f1.to_string()]).await, Reply::status("ok"));
    assert_eq!(ok(b, &["IDEM.GET", &k]).await, Reply::status("absent"));
    assert_eq!(err(b, &["IDEM.ABORT", &k, &f1.to_string()]).await, ErrorCode::Stale);
    let r = ok(b, &["IDEM.BEGIN", &k]).await;
    assert_eq!(word(&r), "started");
    assert!(int_at(&r, 1) > f1);
    assert_eq!(int_at(&r, 2), 1, "ABORT removes the record: attempts start again");
    assert_eq!(err(b, &["IDEM.COMMIT", &k, &f1.to_string(), "x"]).await, ErrorCode::Stale);
}

pub async fn idem_lease_expiry_takeover(b: &B) {
    let k = format!("{}op", prefix());
    let f1 = int_at(&ok(b, &["IDEM.BEGIN", &k, "FP", "x", "LEASE", "100"]).await, 1);
    sleep_ms(300).await;
    assert_eq!(ok(b, &["IDEM.GET", &k]).await, Reply::status("absent"), "a run-out lease is not running");
    assert_eq!(err(b, &["IDEM.BEGIN", &k, "FP", "y"]).await, ErrorCode::Mismatch, "the fingerprint stays");
    let r = ok(b, &["IDEM.BEGIN", &k, "FP", "x", "LEASE", "10000"]).await;
    assert_eq!(word(&r), "started");
    let f2 = int_at(&r, 1);
    assert!(f2 > f1, "takeover fence {f2} must exceed {f1}");
    assert_eq!(int_at(&r, 2), 2, "second attempt");
    assert_eq!(err(b, &["IDEM.COMMIT", &k, &f1.to_string(), "late"]).await, ErrorCode::Stale);
    assert_eq!(err(b, &["IDEM.ABORT", &k, &f1.to_string()]).await, ErrorCode::Stale);
    ok(b, &["IDEM.COMMIT", &k, &f2.to_string(), "second"]).await;
    assert_eq!(ok(b, &["IDEM.BEGIN", &k]).await, Reply::status_with("done", [bulk("second")]));

    // Once the lease ran out, even the current fence can no longer commit
    // (the key is available again); DEL still forgets the attempt count.
    let k = format!("{}late", prefix());
    let f = int_at(&ok(b, &["IDEM.BEGIN", &k, "LEASE", "80"]).await, 1);
    sleep_ms(250).await;
    assert_eq!(err(b, &["IDEM.COMMIT", &k, &f.to_string(), "late"]).await, ErrorCode::Stale);
    assert_eq!(err(b, &["IDEM.ABORT", &k, &f.to_string()]).await, ErrorCode::Stale);
    assert_eq!(ok(b, &["IDEM.DEL", &k]).await, Reply::Int(1));
    assert_eq!(int_at(&ok(b, &["IDEM.BEGIN", &k]).await, 2), 1);

    // A third attempt after two expiries.
    let k = format!("{}op3", prefix());
    ok(b, &["IDEM.BEGIN", &k, "LEASE", "50"]).await;
    sleep_ms(200).await;
    ok(b, &["IDEM.BEGIN", &k, "LEASE", "50"]).await;
    sleep_ms(200).await;
    assert_eq!(int_at(&ok(b, &["IDEM.BEGIN", &k]).await, 2), 3);
}

pub async fn idem_wait_gets_done(b: &B) {
    let k = format!("{}op", prefix());
    let fence = int_at(&ok(b, &["IDEM.BEGIN", &k, "LEASE", "20000"]).await, 1);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (b, k) = (b.clone(), k.clone());
            tokio::spawn(async move { ok(&b, &["IDEM.BEGIN", &k, "WAIT", "20000"]).await })
        })
        .collect();
    sleep_ms(150).await;
    ok(b, &["IDEM.COMMIT", &k, &fence.to_string(), "the-result"]).await;
    for w in waiters {
        assert_eq!(w.await.unwrap(), Reply::status_with("done", [bulk("the-result")]));
    }
}

pub async fn idem_wait_times_out_running(b: &B) {
    let k = format!("{}op", prefix());
    let fence = int_at(&ok(b, &["IDEM.BEGIN", &k, "LEASE", "20000"]).await, 1);
    let r = ok(b, &["IDEM.BEGIN", &k, "WAIT", "120"]).await;
    assert_eq!(word(&r), "running");
    assert_eq!(int_at(&r, 1), fence);
}

pub async fn idem_wait_gets_started_after_lease_runs_out(b: &B) {
    let k = format!("{}op", prefix());
    let f1 = int_at(&ok(b, &["IDEM.BEGIN", &k, "LEASE", "200"]).await, 1);
    let r = ok(b, &["IDEM.BEGIN", &k, "WAIT", "20000"]).await;
    assert_eq!(word(&r), "started", "{r:?}");
    assert!(int_at(&r, 1) > f1);
    assert_eq!(int_at(&r, 2), 2);

    // An ABORT hands the key to the waiter too.
    let k = format!("{}op2", prefix());
    let f1 = int_at(&ok(b, &["IDEM.BEGIN", &k, "LEASE", "20000"]).await, 1);
    let w = {
        let (b, k) = (b.clone(), k.clone());
        tokio::spawn(async move { ok(&b, &["IDEM.BEGIN", &k, "WAIT", "20000"]).await })
    };
    sleep_ms(150).await;
    ok(b, &["IDEM.ABORT", &k, &f1.to_string()]).await;
    let r = w.await.unwrap();
    assert_eq!(word(&r), "started");
    assert!(int_at(&r, 1) > f1);
}

pub async fn idem_wait_across_processes(b1: &B, b2: &B) {
    let k = format!("{}op", prefix());
    let fence = int_at(&ok(b1, &["IDEM.BEGIN", &k, "LEASE", "30000"]).await, 1);
    let w = {
        let (b2, k) = (b2.clone(), k.clone());
        tokio::spawn(async move { ok(&b2, &["IDEM.BEGIN", &k, "WAIT", "20000"]).await })
    };
    sleep_ms(200).await;
    ok(b1, &["IDEM.COMMIT", &k, &fence.to_string(), "from-b1"]).await;
    assert_eq!(w.await.unwrap(), Reply::status_with("done", [bulk("from-b1")]));
}

pub async fn begin_race_exactly_one_started(b: &B) {
    let k = format!("{}op", prefix());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (b, k) = (b.clone(), k.clone());
            tokio::spawn(async move { ok(&b, &["IDEM.BEGIN", &k, "FP", "same", "LEASE", "30000"]).await })
        })
        .collect();
    let mut started = Vec::new();
    let mut running = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match word(&r) {
            "started" => started.push(int_at(&r, 1)),
            "running" => running += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(started.len(), 1, "exactly one BEGIN starts");
    assert_eq!(running, 49);
}

// ---------------------------------------------------------------- CLAIM

pub async fn claims(b: &B) {
    let p = prefix();
    let k = format!("{p}user:openid-1");
    assert_eq!(ok(b, &["OWNER", &k]).await, Reply::Nil);
    assert_eq!(ok(b, &["CLAIM", &k, "alice"]).await, Reply::status("claimed"));
    assert_eq!(ok(b, &["CLAIM", &k, "alice"]).await, Reply::status("claimed"), "idempotent for the owner");
    assert_eq!(ok(b, &["CLAIM", &k, "bob"]).await, Reply::status_with("held", [bulk("alice")]));
    assert_eq!(ok(b, &["OWNER", &k]).await, bulk("alice"));
    assert_eq!(ok(b, &["RELEASE", &k, "bob"]).await, Reply::Int(0), "a non-owner changes nothing");
    assert_eq!(ok(b, &["OWNER", &k]).await, bulk("alice"));
    assert_eq!(ok(b, &["RELEASE", &k, "alice"]).await, Reply::Int(1));
    assert_eq!(ok(b, &["RELEASE", &k, "alice"]).await, Reply::Int(0));
    assert_eq!(ok(b, &["OWNER", &k]).await, Reply::Nil);
    // Logical delete = RELEASE; the key can be claimed again, many times.
    for owner in ["bob", "carol", "dave"] {
        assert_eq!(ok(b, &["CLAIM", &k, owner]).await, Reply::status("claimed"));
        assert_eq!(ok(b, &["RELEASE", &k, owner]).await, Reply::Int(1));
    }
}

pub async fn claim_ttl_expiry(b: &B) {
    let k = format!("{}k", prefix());
    // The TTL is long enough that the second CLAIM lands inside it on a
    // loaded machine (100 ms once did not, in CI).
    assert_eq!(ok(b, &["CLAIM", &k, "alice", "TTL", "1500"]).await, Reply::status("claimed"));
    assert_eq!(ok(b, &["CLAIM", &k, "bob"]).await, Reply::status_with("held", [bulk("alice")]));
    sleep_ms(1800).await;
    assert_eq!(ok(b, &["OWNER", &k]).await, Reply::Nil, "TTL ran out");
    assert_eq!(ok(b, &["RELEASE", &k, "alice"]).await, Reply::Int(0));
    assert_eq!(ok(b, &["CLAIM", &k, "bob"]).await, Reply::status("claimed"));
    assert_eq!(ok(b, &["OWNER", &k]).await, bulk("bob"));
    // A re-claim without TTL makes the claim last until released.
    let k = format!("{}k2", prefix());
    ok(b, &["CLAIM", &k, "alice", "TTL", "100"]).await;
    ok(b, &["CLAIM", &k, "alice"]).await;
    sleep_ms(300).await;
    assert_eq!(ok(b, &["OWNER", &k]).await, bulk("alice"));
}

pub async fn claim_all_is_all_or_nothing(b: &B) {
    let p = prefix();
    let (a, k1, k2, k3) = (format!("{p}a"), format!("{p}k1"), format!("{p}k2"), format!("{p}k3"));
    ok(b, &["CLAIM", &k2, "x"]).await;
    ok(b, &["CLAIM", &k3, "y"]).await;
    let r = ok(b, &["CLAIM.ALL", "me", &a, &k3, &k1, &k2]).await;
    assert_eq!(r, Reply::status_with("held", [bulk(&k3), bulk("y"), bulk(&k2), bulk("x")]), "every conflict, in order");
    assert_eq!(ok(b, &["OWNER", &a]).await, Reply::Nil, "nothing was claimed");
    assert_eq!(ok(b, &["OWNER", &k1]).await, Reply::Nil);
    ok(b, &["RELEASE", &k2, "x"]).await;
    ok(b, &["RELEASE", &k3, "y"]).await;
    ok(b, &["CLAIM", &k1, "me"]).await;
    assert_eq!(ok(b, &["CLAIM.ALL", "me", &a, &k1, &k2, &k3, &a]).await, Reply::status("claimed"));
    for k in [&a, &k1, &k2, &k3] {
        assert_eq!(ok(b, &["OWNER", k]).await, bulk("me"));
    }
}

pub async fn claim_race_one_winner(b1: &B, b2: &B) {
    let k = format!("{}order:1", prefix());
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let b = if i % 2 == 0 { b1.clone() } else { b2.clone() };
            let k = k.clone();
            tokio::spawn(async move { ok(&b, &["CLAIM", &k, &format!("owner-{i}")]).await })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() == Reply::status("claimed") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

// ---------------------------------------------------------------- LOCK

pub async fn locks(b: &B) {
    let n = format!("{}lock", prefix());
    assert_eq!(ok(b, &["LOCK.INFO", &n]).await, Reply::status("free"));
    let r = ok(b, &["LOCK", &n, "w1", "LEASE", "10000"]).await;
    assert_eq!(word(&r), "acquired");
    let fence = int_at(&r, 1);
    assert_eq!(ok(b, &["LOCK", &n, "w1", "LEASE", "10000"]).await, Reply::status_with("acquired", [Reply::Int(fence)]));
    let r = ok(b, &["LOCK", &n, "w2", "LEASE", "10000"]).await;
    assert_eq!(word(&r), "busy");
    assert_eq!(items(&r)[1], bulk("w1"));
    assert!(int_at(&r, 2) > 0 && int_at(&r, 2) <= 10000);
    let r = ok(b, &["LOCK.INFO", &n]).await;
    assert_eq!(word(&r), "held");
    assert_eq!((items(&r)[1].clone(), int_at(&r, 2), int_at(&r, 4)), (bulk("w1"), fence, 0));
    assert!(int_at(&r, 3) > 0);
    assert_eq!(ok(b, &["RENEW", &n, "w1", "LEASE", "20000"]).await, Reply::status_with("renewed", [Reply::Int(fence)]));
    assert!(int_at(&ok(b, &["LOCK.INFO", &n]).await, 3) > 10000, "RENEW set the new lease");
    assert_eq!(ok(b, &["RENEW", &n, "w2", "LEASE", "20000"]).await, Reply::status("lost"));
    assert_eq!(ok(b, &["UNLOCK", &n, "w2"]).await, Reply::Int(0));
    assert_eq!(ok(b, &["UNLOCK", &n, "w1"]).await, Reply::Int(1));
    assert_eq!(ok(b, &["UNLOCK", &n, "w1"]).await, Reply::Int(0));
    assert_eq!(ok(b, &["LOCK.INFO", &n]).await, Reply::status("free"));
    let r = ok(b, &["LOCK", &n, "w2", "LEASE", "10000"]).await;
    assert!(int_at(&r, 1) > fence, "a new holder gets a larger fence");
    let r = ok(b, &["LOCK", &n, "w3", "LEASE", "10000", "WAIT", "100"]).await;
    assert_eq!(word(&r), "busy", "WAIT passed");
}

pub async fn lock_expiry_and_fences(b: &B) {
    let n = format!("{}lock", prefix());
    let mut last = 0;
    for round in 0..3 {
        let r = ok(b, &["LOCK", &n, &format!("w{round}"), "LEASE", "80"]).await;
        assert_eq!(word(&r), "acquired");
        assert!(int_at(&r, 1) > last, "fences strictly increase");
        last = int_at(&r, 1);
        sleep_ms(250).await;
        assert_eq!(ok(b, &["LOCK.INFO", &n]).await, Reply::status("free"));
    }
    assert_eq!(ok(b, &["RENEW", &n, "w2", "LEASE", "1000"]).await, Reply::status("lost"));
    assert_eq!(ok(b, &["UNLOCK", &n, "w2"]).await, Reply::Int(0));
    // The old holder asking again after expiry gets a new fence too.
    let r = ok(b, &["LOCK", &n, "w2", "LEASE", "1000"]).await;
    assert!(int_at(&r, 1) > last);
    // A waiter gets the lock when the lease runs out.
    let r = ok(b, &["LOCK", &n, "w9", "LEASE", "1000", "WAIT", "20000"]).await;
    assert_eq!(word(&r), "acquired", "{r:?}");
}

pub async fn lock_wait_is_fifo_in_process(b: &B) {
    let n = format!("{}lock", prefix());
    ok(b, &["LOCK", &n, "holder", "LEASE", "30000"]).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (b2, n2, order) = (b.clone(), n.clone(), order.clone());
        let owner = format!("w{i}");
        tasks.push(tokio::spawn(async move {
            let r = ok(&b2, &["LOCK", &n2, &owner, "LEASE", "30000", "WAIT", "30000"]).await;
            assert_eq!(word(&r), "acquired", "{r:?}");
            order.lock().unwrap().push(i);
            assert_eq!(ok(&b2, &["UNLOCK", &n2, &owner]).await, Reply::Int(1));
        }));
        // Queue them one after the other: wait until this one is parked.
        loop {
            let info = ok(b, &["LOCK.INFO", &n]).await;
            if int_at(&info, 4) == i + 1 {
                break;
            }
            sleep_ms(5).await;
        }
    }
    ok(b, &["UNLOCK", &n, "holder"]).await;
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3], "first come, first served");
    assert_eq!(ok(b, &["LOCK.INFO", &n]).await, Reply::status("free"));
}

pub async fn lock_wait_across_processes(b1: &B, b2: &B) {
    let n = format!("{}lock", prefix());
    let f1 = int_at(&ok(b1, &["LOCK", &n, "a", "LEASE", "30000"]).await, 1);
    let w = {
        let (b2, n) = (b2.clone(), n.clone());
        tokio::spawn(async move { ok(&b2, &["LOCK", &n, "b", "LEASE", "30000", "WAIT", "20000"]).await })
    };
    sleep_ms(200).await;
    ok(b1, &["UNLOCK", &n, "a"]).await;
    let r = w.await.unwrap();
    assert_eq!(word(&r), "acquired");
    assert!(int_at(&r, 1) > f1);
}

pub async fn lock_race_one_winner(b1: &B, b2: &B) {
    let n = format!("{}lock", prefix());
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let b = if i % 2 == 0 { b1.clone() } else { b2.clone() };
            let n = n.clone();
            tokio::spawn(async move { ok(&b, &["LOCK", &n, &format!("w{i}"), "LEASE", "30000"]).await })
        })
        .collect();
    let mut acquired = 0;
    for t in tasks {
        if word(&t.await.unwrap()) == "acquired" {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 1);
}

// ---------------------------------------------------------------- TOKEN

pub async fn tokens(b: &B) {
    let s = format!("{}form", prefix());
    let t = match ok(b, &["TOKEN.NEW", &s, "TTL", "10000"]).await {
        Reply::Bulk(t) => String::from_utf8(t.to_vec()).unwrap(),
        other => panic!("token: {other:?}"),
    };
    assert!(t.len() >= 22, "at least 128 bits: {t}");
    assert!(t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "URL-safe: {t}");
    assert_eq!(ok(b, &["TOKEN.USE", "other-scope", &t]).await, Reply::Int(0));
    assert_eq!(ok(b, &["TOKEN.USE", &s, &t]).await, Reply::Int(1));
    assert_eq!(ok(b, &["TOKEN.USE", &s, &t]).await, Reply::Int(0), "spent");
    assert_eq!(ok(b, &["TOKEN.USE", &s, "made-up"]).await, Reply::Int(0));
    let t2 = ok(b, &["TOKEN.NEW", &s, "TTL", "100"]).await;
    let Reply::Bulk(t2) = t2 else { panic!() };
    sleep_ms(300).await;
    assert_eq!(ok(b, &["TOKEN.USE", &s, std::str::from_utf8(&t2).unwrap()]).await, Reply::Int(0), "expired");
}

// ---------------------------------------------------------------- COUNTER

pub async fn counters(b: &B) {
    let k = format!("{}points", prefix());
    assert_eq!(ok(b, &["COUNTER.GET", &k]).await, Reply::Int(0));
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "-5", "MIN", "0"]).await, Reply::status_with("refused", [Reply::Int(0)]));
    assert_eq!(ok(b, &["COUNTER.GET", &k]).await, Reply::Int(0));
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "10"]).await, Reply::status_with("ok", [Reply::Int(10)]));
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "-4", "MIN", "0"]).await, Reply::status_with("ok", [Reply::Int(6)]));
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "-7", "MIN", "0"]).await, Reply::status_with("refused", [Reply::Int(6)]));
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "5", "MAX", "10"]).await, Reply::status_with("refused", [Reply::Int(6)]));
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "4", "MAX", "10"]).await, Reply::status_with("ok", [Reply::Int(10)]));
    let r = ok(b, &["COUNTER.ADD", &k, "-3", "OP", "req-1", "KEEP", "10000"]).await;
    assert_eq!(r, Reply::status_with("ok", [Reply::Int(7)]));
    ok(b, &["COUNTER.ADD", &k, "1"]).await;
    let r = ok(b, &["COUNTER.ADD", &k, "-3", "OP", "req-1", "KEEP", "10000"]).await;
    assert_eq!(r, Reply::status_with("replayed", [Reply::Int(7)]), "the first application's value");
    assert_eq!(ok(b, &["COUNTER.GET", &k]).await, Reply::Int(8));
    // Down to 0 and up again.
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "-8"]).await, Reply::status_with("ok", [Reply::Int(0)]));
    assert_eq!(ok(b, &["COUNTER.GET", &k]).await, Reply::Int(0));
    assert_eq!(ok(b, &["COUNTER.ADD", &k, "8"]).await, Reply::status_with("ok", [Reply::Int(8)]));
    // A refused op is not recorded: it may apply later.
    let r = ok(b, &["COUNTER.ADD", &k, "-100", "MIN", "0", "OP", "req-2"]).await;
    assert_eq!(word(&r), "refused");
    assert_eq!(word(&ok(b, &["COUNTER.ADD", &k, "-1", "MIN", "0", "OP", "req-2"]).await), "ok");
    // An op id's KEEP runs out.
    ok(b, &["COUNTER.ADD", &k, "1", "OP", "req-3", "KEEP", "100"]).await;
    sleep_ms(300).await;
    assert_eq!(word(&ok(b, &["COUNTER.ADD", &k, "1", "OP", "req-3", "KEEP", "100"]).await), "ok");
    // i64 overflow is refused.
    let big = format!("{}big", prefix());
    ok(b, &["COUNTER.ADD", &big, &i64::MAX.to_string()]).await;
    assert_eq!(ok(b, &["COUNTER.ADD", &big, "1"]).await, Reply::status_with("refused", [Reply::Int(i64::MAX)]));
    ok(b, &["COUNTER.ADD", &big, &(-i64::MAX).to_string()]).await;
    ok(b, &["COUNTER.ADD", &big, &(-i64::MAX).to_string()]).await;
    assert_eq!(ok(b, &["COUNTER.GET", &big]).await, Reply::Int(-i64::MAX));
    assert_eq!(word(&ok(b, &["COUNTER.ADD", &big, "-1"]).await), "ok");
    assert_eq!(word(&ok(b, &["COUNTER.ADD", &big, "-1"]).await), "refused");
}

pub async fn deduction_race_never_below_min(b1: &B, b2: &B) {
    let k = format!("{}balance", prefix());
    ok(b1, &["COUNTER.ADD", &k, "25"]).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let b = if i % 2 == 0 { b1.clone() } else { b2.clone() };
            let k = k.clone();
            tokio::spawn(async move { ok(&b, &["COUNTER.ADD", &k, "-1", "MIN", "0"]).await })
        })
        .collect();
    let mut values = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match word(&r) {
            "ok" => values.push(int_at(&r, 1)),
            "refused" => {
                assert_eq!(int_at(&r, 1), 0);
                refused += 1;
            }
            other => panic!("{other}"),
        }
    }
    values.sort_unstable();
    assert_eq!(values, (0..25).collect::<Vec<i64>>(), "each deduction saw its own value");
    assert_eq!(refused, 15);
    assert_eq!(ok(b1, &["COUNTER.GET", &k]).await, Reply::Int(0));
}

pub async fn counter_op_race(b: &B) {
    let k = format!("{}budget", prefix());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (b, k) = (b.clone(), k.clone());
            tokio::spawn(async move { ok(&b, &["COUNTER.ADD", &k, "5", "MAX", "100", "OP", "grant-1"]).await })
        })
        .collect();
    let mut words = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(int_at(&r, 1), 5);
        words.push(word(&r));
    }
    assert_eq!(words.iter().filter(|w| **w == "ok").count(), 1);
    assert_eq!(words.iter().filter(|w| **w == "replayed").count(), 19);
    assert_eq!(ok(b, &["COUNTER.GET", &k]).await, Reply::Int(5));
}

// ---------------------------------------------------------------- VALUE

pub async fn values(b: &B) {
    let k = format!("{}cfg", prefix());
    assert_eq!(ok(b, &["VALUE.GET", &k]).await, Reply::Nil);
    assert_eq!(ok(b, &["VALUE.SET", &k, "a", "IFVERSION", "3"]).await, Reply::status_with("conflict", [Reply::Int(0)]));
    assert_eq!(ok(b, &["VALUE.SET", &k, "a", "IFVERSION", "0"]).await, Reply::status_with("ok", [Reply::Int(1)]));
    assert_eq!(ok(b, &["VALUE.SET", &k, "b", "IFVERSION", "0"]).await, Reply::status_with("conflict", [Reply::Int(1)]));
    assert_eq!(ok(b, &["VALUE.SET", &k, "b", "IFVERSION", "1"]).await, Reply::status_with("ok", [Reply::Int(2)]));
    assert_eq!(ok(b, &["VALUE.SET", &k, "c", "IFVERSION", "1"]).await, Reply::status_with("conflict", [Reply::Int(2)]));
    assert_eq!(ok(b, &["VALUE.SET", &k, "d"]).await, Reply::status_with("ok", [Reply::Int(3)]));
    assert_eq!(ok(b, &["VALUE.GET", &k]).await, Reply::Array(vec![bulk("d"), Reply::Int(3)]));
    let k2 = format!("{}new", prefix());
    assert_eq!(ok(b, &["VALUE.SET", &k2, ""]).await, Reply::status_with("ok", [Reply::Int(1)]));
    assert_eq!(ok(b, &["VALUE.GET", &k2]).await, Reply::Array(vec![bulk(""), Reply::Int(1)]));
}

// ---------------------------------------------------------------- FSM

pub async fn fsm(b: &B) {
    let k = format!("{}order", prefix());
    assert_eq!(ok(b, &["FSM.GET", &k]).await, Reply::Nil);
    assert_eq!(
        ok(b, &["FSM.MOVE", &k, "paid", "FROM", "created"]).await,
        Reply::status_with("refused", [bulk("none")])
    );
    assert_eq!(
        ok(b, &["FSM.MOVE", &k, "created", "FROM", "NONE"]).await,
        Reply::status_with("moved", [bulk("created")])
    );
    assert_eq!(
        ok(b, &["FSM.MOVE", &k, "created", "FROM", "none"]).await,
        Reply::status_with("already", [bulk("created")])
    );
    assert_eq!(ok(b, &["FSM.MOVE", &k, "paid", "FROM", "created"]).await, Reply::status_with("moved", [bulk("paid")]));
    assert_eq!(
        ok(b, &["FSM.MOVE", &k, "paid", "FROM", "created"]).await,
        Reply::status_with("already", [bulk("paid")])
    );
    assert_eq!(
        ok(b, &["FSM.MOVE", &k, "created", "FROM", "none"]).await,
        Reply::status_with("refused", [bulk("paid")])
    );
    assert_eq!(
        ok(b, &["FSM.MOVE", &k, "shipped", "FROM", "created", "paid"]).await,
        Reply::status_with("moved", [bulk("shipped")])
    );
    assert_eq!(ok(b, &["FSM.GET", &k]).await, bulk("shipped"));
}

// ---------------------------------------------------------------- SLOTS

pub async fn slots(b: &B) {
    let r = format!("{}room:17:2026-12-01", prefix());
    assert_eq!(ok(b, &["SLOTS.GET", &r]).await, Reply::Array(vec![]));
    assert_eq!(ok(b, &["SLOTS.RESERVE", &r, "0", "3", "ann"]).await, Reply::status("reserved"));
    assert_eq!(ok(b, &["SLOTS.RESERVE", &r, "0", "3", "ann"]).await, Reply::status("reserved"), "one's own slots");
    let c = ok(b, &["SLOTS.RESERVE", &r, "2", "5", "bob"]).await;
    assert_eq!(c, Reply::status_with("conflict", [Reply::Int(2), bulk("ann"), Reply::Int(3), bulk("ann")]));
    assert_eq!(ok(b, &["SLOTS.RESERVE", &r, "4", "5", "bob"]).await, Reply::status("reserved"));
    let g = ok(b, &["SLOTS.GET", &r]).await;
    let cells = items(&g);
    assert_eq!(cells.len(), 48, "default SIZE");
    assert_eq!(
        &cells[..7],
        &[bulk("ann"), bulk("ann"), bulk("ann"), bulk("ann"), bulk("bob"), bulk("bob"), Reply::Nil]
    );
    assert_eq!(ok(b, &["SLOTS.RELEASE", &r, "0", "5", "carl"]).await, Reply::Int(0));
    assert_eq!(ok(b, &["SLOTS.RELEASE", &r, "3", "10", "ann"]).await, Reply::Int(1));
    assert_eq!(ok(b, &["SLOTS.RESERVE", &r, "3", "3", "bob"]).await, Reply::status("reserved"));
    assert_eq!(err(b, &["SLOTS.RESERVE", &r, "40", "50", "bob"]).await, ErrorCode::Err, "outside SIZE 48");
    let small = format!("{}small", prefix());
    assert_eq!(ok(b, &["SLOTS.RESERVE", &small, "9", "9", "x", "SIZE", "10"]).await, Reply::status("reserved"));
    assert_eq!(items(&ok(b, &["SLOTS.GET", &small]).await).len(), 10);
    assert_eq!(err(b, &["SLOTS.RESERVE", &small, "9", "10", "x"]).await, ErrorCode::Err);
    assert_eq!(err(b, &["SLOTS.RESERVE", &small, "0", "0", "x", "SIZE", "12"]).await, ErrorCode::Err, "SIZE differs");
    assert_eq!(ok(b, &["SLOTS.RESERVE", &small, "0", "0", "y", "SIZE", "10"]).await, Reply::status("reserved"));
    assert_eq!(ok(b, &["SLOTS.RELEASE", &small, "0", "9", "x"]).await, Reply::Int(1));
    assert_eq!(ok(b, &["SLOTS.GET", &small]).await, Reply::Array([vec![bulk("y")], vec![Reply::Nil; 9]].concat()));
    assert_eq!(ok(b, &["SLOTS.RELEASE", &small, "0", "0", "y"]).await, Reply::Int(1));
    assert_eq!(ok(b, &["SLOTS.GET", &small]).await, Reply::Array(vec![]), "an empty resource is forgotten");
    assert_eq!(ok(b, &["SLOTS.RESERVE", &small, "20", "20", "x", "SIZE", "24"]).await, Reply::status("reserved"));
}

pub async fn slots_race_no_double_booking(b1: &B, b2: &B) {
    let r = format!("{}room", prefix());
    // 24 bookers want overlapping two-slot ranges of 12 slots.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let b = if i % 2 == 0 { b1.clone() } else { b2.clone() };
            let r = r.clone();
            let first = i % 11;
            tokio::spawn(async move {
                let reply = ok(
                    &b,
                    &[
                        "SLOTS.RESERVE",
                        &r,
                        &first.to_string(),
                        &(first + 1).to_string(),
                        &format!("h{i}"),
                        "SIZE",
                        "12",
                    ],
                )
                .await;
                (i, first, reply)
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        let (i, first, reply) = t.await.unwrap();
        if word(&reply) == "reserved" {
            won.push((i, first));
        }
    }
    let cells = ok(b1, &["SLOTS.GET", &r]).await;
    let cells = items(&cells);
    for (i, first) in &won {
        let h = bulk(&format!("h{i}"));
        assert_eq!(cells[*first as usize], h, "all of a winner's slots are its own");
        assert_eq!(cells[*first as usize + 1], h);
    }
    let held = cells.iter().filter(|c| **c != Reply::Nil).count();
    assert_eq!(held, won.len() * 2, "no slot counted twice, none half-taken");
}

// ---------------------------------------------------------------- misc

pub async fn pipeline_sees_earlier_effects(b: &B) {
    let p = prefix();
    let (k, n) = (format!("{p}k"), format!("{p}lock"));
    let batch = vec![
        cmd(&["CLAIM", &k, "a"]),
        cmd(&["OWNER", &k]),
        cmd(&["CLAIM", &k, "b"]),
        cmd(&["LOCK", &n, "a", "LEASE", "100"]),
        cmd(&["LOCK", &n, "b", "LEASE", "10000", "WAIT", "20000"]),
        cmd(&["RELEASE", &k, "a"]),
        cmd(&["OWNER", &k]),
        cmd(&["COUNTER.ADD", &k, "1"]),
        cmd(&["COUNTER.ADD", &k, "1"]),
        cmd(&["IDEM.COMMIT", &k, "1", "x"]),
    ];
    let out = b.execute_batch(batch).await;
    assert_eq!(out.len(), 10);
    assert_eq!(out[0], Ok(Reply::status("claimed")));
    assert_eq!(out[1], Ok(bulk("a")));
    assert_eq!(out[2], Ok(Reply::status_with("held", [bulk("a")])));
    assert_eq!(word(out[3].as_ref().unwrap()), "acquired");
    assert_eq!(word(out[4].as_ref().unwrap()), "acquired", "the WAIT outlived a's lease");
    assert_eq!(out[5], Ok(Reply::Int(1)));
    assert_eq!(out[6], Ok(Reply::Nil));
    assert_eq!(out[7], Ok(Reply::status_with("ok", [Reply::Int(1)])));
    assert_eq!(out[8], Ok(Reply::status_with("ok", [Reply::Int(2)])));
    assert_eq!(out[9].as_ref().unwrap_err().code, ErrorCode::Stale, "an error reply does not stop the batch");
}

pub async fn binary_safe_keys(b: &B) {
    let p = prefix();
    let key = Bytes::from([p.as_bytes(), &[0u8, 0xff, b' ', 0x80, b'\'', b'\\']].concat());
    let spaced = Bytes::from([p.as_bytes(), &[0u8, 0xff, b' ', 0x80, b'\'', b'\\', b' ']].concat());
    let owner = Bytes::from_static(&[0, 1, 2, 0xfe]);
    let claim = |k: &Bytes, o: &Bytes| Command::Claim { key: k.clone(), owner: o.clone(), ttl_ms: None };
    assert_eq!(b.execute(claim(&key, &owner)).await, Ok(Reply::status("claimed")));
    assert_eq!(b.execute(Command::Owner { key: key.clone() }).await, Ok(Reply::Bulk(owner.clone())));
    assert_eq!(
        b.execute(Command::Owner { key: spaced.clone() }).await,
        Ok(Reply::Nil),
        "a trailing space is another key"
    );
    let result = Bytes::from((0..=255u8).collect::<Vec<u8>>());
    let r = b
        .execute(Command::IdemBegin {
            key: key.clone(),
            fingerprint: Some(owner.clone()),
            lease_ms: 10_000,
            wait_ms: 0,
        })
        .await
        .unwrap();
    let fence = int_at(&r, 1) as u64;
    b.execute(Command::IdemCommit { key: key.clone(), fence, result: result.clone(), keep_ms: 60_000 }).await.unwrap();
    assert_eq!(b.execute(Command::IdemGet { key }).await, Ok(Reply::status_with("done", [Reply::Bulk(result)])));
}

pub async fn dbsize_counts(b: &B) {
    let k = format!("{}k", prefix());
    ok(b, &["CLAIM", &k, "x"]).await;
    assert!(b.dbsize().await.unwrap() >= 1);
    assert!(!b.info().is_empty());
}
