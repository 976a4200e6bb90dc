//! The HTTP/JSON API against the embedded store.

mod common;

use common::{http, TestServer};
use idem_server::ServerConfig;
use serde_json::{json, Value};

fn config() -> ServerConfig {
    ServerConfig { http_bind: Some("127.0.0.1:0".parse().unwrap()), ..ServerConfig::default() }
}

async fn call(srv: &TestServer, body: Value) -> (u16, Value) {
    let (status, _, bytes) = http(
        srv.http.unwrap(),
        "POST",
        "/v1/command",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_commit_replay_over_http() {
    let srv = TestServer::with_store(config()).await;
    let (status, v) = call(&srv, json!(["IDEM.BEGIN", "h:1", "LEASE", "5000"])).await;
    assert_eq!(status, 200);
    assert_eq!(v[0], "started");
    assert_eq!(v[2], 1);
    let fence = v[1].as_i64().expect("fence is a number");
    let (status, v) = call(&srv, json!(["IDEM.COMMIT", "h:1", fence.to_string(), "paid"])).await;
    assert_eq!((status, v), (200, json!(["ok"])));
    let (status, v) = call(&srv, json!(["IDEM.BEGIN", "h:1"])).await;
    assert_eq!((status, v), (200, json!(["done", "paid"])));
    // A stale fence: 409 with the code.
    let (status, v) = call(&srv, json!(["IDEM.ABORT", "h:1", fence.to_string()])).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"], "STALE");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_use_base64() {
    let srv = TestServer::with_store(config()).await;
    let (status, v) = call(&srv, json!(["VALUE.SET", "bin", {"base64": "AP8Q"}])).await;
    assert_eq!((status, v), (200, json!(["ok", 1])));
    let (_, v) = call(&srv, json!(["VALUE.GET", "bin"])).await;
    assert_eq!(v, json!([{"base64": "AP8Q"}, 1]));
    let (_, v) = call(&srv, json!(["VALUE.GET", "absent"])).await;
    assert_eq!(v, Value::Null);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_statuses() {
    let srv = TestServer::with_store(config()).await;
    let (s, _) = call(&srv, json!(["IDEM.BEGIN", "m", "FP", "a"])).await;
    assert_eq!(s, 200);
    let (s, v) = call(&srv, json!(["IDEM.BEGIN", "m", "FP", "b"])).await;
    assert_eq!((s, v["error"].clone()), (422, json!("MISMATCH")));
    let (s, v) = call(&srv, json!(["IDEM.GET", "k".repeat(513)])).await;
    assert_eq!((s, v["error"].clone()), (413, json!("LIMIT")));
    let many: Vec<String> =
        std::iter::once("CLAIM.ALL".to_string()).chain((0..5000).map(|i| format!("k{i}"))).collect();
    let (s, v) = call(&srv, json!(many)).await;
    assert_eq!((s, v["error"].clone()), (413, json!("LIMIT")), "{v}");
    let (s, v) = call(&srv, json!(["IDEM.BEGIN", 5])).await;
    assert_eq!((s, v["error"].clone()), (400, json!("ERR")), "{v}");
    srv.stop().await;
}
