//! A duplicate that changes nothing writes nothing (docs/commands.md, the
//! backends' fast paths): a CLAIM answered `held` and an IDEM.BEGIN answered
//! `running` or `done` leave the row as it was: the same row version
//! (`ctid`, `xmin`) and no row lock (`xmax` stays 0; `FOR UPDATE` or `ON
//! CONFLICT DO UPDATE` would set it to the locker's transaction id).
//!
//! Needs PostgreSQL at `IDEM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use bytes::Bytes;
use idem_core::{Backend, Command, Limits, Reply};
use idem_postgres::PgBackend;
use tokio_postgres::Client;

mod support;
use support::{connect, url};

async fn run(b: &dyn Backend, args: &[&str]) -> Reply {
    let argv: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    let cmd = Command::parse(&argv, &Limits::default()).expect("a valid command");
    b.execute(cmd).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn word(r: &Reply) -> &'static str {
    match r {
        Reply::Word(w) => w,
        Reply::Array(items) => match items.first() {
            Some(Reply::Word(w)) => w,
            _ => panic!("no status word: {r:?}"),
        },
        _ => panic!("no status word: {r:?}"),
    }
}

fn fence(r: &Reply) -> i64 {
    match r {
        Reply::Array(items) => match items.get(1) {
            Some(Reply::Int(n)) => *n,
            other => panic!("no fence: {other:?} in {r:?}"),
        },
        _ => panic!("not an array: {r:?}"),
    }
}

/// The row's version and lock: `ctid`, `xmin` and `xmax`, as text.
async fn row_state(c: &Client, table: &str, key: &str) -> (String, String, String) {
    let sql = format!("SELECT ctid::text, xmin::text, xmax::text FROM {table} WHERE key = $1");
    let row = c.query_one(&sql, &[&key.as_bytes()]).await.expect("the row");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_neither_write_nor_lock_the_row() {
    let b = PgBackend::connect(&url()).await.expect("backend");
    let c = connect(&url()).await;
    let tag = format!("{:016x}", rand::random::<u64>());

    let claim = format!("dup:claim:{tag}");
    assert_eq!(word(&run(&b, &["CLAIM", &claim, "o1"]).await), "claimed");
    let before = row_state(&c, "idem_claims", &claim).await;
    assert_eq!(before.2, "0", "a fresh claim's row carries no lock");
    for _ in 0..3 {
        let held = run(&b, &["CLAIM", &claim, "o2"]).await;
        assert_eq!(held, Reply::Array(vec![Reply::Word("held"), Reply::Bulk(Bytes::from_static(b"o1"))]));
    }
    assert_eq!(row_state(&c, "idem_claims", &claim).await, before, "a held CLAIM wrote or locked the row");

    let running = format!("dup:running:{tag}");
    let first = run(&b, &["IDEM.BEGIN", &running, "LEASE", "30000"]).await;
    assert_eq!(word(&first), "started");
    let before = row_state(&c, "idem_records", &running).await;
    assert_eq!(before.2, "0", "a fresh grant's row carries no lock");
    for _ in 0..3 {
        let dup = run(&b, &["IDEM.BEGIN", &running, "LEASE", "30000"]).await;
        assert_eq!((word(&dup), fence(&dup)), ("running", fence(&first)));
    }
    assert_eq!(row_state(&c, "idem_records", &running).await, before, "a running IDEM.BEGIN wrote or locked the row");

    let done = format!("dup:done:{tag}");
    let f = fence(&run(&b, &["IDEM.BEGIN", &done, "LEASE", "30000"]).await).to_string();
    assert_eq!(run(&b, &["IDEM.COMMIT", &done, &f, "r"]).await, Reply::status("ok"));
    let before = row_state(&c, "idem_records", &done).await;
    for _ in 0..3 {
        let replay = run(&b, &["IDEM.BEGIN", &done, "LEASE", "30000"]).await;
        assert_eq!(replay, Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"r"))]));
    }
    assert_eq!(row_state(&c, "idem_records", &done).await, before, "a replayed IDEM.BEGIN wrote or locked the row");

    for k in [&running, &done] {
        run(&b, &["IDEM.DEL", k]).await;
    }
    run(&b, &["RELEASE", &claim, "o1"]).await;
    b.shutdown().await;
}

/// CLAIM answers the same whichever first statement the backend picks (the
/// bare insert while taken keys are rare, the one-statement CTE when they are
/// common): fresh, held (writing nothing), the owner's own claim again with a
/// new TTL, and a takeover after the TTL ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_answers_the_same_by_either_first_statement() {
    let b = PgBackend::connect(&url()).await.expect("backend");
    let c = connect(&url()).await;
    let tag = format!("{:016x}", rand::random::<u64>());
    let taken = format!("mix:taken:{tag}");
    assert_eq!(word(&run(&b, &["CLAIM", &taken, "o1"]).await), "claimed");
    for bare in [true, false, true] {
        // Steer the choice well past the switch: fresh keys make the bare
        // insert the first try, taken ones the CTE.
        for n in 0..40 {
            if bare {
                let fresh = format!("mix:fresh:{tag}:{n}");
                assert_eq!(word(&run(&b, &["CLAIM", &fresh, "o1"]).await), "claimed");
                run(&b, &["RELEASE", &fresh, "o1"]).await;
            } else {
                assert_eq!(word(&run(&b, &["CLAIM", &taken, "o2"]).await), "held");
            }
        }
        let key = format!("mix:{bare}:{tag}");
        let route = |b: &PgBackend| assert_eq!(b.claim_tries_insert_first(), bare, "the first CLAIM statement moved");
        route(&b);
        assert_eq!(run(&b, &["CLAIM", &key, "o1", "TTL", "60000"]).await, Reply::status("claimed"));
        let before = row_state(&c, "idem_claims", &key).await;
        route(&b);
        let held = run(&b, &["CLAIM", &key, "o2"]).await;
        assert_eq!(held, Reply::status_with("held", [Reply::Bulk(Bytes::from_static(b"o1"))]), "bare = {bare}");
        assert_eq!(row_state(&c, "idem_claims", &key).await, before, "a held CLAIM wrote (bare = {bare})");
        // The owner again: claimed, with its new TTL.
        route(&b);
        assert_eq!(run(&b, &["CLAIM", &key, "o1", "TTL", "1"]).await, Reply::status("claimed"), "bare = {bare}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // The TTL ran out: another owner takes it over.
        route(&b);
        assert_eq!(run(&b, &["CLAIM", &key, "o2"]).await, Reply::status("claimed"), "takeover, bare = {bare}");
        assert_eq!(run(&b, &["OWNER", &key]).await, Reply::Bulk(Bytes::from_static(b"o2")), "bare = {bare}");
        run(&b, &["RELEASE", &key, "o2"]).await;
    }
    run(&b, &["RELEASE", &taken, "o1"]).await;
    b.shutdown().await;
}

/// IDEM.BEGIN's two first statements ([`idem_sql::InsertFirst::begin`]: the
/// bare insert while taken keys are rare, the one-statement CTE otherwise)
/// answer alike and write alike: a fresh grant, a duplicate of a running
/// record (row untouched), a replay after the commit, and a takeover after
/// the lease ran out, whose fence is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_answers_the_same_by_either_first_statement() {
    let b = PgBackend::connect(&url()).await.expect("backend");
    let c = connect(&url()).await;
    let tag = format!("{:016x}", rand::random::<u64>());
    let taken = format!("bmix:taken:{tag}");
    assert_eq!(word(&run(&b, &["IDEM.BEGIN", &taken, "LEASE", "60000"]).await), "started");
    for (round, bare) in [true, false, true].into_iter().enumerate() {
        // Steer the choice well past the switch: fresh keys make the bare
        // insert the first try, taken ones the CTE. (120 fresh ones bring the
        // moving average low enough that the two duplicates below keep it
        // under an eighth.)
        for n in 0..120 {
            let k = if bare { format!("bmix:fresh:{tag}:{round}:{n}") } else { taken.clone() };
            let want = if bare { "started" } else { "running" };
            assert_eq!(word(&run(&b, &["IDEM.BEGIN", &k, "LEASE", "60000"]).await), want);
        }
        let route = |b: &PgBackend| assert_eq!(b.begin_tries_insert_first(), bare, "the first BEGIN statement moved");
        let key = format!("bmix:{round}:{tag}");
        route(&b);
        let first = run(&b, &["IDEM.BEGIN", &key, "LEASE", "60000"]).await;
        assert_eq!(word(&first), "started", "bare = {bare}");
        let before = row_state(&c, "idem_records", &key).await;
        route(&b);
        let dup = run(&b, &["IDEM.BEGIN", &key, "LEASE", "60000"]).await;
        assert_eq!((word(&dup), fence(&dup)), ("running", fence(&first)), "bare = {bare}");
        assert_eq!(row_state(&c, "idem_records", &key).await, before, "a running duplicate wrote (bare = {bare})");
        // Another transaction holds the key's fence lock (a caller's own
        // transaction that began the key, or a key sharing its hash): a
        // duplicate still answers from the record without waiting for it.
        let mut holder = connect(&url()).await;
        let tx = holder.transaction().await.expect("a transaction");
        tx.execute("SELECT idem_key_lock($1)", &[&key.as_bytes()]).await.expect("the key's fence lock");
        route(&b);
        let behind_lock =
            tokio::time::timeout(std::time::Duration::from_secs(3), run(&b, &["IDEM.BEGIN", &key, "LEASE", "60000"]))
                .await
                .unwrap_or_else(|_| panic!("a duplicate waited for the key's fence lock (bare = {bare})"));
        assert_eq!((word(&behind_lock), fence(&behind_lock)), ("running", fence(&first)), "bare = {bare}");
        tx.rollback().await.expect("rollback");
        // A lease that runs out: the next BEGIN takes over with a larger fence.
        let short = format!("bmix:short:{round}:{tag}");
        route(&b);
        let one = run(&b, &["IDEM.BEGIN", &short, "LEASE", "1"]).await;
        assert_eq!(word(&one), "started", "bare = {bare}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        route(&b);
        let two = run(&b, &["IDEM.BEGIN", &short, "LEASE", "60000"]).await;
        assert_eq!(word(&two), "started", "takeover, bare = {bare}");
        assert!(fence(&two) > fence(&one), "the takeover's fence grows (bare = {bare})");
        let f = fence(&first).to_string();
        assert_eq!(run(&b, &["IDEM.COMMIT", &key, &f, "r1"]).await, Reply::status("ok"));
        route(&b);
        let replay = run(&b, &["IDEM.BEGIN", &key, "LEASE", "60000"]).await;
        assert_eq!(replay, Reply::status_with("done", [Reply::Bulk(Bytes::from_static(b"r1"))]), "bare = {bare}");
        for k in [&key, &short] {
            run(&b, &["IDEM.DEL", k]).await;
        }
    }
    run(&b, &["IDEM.DEL", &taken]).await;
    b.shutdown().await;
}
