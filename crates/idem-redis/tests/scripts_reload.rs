//! A Redis that lost idem's scripts (a restart, `SCRIPT FLUSH`) refuses
//! their EVALSHA without running anything; the backend loads the script and
//! sends it again, so the command runs once and answers as usual. Against a
//! private redis-server on a free port (the flush must not touch the shared
//! Redis others use).

use idem_redis::RedisBackend;
use idem_testkit::RedisServer;

mod support;
use support::{int_at, run, word};

async fn flush_scripts(port: u16) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("URL");
    let mut c = client.get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut c).await.expect("SCRIPT FLUSH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_again_after_a_flush() {
    let server = RedisServer::start();
    let port = server.port();
    let b = RedisBackend::connect(&server.url()).await.expect("connect");

    // The BEGIN fast path's script, then the idem script (COMMIT), then a
    // script called with keys and arguments (COUNTER.ADD), each after a flush.
    flush_scripts(port).await;
    let started = run(&b, &["IDEM.BEGIN", "k", "LEASE", "30000"]).await;
    assert_eq!(word(&started), "started");
    let fence = int_at(&started, 1);
    flush_scripts(port).await;
    let running = run(&b, &["IDEM.BEGIN", "k", "LEASE", "30000"]).await;
    assert_eq!(word(&running), "running");
    assert_eq!(int_at(&running, 1), fence, "the running record's fence");
    flush_scripts(port).await;
    assert_eq!(word(&run(&b, &["IDEM.COMMIT", "k", &fence.to_string(), "r"]).await), "ok");
    flush_scripts(port).await;
    let added = run(&b, &["COUNTER.ADD", "n", "5"]).await;
    assert_eq!((word(&added), int_at(&added, 1)), ("ok", 5), "the script ran once");
    let added = run(&b, &["COUNTER.ADD", "n", "5"]).await;
    assert_eq!((word(&added), int_at(&added, 1)), ("ok", 10));
}
