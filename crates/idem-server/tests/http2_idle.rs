//! The HTTP API's head read bound holds for HTTP/2 too (hyper applies its
//! own to HTTP/1.1 only): an HTTP/2 connection with no request in flight
//! for `http_header_read_timeout_ms` is closed, with a GOAWAY, even when
//! the client never finishes a header block and never answers the PING of
//! a graceful close; a request in flight for longer is not cut.

mod common;

use common::{http, TestServer, PATIENCE};
use idem_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn config() -> ServerConfig {
    ServerConfig {
        http_bind: Some("127.0.0.1:0".parse().unwrap()),
        http_header_read_timeout_ms: 200,
        ..ServerConfig::default()
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HTTP/2 connection (prior knowledge) that has sent the preface, its
/// SETTINGS and then `rest`.
async fn h2(srv: &TestServer, rest: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(srv.http.unwrap()).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend_from_slice(rest);
    s.write_all(&out).await.unwrap();
    s
}

/// The frames the server sends until it closes the connection: (type, flags, stream, payload).
async fn frames_until_closed(s: &mut TcpStream) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the server never closed the idle HTTP/2 connection");
    let mut frames = Vec::new();
    let mut b = &bytes[..];
    while b.len() >= 9 {
        let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
        frames.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
        b = &b[9 + len..];
    }
    frames
}

/// The GOAWAY's error code: 0 is NO_ERROR, a graceful close.
fn goaway_codes(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<u32> {
    frames.iter().filter(|f| f.0 == GOAWAY).map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_sends_no_request_is_closed() {
    let srv = TestServer::with_store(config()).await;
    let mut s = h2(&srv, &[]).await;
    let frames = frames_until_closed(&mut s).await;
    assert_eq!(goaway_codes(&frames).first(), Some(&0), "closed gracefully: {frames:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_that_never_ends_does_not_hold_the_connection() {
    let srv = TestServer::with_store(config()).await;
    // HEADERS without END_HEADERS: the server waits for CONTINUATION frames
    // that never come (:method GET, :scheme http, then nothing).
    let mut s = h2(&srv, &frame(HEADERS, END_STREAM, 1, &[0x82, 0x86])).await;
    let frames = frames_until_closed(&mut s).await;
    assert!(!frames.iter().any(|f| f.0 == HEADERS), "no response to an unfinished request: {frames:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_response_an_idle_http2_connection_is_closed() {
    let srv = TestServer::with_store(config()).await;
    // GET /healthz: :method GET, :scheme http, :authority "t", :path "/healthz".
    let mut block = vec![0x82, 0x86, 0x41, 0x01, b't', 0x04, 0x08];
    block.extend_from_slice(b"/healthz");
    let mut s = h2(&srv, &frame(HEADERS, END_STREAM | END_HEADERS, 1, &block)).await;
    let frames = frames_until_closed(&mut s).await;
    let answered = frames.iter().any(|f| f.0 == HEADERS && f.2 == 1 && f.3.first() == Some(&0x88));
    assert!(answered, "200 on stream 1 first (:status 200 is static index 8): {frames:?}");
    assert_eq!(goaway_codes(&frames).first(), Some(&0), "then a graceful close: {frames:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_longer_than_the_bound_is_not_cut() {
    let srv = TestServer::with_store(config()).await;
    let addr = srv.http.unwrap();
    let json = [("Content-Type", "application/json")];
    let (status, _, body) =
        http(addr, "POST", "/v1/command", &json, br#"["IDEM.BEGIN","idle:1","LEASE","60000"]"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // A duplicate waits for the first for 10 bounds before it is answered.
    let (status, _, body) = http(addr, "POST", "/v1/command", &json, br#"["IDEM.BEGIN","idle:1","WAIT","2000"]"#).await;
    assert_eq!(status, 200, "answered after the wait: {}", String::from_utf8_lossy(&body));
    srv.stop().await;
}
