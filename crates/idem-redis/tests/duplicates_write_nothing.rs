//! A duplicate that changes nothing writes nothing (docs/backends.md): on
//! Redis, the server's count of writes since the last save
//! (`rdb_changes_since_last_save`, which every write command bumps) stays
//! the same across duplicates of every primitive, while the first request
//! of each bumps it. Against a private redis-server on a free port, so that
//! no other client's writes are counted.

use idem_redis::RedisBackend;
use idem_testkit::RedisServer;

mod support;
use support::{int_at, run, word};

/// The server's writes since its last save.
async fn writes(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("persistence").query_async(c).await.expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rdb_changes_since_last_save in {info}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_of_every_primitive_write_nothing() {
    let server = RedisServer::start();
    let b = RedisBackend::connect(&server.url()).await.expect("connect");
    let client = redis::Client::open(server.url()).expect("URL");
    let mut c = client.get_multiplexed_async_connection().await.expect("connect");

    // Each first request writes; each (argv, expected word) after it is a
    // duplicate that must not.
    let begun = run(&b, &["IDEM.BEGIN", "run", "LEASE", "30000", "FP", "f"]).await;
    assert_eq!(word(&begun), "started");
    let done = run(&b, &["IDEM.BEGIN", "done", "LEASE", "30000"]).await;
    let fence = int_at(&done, 1).to_string();
    assert_eq!(word(&run(&b, &["IDEM.COMMIT", "done", &fence, "result"]).await), "ok");
    assert_eq!(word(&run(&b, &["CLAIM", "c", "alice"]).await), "claimed");
    assert_eq!(word(&run(&b, &["LOCK", "l", "alice", "LEASE", "30000"]).await), "acquired");
    assert_eq!(word(&run(&b, &["COUNTER.ADD", "n", "5", "OP", "op1"]).await), "ok");
    assert_eq!(word(&run(&b, &["VALUE.SET", "v", "x"]).await), "ok");
    assert_eq!(word(&run(&b, &["FSM.MOVE", "m", "paid", "FROM", "none"]).await), "moved");
    assert_eq!(word(&run(&b, &["SLOTS.RESERVE", "s", "0", "1", "alice"]).await), "reserved");

    let before = writes(&mut c).await;
    assert!(before > 0, "the first requests wrote");
    let duplicates: &[(&[&str], &str)] = &[
        (&["IDEM.BEGIN", "run", "LEASE", "30000", "FP", "f"], "running"),
        (&["IDEM.BEGIN", "run", "LEASE", "30000"], "running"),
        (&["IDEM.BEGIN", "done", "LEASE", "30000"], "done"),
        (&["CLAIM", "c", "bob"], "held"),
        (&["CLAIM", "c", "bob", "TTL", "5000"], "held"),
        (&["CLAIM.ALL", "bob", "c"], "held"),
        (&["LOCK", "l", "bob", "LEASE", "30000"], "busy"),
        (&["COUNTER.ADD", "n", "5", "OP", "op1"], "replayed"),
        (&["VALUE.SET", "v", "y", "IFVERSION", "7"], "conflict"),
        (&["FSM.MOVE", "m", "paid", "FROM", "none"], "already"),
        (&["FSM.MOVE", "m", "shipped", "FROM", "none"], "refused"),
        (&["SLOTS.RESERVE", "s", "0", "1", "bob"], "conflict"),
    ];
    for (argv, expected) in duplicates {
        assert_eq!(word(&run(&b, argv).await), *expected, "{argv:?}");
        assert_eq!(writes(&mut c).await, before, "{argv:?} wrote");
    }

    // The counter can move: a fresh request after the duplicates is counted.
    assert_eq!(word(&run(&b, &["CLAIM", "c2", "bob"]).await), "claimed");
    assert!(writes(&mut c).await > before, "a fresh CLAIM is a write");
}
