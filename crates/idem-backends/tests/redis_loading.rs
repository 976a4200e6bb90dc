//! A Redis that is still loading its data set after a start answers
//! `LOADING` and runs nothing: the backend must answer `BUSY` saying that
//! nothing ran (a client may then count the command as not applied), and the
//! command must indeed have changed nothing. Against a private redis-server
//! restarted on a data set big enough, and with a per-key load delay
//! (`key-load-delay`), that its loading can be caught.

mod tls_certs;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use idem_core::{ErrorCode, Reply};
use tls_certs::{cmd, free_port, wait_for_port, KillOnDrop};

/// How long the test waits for the private server to start or finish loading.
const PATIENCE: Duration = Duration::from_secs(120);
/// Keys in the data set, and the delay per key while loading (µs): at least
/// 8 s of loading, however fast the machine.
const KEYS: usize = 8_000;
const KEY_LOAD_DELAY_US: &str = "1000";

fn start_redis(dir: &Path, port: u16, extra: &[&str]) -> KillOnDrop {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed by scripts/setup.sh");
    let redis = KillOnDrop(child);
    wait_for_port(port, PATIENCE, "private redis-server");
    redis
}

/// Whether the server answers a plain read with `LOADING`.
async fn loading(url: &str) -> bool {
    let client = redis::Client::open(url).unwrap();
    let Ok(mut c) = client.get_multiplexed_async_connection().await else { return false };
    match redis::cmd("GET").arg("probe").query_async::<redis::Value>(&mut c).await {
        Ok(_) => false,
        Err(e) => e.kind() == redis::ErrorKind::BusyLoadingError,
    }
}

#[tokio::test]
async fn loading_is_busy_with_nothing_run() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");

    // A data set on disk: KEYS filler keys, saved to dump.rdb.
    {
        let _redis = start_redis(dir.path(), port, &[]);
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let mut fill = redis::pipe();
        for i in 0..KEYS {
            fill.cmd("SET").arg(format!("filler:{i}")).arg(i).ignore();
        }
        fill.query_async::<()>(&mut c).await.unwrap();
        redis::cmd("SAVE").query_async::<()>(&mut c).await.unwrap();
    }

    // Restarted: it loads slowly and answers clients meanwhile.
    let _redis = start_redis(
        dir.path(),
        port,
        &["--key-load-delay", KEY_LOAD_DELAY_US, "--loading-process-events-interval-bytes", "1024"],
    );
    let deadline = Instant::now() + PATIENCE;
    while !loading(&url).await {
        assert!(Instant::now() < deadline, "the private redis-server never answered LOADING");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let backend = idem_backends::connect(&url).await.expect("INFO is answered while loading");
    let lock = backend.execute(cmd(&["LOCK", "loading:l", "a", "LEASE", "60000"])).await;
    let set = backend.execute(cmd(&["VALUE.SET", "loading:v", "x"])).await;
    assert!(loading(&url).await, "loading ended before the commands: KEYS or KEY_LOAD_DELAY_US too small");
    for (what, r) in [("LOCK", lock), ("VALUE.SET", set)] {
        let e = r.expect_err(what);
        assert_eq!(e.code, ErrorCode::Busy, "{what}: {e:?}");
        assert!(e.message.contains("nothing ran"), "{what}: the reply says nothing ran: {e:?}");
    }

    // Once loaded, neither command had taken effect.
    while loading(&url).await {
        assert!(Instant::now() < deadline, "the private redis-server never finished loading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = backend.execute(cmd(&["LOCK.INFO", "loading:l"])).await.unwrap();
    assert_eq!(info, Reply::Array(vec![Reply::Word("free")]), "the LOCK answered BUSY was not granted");
    let got = backend.execute(cmd(&["VALUE.GET", "loading:v"])).await.unwrap();
    assert_eq!(got, Reply::Nil, "the VALUE.SET answered BUSY was not applied");
    let lock = backend.execute(cmd(&["LOCK", "loading:l", "b", "LEASE", "60000"])).await.unwrap();
    assert!(
        matches!(&lock, Reply::Array(v) if v.first() == Some(&Reply::Word("acquired"))),
        "the lock is free for another owner: {lock:?}"
    );
}

/// `idem migrate` on Redis has no schema to make, but it still connects:
/// an unreachable store is an error, not "up to date".
#[tokio::test]
async fn migrate_on_redis_connects_and_fails_when_nothing_answers() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("redis://127.0.0.1:{port}/?connect_timeout_ms=500");
    assert!(idem_backends::migrate(&url).await.is_err(), "nothing listens on {url}");
    let bad = idem_backends::migrate("redis://127.0.0.1:6379/?key_prefix=x").await.unwrap_err().to_string();
    assert!(bad.contains("unknown setting 'key_prefix'"), "{bad}");
}
