//! The edges of the backends' one-statement fast paths, on every external
//! engine: a fast path answers only what it can decide without a lock (a
//! fresh key, another live holder, a live record) and hands everything else
//! to the locking routine. These cases reach the hand-over: a re-CLAIM by the
//! holder that changes the TTL either way, a CLAIM of a claim whose TTL ran
//! out, and an IDEM.BEGIN after a lease ran out (a takeover) and after a
//! commit (a replay).
//!
//! Needs the engines at `IDEM_TEST_POSTGRES_URL`, `IDEM_TEST_MYSQL_URL` and
//! `IDEM_TEST_REDIS_URL` (the defaults are the local ones).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, Command, Limits, Reply};

/// The TTL or lease the cases let run out, and how long they wait for that:
/// the margin keeps the checks clear of the boundary on a loaded machine.
const SHORT_MS: u64 = 1_000;
const PAST_SHORT: Duration = Duration::from_millis(2_000);

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

async fn backends() -> Vec<(&'static str, Arc<dyn Backend>)> {
    let pg = env_or("IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    let my = env_or("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let rd = env_or("IDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let mut out: Vec<(&'static str, Arc<dyn Backend>)> = Vec::new();
    for (name, url) in [("postgres", pg), ("mysql", my), ("redis", rd)] {
        let b = idem_backends::connect(&url).await.unwrap_or_else(|e| panic!("{name} at {url}: {e}"));
        out.push((name, b));
    }
    out
}

async fn run(b: &dyn Backend, args: &[&str]) -> Reply {
    let argv: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    let cmd = Command::parse(&argv, &Limits::default()).expect("a valid command");
    b.execute(cmd).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn word(r: &Reply) -> &'static str {
    match r {
        Reply::Array(v) => match v.first() {
            Some(Reply::Word(w)) => w,
            _ => panic!("no status word: {r:?}"),
        },
        _ => panic!("not an array: {r:?}"),
    }
}

fn int(r: &Reply, i: usize) -> i64 {
    match r {
        Reply::Array(v) => match v.get(i) {
            Some(Reply::Int(n)) => *n,
            other => panic!("item {i} of {r:?} is {other:?}"),
        },
        _ => panic!("not an array: {r:?}"),
    }
}

fn key(name: &str, what: &str) -> String {
    use rand::Rng;
    format!("fastpath:{name}:{what}:{:016x}", rand::thread_rng().gen::<u64>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_paths_hand_every_other_case_to_the_locking_routine() {
    for (name, b) in backends().await {
        let b = b.as_ref();
        let at = |what: &str| format!("{name}: {what}");

        // A claim without a TTL that its holder re-claims with one expires.
        let k1 = key(name, "gains-ttl");
        assert_eq!(word(&run(b, &["CLAIM", &k1, "o1"]).await), "claimed", "{}", at("first claim"));
        assert_eq!(word(&run(b, &["CLAIM", &k1, "o1", "TTL", &SHORT_MS.to_string()]).await), "claimed");
        // A claim with a TTL that its holder re-claims without one stays.
        let k2 = key(name, "loses-ttl");
        assert_eq!(word(&run(b, &["CLAIM", &k2, "o1", "TTL", &SHORT_MS.to_string()]).await), "claimed");
        assert_eq!(word(&run(b, &["CLAIM", &k2, "o1"]).await), "claimed", "{}", at("re-claim"));
        // Another owner is refused meanwhile, with the holder named.
        let held = run(b, &["CLAIM", &k2, "o2"]).await;
        assert_eq!(held, Reply::Array(vec![Reply::Word("held"), Reply::Bulk(Bytes::from_static(b"o1"))]));
        // A record committed, and one whose lease will run out.
        let k3 = key(name, "done");
        let started = run(b, &["IDEM.BEGIN", &k3, "LEASE", "30000"]).await;
        let fence = int(&started, 1).to_string();
        assert_eq!(run(b, &["IDEM.COMMIT", &k3, &fence, "result-1"]).await, Reply::status("ok"));
        let k4 = key(name, "takeover");
        let first = run(b, &["IDEM.BEGIN", &k4, "LEASE", &SHORT_MS.to_string()]).await;
        assert_eq!((word(&first), int(&first, 2)), ("started", 1), "{}", at("first attempt"));
        let running = run(b, &["IDEM.BEGIN", &k4, "LEASE", "30000"]).await;
        assert_eq!((word(&running), int(&running, 1)), ("running", int(&first, 1)), "{}", at("duplicate"));

        tokio::time::sleep(PAST_SHORT).await;

        assert_eq!(word(&run(b, &["CLAIM", &k1, "o2"]).await), "claimed", "{}", at("the TTL the re-claim set ran out"));
        assert_eq!(word(&run(b, &["CLAIM", &k2, "o2"]).await), "held", "{}", at("the re-claim dropped the TTL"));
        let replay = run(b, &["IDEM.BEGIN", &k3, "LEASE", "30000"]).await;
        assert_eq!(replay, Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"result-1"))]));
        let second = run(b, &["IDEM.BEGIN", &k4, "LEASE", "30000"]).await;
        assert_eq!(word(&second), "started", "{}", at("takeover after the lease ran out"));
        assert_eq!(int(&second, 2), 2, "{}", at("the takeover is attempt 2"));
        assert!(int(&second, 1) > int(&first, 1), "{}", at("the takeover's fence is larger"));
        for k in [&k1, &k2] {
            run(b, &["RELEASE", k, "o1"]).await;
            run(b, &["RELEASE", k, "o2"]).await;
        }
        for k in [&k3, &k4] {
            run(b, &["IDEM.DEL", k]).await;
        }
        b.shutdown().await;
    }
}

/// MariaDB's two first statements for CLAIM ([`idem_sql::InsertFirst`]: the
/// bare insert while taken keys are rare, the one-statement upsert
/// otherwise) answer alike: a fresh key, another live holder, the holder's
/// re-claim with a new TTL, and a takeover after the TTL ran out.
/// PostgreSQL's are checked the same way, with its row versions, in
/// `idem-postgres/tests/duplicates.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_claim_answers_the_same_by_either_first_statement() {
    let url = env_or("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let b = idem_backends::mysql::MySqlBackend::connect(&url).await.expect("mysql backend");
    if !b.claim_tries_insert_first() {
        eprintln!("not MariaDB: MySQL runs CLAIM through its procedure only");
        return;
    }
    let taken = key("mysql", "mix-taken");
    assert_eq!(word(&run(&b, &["CLAIM", &taken, "o1"]).await), "claimed");
    for bare in [true, false, true] {
        // Steer the choice well past the switch: fresh keys make the bare
        // insert the first try, taken ones the upsert.
        for n in 0..40 {
            if bare {
                let fresh = key("mysql", &format!("mix-fresh-{n}"));
                assert_eq!(word(&run(&b, &["CLAIM", &fresh, "o1"]).await), "claimed");
                run(&b, &["RELEASE", &fresh, "o1"]).await;
            } else {
                assert_eq!(word(&run(&b, &["CLAIM", &taken, "o2"]).await), "held");
            }
        }
        let k = key("mysql", &format!("mix-{bare}"));
        let route = |b: &idem_backends::mysql::MySqlBackend| {
            assert_eq!(b.claim_tries_insert_first(), bare, "the first CLAIM statement moved")
        };
        route(&b);
        assert_eq!(run(&b, &["CLAIM", &k, "o1", "TTL", "60000"]).await, Reply::status("claimed"));
        route(&b);
        let held = run(&b, &["CLAIM", &k, "o2"]).await;
        assert_eq!(held, Reply::status_with("held", [Reply::Bulk(Bytes::from_static(b"o1"))]), "bare = {bare}");
        // The owner again: claimed, with its new TTL.
        route(&b);
        assert_eq!(run(&b, &["CLAIM", &k, "o1", "TTL", "1"]).await, Reply::status("claimed"), "bare = {bare}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The TTL ran out: another owner takes it over.
        route(&b);
        assert_eq!(run(&b, &["CLAIM", &k, "o2"]).await, Reply::status("claimed"), "takeover, bare = {bare}");
        assert_eq!(run(&b, &["OWNER", &k]).await, Reply::Bulk(Bytes::from_static(b"o2")), "bare = {bare}");
        run(&b, &["RELEASE", &k, "o2"]).await;
    }
    run(&b, &["RELEASE", &taken, "o1"]).await;
    b.shutdown().await;
}

/// MariaDB's IDEM.BEGIN answers the same whichever statement goes first: the
/// bare insert (while taken keys are rare) or the one-statement upsert that
/// reads an existing record. Each route gets a fresh grant, a running
/// duplicate (its fence), a fingerprint mismatch, a replay, a takeover after
/// the lease ran out and a grant after an ABORT's tombstone, both with a
/// larger fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_begin_answers_the_same_by_either_first_statement() {
    let url = env_or("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let b = idem_backends::mysql::MySqlBackend::connect(&url).await.expect("mysql backend");
    if !b.begin_tries_insert_first() {
        eprintln!("not MariaDB: MySQL runs IDEM.BEGIN through its procedure only");
        return;
    }
    let taken = key("mysql", "bmix-taken");
    assert_eq!(word(&run(&b, &["IDEM.BEGIN", &taken, "LEASE", "60000"]).await), "started");
    for bare in [true, false, true] {
        let k = key("mysql", &format!("bmix-{bare}"));
        steer(&b, bare, &taken).await;
        let first = run(&b, &["IDEM.BEGIN", &k, "LEASE", "60000", "FP", "f1"]).await;
        assert_eq!((word(&first), int(&first, 2)), ("started", 1), "bare = {bare}");
        let f1 = int(&first, 1);
        steer(&b, bare, &taken).await;
        let dup = run(&b, &["IDEM.BEGIN", &k, "LEASE", "60000", "FP", "f1"]).await;
        assert_eq!((word(&dup), int(&dup, 1)), ("running", f1), "bare = {bare}");
        steer(&b, bare, &taken).await;
        let argv: Vec<Bytes> = ["IDEM.BEGIN", &k, "LEASE", "60000", "FP", "f2"]
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let mismatch = b.execute(Command::parse(&argv, &Limits::default()).expect("valid")).await;
        assert_eq!(mismatch.map_err(|e| e.code), Err(idem_core::ErrorCode::Mismatch), "bare = {bare}");
        assert_eq!(run(&b, &["IDEM.COMMIT", &k, &f1.to_string(), "r1"]).await, Reply::status("ok"));
        steer(&b, bare, &taken).await;
        let replay = run(&b, &["IDEM.BEGIN", &k, "LEASE", "60000"]).await;
        assert_eq!(replay, Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"r1"))]), "bare = {bare}");
        // A lease that runs out: the next BEGIN takes over, attempt 2.
        let short = key("mysql", &format!("bmix-short-{bare}"));
        steer(&b, bare, &taken).await;
        let one = run(&b, &["IDEM.BEGIN", &short, "LEASE", &SHORT_MS.to_string()]).await;
        assert_eq!(word(&one), "started", "bare = {bare}");
        tokio::time::sleep(PAST_SHORT).await;
        steer(&b, bare, &taken).await;
        let two = run(&b, &["IDEM.BEGIN", &short, "LEASE", "60000"]).await;
        assert_eq!((word(&two), int(&two, 2)), ("started", 2), "takeover, bare = {bare}");
        assert!(int(&two, 1) > int(&one, 1), "the takeover's fence grows (bare = {bare})");
        // An ABORT leaves a tombstone: the next BEGIN starts over, fence larger.
        assert_eq!(run(&b, &["IDEM.ABORT", &short, &int(&two, 1).to_string()]).await, Reply::status("ok"));
        steer(&b, bare, &taken).await;
        let three = run(&b, &["IDEM.BEGIN", &short, "LEASE", "60000"]).await;
        assert_eq!((word(&three), int(&three, 2)), ("started", 1), "after ABORT, bare = {bare}");
        assert!(int(&three, 1) > int(&two, 1), "the fence after a tombstone grows (bare = {bare})");
        for key in [&k, &short] {
            run(&b, &["IDEM.DEL", key]).await;
        }
    }
    run(&b, &["IDEM.DEL", &taken]).await;
    b.shutdown().await;
}

/// Steers MariaDB's choice of IDEM.BEGIN's first statement well past the
/// switch (an eighth of taken keys): fresh keys make the bare insert the
/// first try, BEGINs of the taken key the upsert.
async fn steer(b: &idem_backends::mysql::MySqlBackend, bare: bool, taken: &str) {
    for n in 0..40 {
        if bare {
            let fresh = key("mysql", &format!("bmix-fresh-{n}"));
            assert_eq!(word(&run(b, &["IDEM.BEGIN", &fresh, "LEASE", "60000"]).await), "started");
            run(b, &["IDEM.DEL", &fresh]).await;
        } else {
            assert_eq!(word(&run(b, &["IDEM.BEGIN", taken, "LEASE", "60000"]).await), "running");
        }
    }
    assert_eq!(b.begin_tries_insert_first(), bare, "the first BEGIN statement did not move");
}
