//! The global bounds (issue 20, part B): `-BUSY` for every client over
//! `max_connections`, HTTP head and body read timeouts, a `Content-Length`
//! over the bound refused from the header, and client eviction over
//! `client_buffers_bytes_max`.

mod common;

use std::time::Duration;

use common::{encode_cmd, Raw, TestBackend, TestServer, PATIENCE, V};
use idem_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes. `Err` when the connection was reset.
async fn read_all(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await.expect("the server closes in time")?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_over_max_connections_reads_busy_then_a_clean_close() {
    let config = ServerConfig { max_connections: 2, ..ServerConfig::default() };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Raw::connect(srv.addr).await;
        assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
        held.push(c);
    }
    // A burst of clients that each send a command at once, as client
    // libraries do, and read: every one gets the BUSY line, none a reset.
    let clients = 300;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let _ = s.write_all(&encode_cmd(&[b"PING"])).await;
            read_all(&mut s).await
        }));
    }
    for t in tasks {
        let out = t.await.expect("client task").expect("closed without a reset");
        assert_eq!(out, b"-BUSY max connections reached\r\n");
    }
    for c in held.iter_mut() {
        assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    }
    srv.stop().await;
}

fn http_config() -> ServerConfig {
    ServerConfig {
        http_bind: Some("127.0.0.1:0".parse().unwrap()),
        http_header_read_timeout_ms: 300,
        http_body_read_timeout_ms: 300,
        ..ServerConfig::default()
    }
}

/// Sends `bytes` one at a time, `gap` apart; returns how many the server
/// took before it closed the connection (all of them if it never did).
async fn trickle(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if s.write_all(&[*b]).await.is_err() {
            return i;
        }
        tokio::time::sleep(gap).await;
        let mut probe = [0u8; 1024];
        // A close (or an answer followed by a close) ends the trickle.
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, s.peek(&mut probe)).await {
            if n == 0 || probe[..n].starts_with(b"HTTP/1.1 408") {
                return i + 1;
            }
        }
    }
    bytes.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_header_read_timeout() {
    let srv = TestServer::start(http_config(), TestBackend::new()).await;
    let http = srv.http.expect("http");
    let mut s = TcpStream::connect(http).await.unwrap();
    // 400 bytes of head at one byte per 20 ms would take 8 s; the bound is 300 ms.
    let head = format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\n\r\n", "a".repeat(360));
    let sent = trickle(&mut s, head.as_bytes(), Duration::from_millis(20)).await;
    assert!(sent < head.len(), "the server waited for the whole slow head");
    // An idle keep-alive connection is cut the same way.
    let mut idle = TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let out = read_all(&mut idle).await.unwrap_or_default();
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_gets_408_at_the_body_read_timeout() {
    let srv = TestServer::start(http_config(), TestBackend::new()).await;
    let http = srv.http.expect("http");
    let mut s = TcpStream::connect(http).await.unwrap();
    let body = format!(r#"["PING","{}"]"#, "a".repeat(300));
    let head = format!(
        "POST /v1/command HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let sent = trickle(&mut s, body.as_bytes(), Duration::from_millis(20)).await;
    assert!(sent < body.len(), "the server waited for the whole slow body");
    let out = String::from_utf8_lossy(&read_all(&mut s).await.unwrap_or_default()).into_owned();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("application/problem+json") && out.contains("http_body_read_timeout_ms"), "{out}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_bound_is_refused_from_the_header() {
    let srv = TestServer::start(http_config(), TestBackend::new()).await;
    let http = srv.http.expect("http");
    for path in ["/v1/command", "/v1/idem/k/begin"] {
        let mut s = TcpStream::connect(http).await.unwrap();
        // The head alone, no body byte: the answer cannot wait for the body.
        let head = format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 1099511627776\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let out = String::from_utf8_lossy(&read_all(&mut s).await.unwrap_or_default()).into_owned();
        assert!(out.starts_with("HTTP/1.1 413"), "{path}: {out}");
        assert!(out.contains("application/problem+json") && out.contains("\"LIMIT\""), "{path}: {out}");
    }
    srv.stop().await;
}

/// The start of a VALUE.SET whose value is `declared` bytes, and `sent` of them.
fn unfinished_set(declared: usize, sent: usize) -> Vec<u8> {
    let mut out = format!("*3\r\n$9\r\nVALUE.SET\r\n$1\r\nk\r\n${declared}\r\n").into_bytes();
    out.resize(out.len() + sent, b'x');
    out
}

async fn info_field(c: &mut Raw, field: &str) -> u64 {
    let V::Bulk(text) = c.cmd(&["INFO"]).await else { panic!("INFO is a bulk string") };
    let text = String::from_utf8(text).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field}"));
    line[field.len() + 1..].trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_client_buffers_bytes_max_the_client_with_the_largest_buffer_is_evicted() {
    let config = ServerConfig { client_buffers_bytes_max: 3 * 1024 * 1024, ..ServerConfig::default() };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let mut bystander = Raw::connect(srv.addr).await;
    assert_eq!(bystander.cmd(&["PING"]).await, V::Simple("PONG".into()));
    // The largest first: 1.9 MB of an unfinished request.
    let mut big = TcpStream::connect(srv.addr).await.unwrap();
    big.write_all(&unfinished_set(2_000_000, 1_900_000)).await.unwrap();
    // Let the server buffer it (the bystander's reply comes after it).
    while info_field(&mut bystander, "client_buffers_bytes").await < 1_900_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut small = Raw::connect(srv.addr).await;
    small.send(&unfinished_set(1_500_000, 1_200_000)).await;
    // Together over 3 MiB: the big one goes, told why.
    let out = String::from_utf8_lossy(&read_all(&mut big).await.expect("a clean close")).into_owned();
    assert!(out.starts_with("-ERR evicted") && out.contains("client_buffers_bytes_max"), "{out:?}");
    // The smaller one keeps its connection and finishes its request.
    small.send(&vec![b'x'; 300_000]).await;
    small.send(b"\r\n").await;
    assert_eq!(small.read().await.and_then(|v| v.err_code().map(String::from)).as_deref(), Some("LIMIT"));
    assert_eq!(small.cmd(&["PING"]).await, V::Simple("PONG".into()));
    assert_eq!(info_field(&mut bystander, "evicted_clients").await, 1);
    srv.stop().await;
}
