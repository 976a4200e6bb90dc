//! The cases of the SQL backends' old own suite (`idem-backends/tests/sql_cases`)
//! that the conformance cases did not already check, folded here so that
//! each runs on every store: the embedded store, PostgreSQL, MariaDB and
//! Redis (the engines at `IDEM_TEST_POSTGRES_URL`, `IDEM_TEST_MYSQL_URL` and
//! `IDEM_TEST_REDIS_URL`, the local ones by default). The rest of that suite
//! repeated conformance cases and was deleted.
//!
//! Every case runs inside its own [`Ctx`] (a random key prefix), so runs
//! share the engines with anything else.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use idem_conformance::{exec_bytes, int_at, ok, parse, sleep_ms, status, Backend, Ctx};
use idem_core::{Command, ErrorCode, Reply};

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Every store, by name.
async fn stores() -> Vec<(&'static str, Arc<dyn Backend>)> {
    let embedded: Arc<dyn Backend> =
        idem_store::Store::open(idem_store::StoreConfig::default()).expect("open the in-memory store");
    let mut out = vec![("embedded", embedded)];
    for (name, var, default) in [
        ("postgres", "IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
        ("mysql", "IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        ("redis", "IDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
    ] {
        let url = env_or(var, default);
        let b = idem_backends::connect(&url).await.unwrap_or_else(|e| panic!("{name} at {url}: {e}"));
        out.push((name, b));
    }
    out
}

/// Runs `case` on every store, one after the other, naming the store that fails.
async fn on_every_store<F, Fut>(case: F)
where
    F: Fn(Arc<dyn Backend>, Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    for (name, b) in stores().await {
        let run = tokio::spawn(case(b.clone(), Ctx::new()));
        if let Err(e) = run.await {
            panic!("on {name}: {e}");
        }
        b.shutdown().await;
    }
}

/// Keys, owners, fingerprints and results are bytes, compared byte for
/// byte: NUL, 0xff, quotes and backslashes pass through, and a trailing
/// space makes another key (no SQL padding or collation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_trailing_spaces() {
    on_every_store(|b, c| async move {
        let key = Bytes::from([c.key("bin").as_bytes(), &[0u8, 0xff, b' ', 0x80, b'\'', b'\\']].concat());
        let spaced = Bytes::from([&key[..], b" "].concat());
        let owner = Bytes::from_static(&[0, 1, 2, 0xfe]);
        let claim = Command::Claim { key: key.clone(), owner: owner.clone(), ttl_ms: None };
        assert_eq!(b.execute(claim).await, Ok(Reply::status("claimed")));
        assert_eq!(b.execute(Command::Owner { key: key.clone() }).await, Ok(Reply::Bulk(owner.clone())));
        assert_eq!(b.execute(Command::Owner { key: spaced }).await, Ok(Reply::Nil), "a trailing space is another key");
        let result = Bytes::from((0..=255u8).collect::<Vec<u8>>());
        let begin = Command::IdemBegin { key: key.clone(), fingerprint: Some(owner), lease_ms: 10_000, wait_ms: 0 };
        let r = b.execute(begin).await.expect("IDEM.BEGIN");
        let fence = u64::try_from(int_at(&r, 1)).expect("a fence");
        let commit = Command::IdemCommit { key: key.clone(), fence, result: result.clone(), keep_ms: 60_000 };
        b.execute(commit).await.expect("IDEM.COMMIT");
        assert_eq!(b.execute(Command::IdemGet { key }).await, Ok(Reply::status_with("done", [Reply::Bulk(result)])));
    })
    .await;
}

/// A pipeline runs in order, each command seeing the earlier ones' effects,
/// including a LOCK whose WAIT outlives the holder's lease inside the
/// pipeline; an error reply does not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_with_a_wait_inside() {
    on_every_store(|b, c| async move {
        let (k, n) = (c.key("k"), c.key("lock"));
        let batch = vec![
            parse(&["CLAIM", &k, "a"]),
            parse(&["LOCK", &n, "a", "LEASE", "100"]),
            parse(&["LOCK", &n, "b", "LEASE", "10000", "WAIT", "20000"]),
            parse(&["RELEASE", &k, "a"]),
            parse(&["OWNER", &k]),
            parse(&["IDEM.COMMIT", &k, "1", "x"]),
            parse(&["COUNTER.ADD", &k, "1"]),
        ];
        let out = b.execute_batch(batch).await;
        assert_eq!(out.len(), 7);
        assert_eq!(out[0], Ok(Reply::status("claimed")));
        assert_eq!(status(out[1].as_ref().unwrap()), "acquired");
        assert_eq!(status(out[2].as_ref().unwrap()), "acquired", "the WAIT outlived a's lease: {out:?}");
        assert_eq!(out[3], Ok(Reply::Int(1)));
        assert_eq!(out[4], Ok(Reply::Nil));
        assert_eq!(out[5].as_ref().unwrap_err().code, ErrorCode::Stale);
        assert_eq!(out[6], Ok(Reply::status_with("ok", [Reply::Int(1)])));
    })
    .await;
}

/// Concurrent COUNTER.ADDs with one op id apply once: one `ok`, every other
/// `replayed` with the first application's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_op_applies_once_under_a_race() {
    on_every_store(|b, c| async move {
        let k = c.key("budget");
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (b, k) = (b.clone(), k.clone());
                tokio::spawn(async move { ok(&*b, &["COUNTER.ADD", &k, "5", "MAX", "100", "OP", "grant-1"]).await })
            })
            .collect();
        let mut words = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(int_at(&r, 1), 5, "{r:?}");
            words.push(status(&r));
        }
        assert_eq!(words.iter().filter(|w| *w == "ok").count(), 1, "{words:?}");
        assert_eq!(words.iter().filter(|w| *w == "replayed").count(), 19, "{words:?}");
        assert_eq!(ok(&*b, &["COUNTER.GET", &k]).await, Reply::Int(5));
    })
    .await;
}

/// Attempts count up across expiries (a third BEGIN after two run-out
/// leases is attempt 3), and a lock's former holder asking again after its
/// lease ran out gets a larger fence, like anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_and_fences_across_expiries() {
    on_every_store(|b, c| async move {
        let k = c.key("op3");
        ok(&*b, &["IDEM.BEGIN", &k, "LEASE", "50"]).await;
        sleep_ms(250).await;
        ok(&*b, &["IDEM.BEGIN", &k, "LEASE", "50"]).await;
        sleep_ms(250).await;
        let r = ok(&*b, &["IDEM.BEGIN", &k]).await;
        assert_eq!((status(&r).as_str(), int_at(&r, 2)), ("started", 3), "{r:?}");

        let n = c.key("lock");
        let f1 = int_at(&ok(&*b, &["LOCK", &n, "w1", "LEASE", "80"]).await, 1);
        sleep_ms(250).await;
        assert_eq!(ok(&*b, &["RENEW", &n, "w1", "LEASE", "1000"]).await, Reply::status("lost"));
        let r = ok(&*b, &["LOCK", &n, "w1", "LEASE", "1000"]).await;
        assert_eq!(status(&r), "acquired");
        assert!(int_at(&r, 1) > f1, "{r:?} after fence {f1}");
    })
    .await;
}

/// DBSIZE counts what a store holds, and INFO says something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbsize_and_info() {
    on_every_store(|b, c| async move {
        let k = c.key("k");
        ok(&*b, &["CLAIM", &k, "x"]).await;
        assert!(b.dbsize().await.unwrap() >= 1);
        assert!(!b.info().is_empty());
        let bytes_key = Bytes::from(k);
        assert!(exec_bytes(&*b, &[Bytes::from_static(b"OWNER"), bytes_key]).await.is_ok());
    })
    .await;
}
