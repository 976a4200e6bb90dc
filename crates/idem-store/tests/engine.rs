//! The sharded engine through its `Backend` interface: pipelines, parked
//! waits and their hand-over, CLAIM.ALL across shards, and recovery of a data
//! directory after a restart.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, CmdResult, Command, ErrorCode, Limits, Reply};
use idem_store::{Store, StoreConfig};

fn cmd(args: &[&str]) -> Command {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    Command::parse(&args, &Limits::default()).expect("valid command")
}

async fn run(store: &Store, args: &[&str]) -> CmdResult {
    store.execute(cmd(args)).await
}

fn word(r: &CmdResult) -> &'static str {
    r.as_ref().expect("ok reply").word().expect("status word")
}

fn int_at(r: &CmdResult, i: usize) -> i64 {
    match r.as_ref().expect("ok reply") {
        Reply::Array(v) => match v[i] {
            Reply::Int(n) => n,
            ref other => panic!("element {i} is not an integer: {other:?}"),
        },
        other => panic!("not an array: {other:?}"),
    }
}

fn memory_store(shards: usize) -> Arc<Store> {
    Store::open(StoreConfig { shards, ..StoreConfig::default() }).expect("open")
}

#[tokio::test]
async fn a_pipeline_sees_its_own_effects_in_order() {
    let store = memory_store(8);
    let out = store
        .execute_batch(vec![
            cmd(&["VALUE.SET", "v", "a"]),
            cmd(&["VALUE.SET", "v", "b", "IFVERSION", "1"]),
            cmd(&["VALUE.SET", "v", "c", "IFVERSION", "1"]),
            cmd(&["VALUE.GET", "v"]),
        ])
        .await;
    assert_eq!(word(&out[0]), "ok");
    assert_eq!(word(&out[1]), "ok");
    assert_eq!(word(&out[2]), "conflict");
    assert_eq!(out[3], Ok(Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"b")), Reply::Int(2)])));
}

#[tokio::test]
async fn a_parked_begin_gets_the_committed_result() {
    let store = memory_store(4);
    let first = run(&store, &["IDEM.BEGIN", "k", "LEASE", "60000"]).await;
    assert_eq!(word(&first), "started");
    let fence = int_at(&first, 1).to_string();
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { run(&store, &["IDEM.BEGIN", "k", "WAIT", "60000"]).await })
    };
    // Let the waiter park before the commit.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "a WAIT on a running key must park");
    assert_eq!(word(&run(&store, &["IDEM.COMMIT", "k", &fence, "result-1"]).await), "ok");
    let woken = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken").unwrap();
    assert_eq!(woken, Ok(Reply::Array(vec![Reply::Word("done"), Reply::Bulk(Bytes::from_static(b"result-1"))])));
}

#[tokio::test]
async fn lock_waiters_are_served_first_come_first_served() {
    let store = memory_store(4);
    assert_eq!(word(&run(&store, &["LOCK", "l", "holder", "LEASE", "60000"]).await), "acquired");
    let mut waiters = Vec::new();
    for i in 0..5 {
        let store = Arc::clone(&store);
        let owner = format!("w{i}");
        waiters.push(tokio::spawn(async move {
            let r = run(&store, &["LOCK", "l", &owner, "LEASE", "60000", "WAIT", "60000"]).await;
            (owner, r)
        }));
        // Park them one after the other, so their order is known.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut last_fence = 0;
    let mut prev_owner = "holder".to_string();
    for (i, w) in waiters.into_iter().enumerate() {
        assert_eq!(run(&store, &["UNLOCK", "l", &prev_owner]).await, Ok(Reply::Int(1)));
        let (owner, r) = tokio::time::timeout(Duration::from_secs(10), w).await.expect("served").unwrap();
        assert_eq!(owner, format!("w{i}"), "FIFO order");
        assert_eq!(word(&r), "acquired");
        let fence = int_at(&r, 1);
        assert!(fence > last_fence, "fences grow: {fence} after {last_fence}");
        last_fence = fence;
        prev_owner = owner;
    }
}

#[tokio::test]
async fn a_dropped_waiter_is_withdrawn() {
    let store = memory_store(2);
    assert_eq!(word(&run(&store, &["LOCK", "l", "a", "LEASE", "60000"]).await), "acquired");
    let fut = run(&store, &["LOCK", "l", "b", "LEASE", "60000", "WAIT", "60000"]);
    // Poll it once so that it parks, then drop it: its client went away.
    let _ = tokio::time::timeout(Duration::from_millis(50), fut).await;
    let info = run(&store, &["LOCK.INFO", "l"]).await.unwrap();
    match info {
        Reply::Array(v) => assert_eq!(v[4], Reply::Int(0), "no waiter left: {v:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(run(&store, &["UNLOCK", "l", "a"]).await, Ok(Reply::Int(1)));
    assert_eq!(word(&run(&store, &["LOCK.INFO", "l"]).await), "free", "nobody inherited the lock");
}

#[tokio::test]
async fn commands_after_a_parked_one_wait_for_it() {
    let store = memory_store(4);
    assert_eq!(word(&run(&store, &["LOCK", "l", "a", "LEASE", "60000"]).await), "acquired");
    let pipeline = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .execute_batch(vec![
                    cmd(&["LOCK", "l", "b", "LEASE", "60000", "WAIT", "60000"]),
                    cmd(&["UNLOCK", "l", "b"]),
                ])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(run(&store, &["UNLOCK", "l", "a"]).await, Ok(Reply::Int(1)));
    let out = tokio::time::timeout(Duration::from_secs(10), pipeline).await.unwrap().unwrap();
    assert_eq!(word(&out[0]), "acquired");
    assert_eq!(out[1], Ok(Reply::Int(1)), "UNLOCK ran after b acquired, not before");
}

#[tokio::test]
async fn claim_all_across_shards_is_all_or_nothing() {
    let store = memory_store(16);
    let keys: Vec<String> = (0..40).map(|i| format!("sku:{i}")).collect();
    assert_eq!(word(&run(&store, &["CLAIM", "sku:7", "other"]).await), "claimed");
    assert_eq!(word(&run(&store, &["CLAIM", "sku:31", "other"]).await), "claimed");
    let mut args = vec!["CLAIM.ALL", "me"];
    args.extend(keys.iter().map(String::as_str));
    let r = run(&store, &args).await.unwrap();
    let Reply::Array(v) = r else { panic!() };
    assert_eq!(v[0], Reply::Word("held"));
    assert_eq!(v.len(), 1 + 2 * 2, "both conflicts are listed: {v:?}");
    for k in &keys {
        if k != "sku:7" && k != "sku:31" {
            assert_eq!(run(&store, &["OWNER", k]).await, Ok(Reply::Nil), "{k} must not be claimed");
        }
    }
    assert_eq!(run(&store, &["RELEASE", "sku:7", "other"]).await, Ok(Reply::Int(1)));
    assert_eq!(run(&store, &["RELEASE", "sku:31", "other"]).await, Ok(Reply::Int(1)));
    assert_eq!(word(&run(&store, &args).await), "claimed");
    for k in &keys {
        assert_eq!(run(&store, &["OWNER", k]).await, Ok(Reply::Bulk(Bytes::from_static(b"me"))));
    }
}

#[tokio::test]
async fn fifty_racing_begins_give_one_start() {
    let store = memory_store(8);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { run(&store, &["IDEM.BEGIN", "race", "LEASE", "60000"]).await }));
    }
    let mut started = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match word(&r) {
            "started" => started += 1,
            "running" => {}
            w => panic!("unexpected {w}"),
        }
    }
    assert_eq!(started, 1);
}

#[tokio::test]
async fn writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || StoreConfig { data_dir: Some(dir.path().to_path_buf()), shards: 4, ..StoreConfig::default() };
    let fence;
    {
        let store = Store::open(config()).unwrap();
        let r = run(&store, &["IDEM.BEGIN", "pay", "LEASE", "60000"]).await;
        fence = int_at(&r, 1);
        assert_eq!(word(&run(&store, &["IDEM.COMMIT", "pay", &fence.to_string(), "paid"]).await), "ok");
        assert_eq!(word(&run(&store, &["CLAIM", "email:a", "user-1"]).await), "claimed");
        assert_eq!(word(&run(&store, &["COUNTER.ADD", "n", "5", "OP", "op-1"]).await), "ok");
        store.shutdown().await;
    }
    let store = Store::open(config()).unwrap();
    assert_eq!(
        run(&store, &["IDEM.BEGIN", "pay"]).await,
        Ok(Reply::Array(vec![Reply::Word("done"), Reply::Bulk(Bytes::from_static(b"paid"))]))
    );
    assert_eq!(run(&store, &["OWNER", "email:a"]).await, Ok(Reply::Bulk(Bytes::from_static(b"user-1"))));
    assert_eq!(word(&run(&store, &["COUNTER.ADD", "n", "5", "OP", "op-1"]).await), "replayed");
    assert_eq!(run(&store, &["COUNTER.GET", "n"]).await, Ok(Reply::Int(5)));
    let r = run(&store, &["LOCK", "after-restart", "x", "LEASE", "1000"]).await;
    assert!(int_at(&r, 1) > fence, "fences keep growing after a restart");
}

#[tokio::test]
async fn a_renewed_lease_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || StoreConfig { data_dir: Some(dir.path().to_path_buf()), shards: 2, ..StoreConfig::default() };
    let fence;
    {
        let store = Store::open(config()).unwrap();
        fence = int_at(&run(&store, &["IDEM.BEGIN", "job", "LEASE", "1000"]).await, 1).to_string();
        let r = run(&store, &["IDEM.RENEW", "job", &fence, "LEASE", "600000"]).await;
        assert_eq!(word(&r), "renewed");
        assert_eq!(int_at(&r, 1).to_string(), fence);
        store.shutdown().await;
    }
    let store = Store::open(config()).unwrap();
    let r = run(&store, &["IDEM.GET", "job"]).await;
    assert_eq!(word(&r), "running");
    // Only the renewal can leave more than the first lease's 1,000 ms.
    assert!(int_at(&r, 2) > 1000, "the renewed lease was recovered: {r:?}");
    assert_eq!(word(&run(&store, &["IDEM.COMMIT", "job", &fence, "ok"]).await), "ok");
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let store = memory_store(2);
    let limits = Limits::default();
    let long_key = vec![b'k'; limits.key_bytes_max + 1];
    let args = vec![Bytes::from_static(b"CLAIM"), Bytes::from(long_key), Bytes::from_static(b"me")];
    let err = Command::parse(&args, &limits).unwrap_err();
    assert_eq!(err.code, ErrorCode::Limit);
    assert_eq!(store.dbsize().await.unwrap(), 0);
    let stale = run(&store, &["IDEM.COMMIT", "nope", "12345", "x"]).await.unwrap_err();
    assert_eq!(stale.code, ErrorCode::Stale);
    assert_eq!(store.dbsize().await.unwrap(), 0);
}
