//! `POST /v1/command` authenticates from the headers before reading the
//! body: a client without the password gets its 401 while its declared
//! body has not been sent (the body-read bound is set far beyond the
//! test's patience, so a server that waited for the body fails the test).

mod common;

use common::{TestServer, PATIENCE};
use idem_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: &str = r#"["IDEM.BEGIN","auth:1"]"#;

fn config() -> ServerConfig {
    ServerConfig {
        http_bind: Some("127.0.0.1:0".parse().unwrap()),
        password: Some("s3cret".into()),
        http_body_read_timeout_ms: 3_600_000,
        ..ServerConfig::default()
    }
}

/// Sends the head of `POST /v1/command` declaring the body, with the
/// `authorization` header if given, and returns the connection.
async fn send_head(srv: &TestServer, authorization: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(srv.http.unwrap()).await.unwrap();
    let mut head = format!(
        "POST /v1/command HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        BODY.len()
    );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes without the body")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_is_refused_before_the_body_is_read() {
    let srv = TestServer::with_store(config()).await;
    for auth in [None, Some("Bearer wrong"), Some("Basic dTp3cm9uZw==")] {
        let mut s = send_head(&srv, auth).await;
        let resp = read_to_close(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 401"), "{auth:?}: {resp}");
        assert!(resp.contains(r#""error":"NOAUTH""#), "the command API's own error format: {resp}");
        assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    }
    // The right password: the body is awaited and the command runs.
    let mut s = send_head(&srv, Some("Bearer s3cret")).await;
    s.write_all(BODY.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf)).await.expect("a reply").unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("started"), "{resp}");
    srv.stop().await;
}
