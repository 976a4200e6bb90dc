//! Misbehaving clients. Each must get an error or a disconnect, while
//! another client keeps being served, and the server's memory stays bounded
//! (the server runs in this process, so its RSS is ours).

mod common;

use std::time::Duration;

use common::{encode_cmd, rss_bytes, Raw, TestBackend, TestServer, PATIENCE, V};
use idem_server::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Splits reply bytes into lines; every reply in these tests is one line.
fn parse_replies(out: &[u8]) -> Vec<V> {
    String::from_utf8_lossy(out)
        .split_terminator("\r\n")
        .map(|l| match l.strip_prefix('-') {
            Some(e) => V::Err(e.to_string()),
            None => V::Simple(l.to_string()),
        })
        .collect()
}

/// Generous: the point is "does not grow with what the client claims or
/// sends", not a tight budget (other tests in this binary run alongside).
const GROWTH_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The tests here measure the process's RSS, which every test in this
/// binary shares: run them one at a time so each sees only its own growth.
static SERIAL: Mutex<()> = Mutex::const_new(());

async fn assert_protocol_error_then_close(srv: &TestServer, input: &[u8]) {
    let before = rss_bytes();
    let mut bystander = Raw::connect(srv.addr).await;
    assert_eq!(bystander.cmd(&["PING"]).await, V::Simple("PONG".into()));
    let stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    // Send concurrently: the server may refuse before taking it all.
    let input_owned = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&input_owned).await;
        wr
    });
    let mut rd = tokio::io::BufReader::new(rd);
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut out)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    drop(writer.await);
    let seen = parse_replies(&out);
    assert!(
        matches!(seen.as_slice(), [V::Err(e)] if e.starts_with("ERR Protocol error")),
        "input {:?}: got {seen:?}",
        String::from_utf8_lossy(&input[..input.len().min(40)])
    );
    assert_eq!(bystander.cmd(&["PING"]).await, V::Simple("PONG".into()));
    let after = rss_bytes();
    assert!(after.saturating_sub(before) < GROWTH_BYTES_MAX, "RSS grew from {before} to {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bulk_length() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    assert_protocol_error_then_close(&srv, b"*1\r\n$1099511627776\r\n").await;
    // Just over bulk_bytes_max, with nothing following: refused on the header.
    assert_protocol_error_then_close(&srv, b"*2\r\n$3\r\nSET\r\n$2097153\r\n").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_and_non_numeric_lengths() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    for input in [
        &b"*1\r\n$-5\r\n"[..],
        b"*-3\r\n",
        b"*1\r\n$abc\r\n",
        b"*x\r\n",
        b"*1\r\n$3\r\nPINGPONG\r\n",
        b"*1\r\n:4\r\n",
        b"*99999999999999999999999999999999999999999",
    ] {
        assert_protocol_error_then_close(&srv, input).await;
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_argument_header() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    assert_protocol_error_then_close(&srv, b"*1000000\r\n").await;
    // Within args_max but a frame larger than the query buffer, declared
    // argument by argument: refused as soon as the declared sizes pass the bound.
    let mut input = b"*4096\r\n".to_vec();
    for _ in 0..5 {
        input.extend_from_slice(b"$2097152\r\n");
        input.extend(std::iter::repeat_n(b'a', 2_097_152));
        input.extend_from_slice(b"\r\n");
    }
    assert_protocol_error_then_close(&srv, &input).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_inline_line() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    assert_protocol_error_then_close(&srv, &vec![b'A'; 100 * 1024]).await;
    assert_protocol_error_then_close(&srv, b"ECHO \"unterminated\r\n").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    let before = rss_bytes();
    let mut bystander = Raw::connect(srv.addr).await;
    for seed in 1..=8u64 {
        // Deterministic pseudo-random bytes, all 256 values.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let garbage: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let (rd, mut wr) = stream.into_split();
        // Write concurrently: the server may close before taking it all.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&garbage).await;
            wr
        });
        let mut rd = tokio::io::BufReader::new(rd);
        let mut out = Vec::new();
        let read = tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut out)).await;
        assert!(read.is_ok(), "seed {seed}: the server neither answered nor closed");
        // Whatever it is (a reset counts too), every reply line is an error:
        // nothing in random bytes is a valid command.
        assert!(
            out.is_empty() || out.starts_with(b"-ERR"),
            "seed {seed}: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
        drop(writer.await);
        assert_eq!(bystander.cmd(&["PING"]).await, V::Simple("PONG".into()));
    }
    let after = rss_bytes();
    assert!(after.saturating_sub(before) < GROWTH_BYTES_MAX, "RSS grew from {before} to {after}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_pipelines_forever_and_never_reads() {
    let _serial = SERIAL.lock().await;
    // A short write timeout keeps the test quick; the behaviour is the same
    // with the default 10 s.
    let config = ServerConfig { write_timeout_ms: 200, ..ServerConfig::default() };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let before = rss_bytes();
    let mut bystander = Raw::connect(srv.addr).await;

    let mut chunk = Vec::new();
    for _ in 0..1000 {
        chunk.extend(encode_cmd(&[b"ECHO", &[b'e'; 100]]));
    }
    let mut hog = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut sent: u64 = 0;
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match hog.write_all(&chunk).await {
                Ok(()) => sent += chunk.len() as u64,
                Err(e) => return e,
            }
        }
    })
    .await;
    let err = outcome.expect("the server disconnects a client that never reads");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
        ),
        "{err:?} after {sent} bytes"
    );
    assert_eq!(bystander.cmd(&["PING"]).await, V::Simple("PONG".into()));
    let info = match bystander.cmd(&["INFO", "stats"]).await {
        V::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(!info.contains("total_clients_disconnected_slow:0\r\n"), "{info}");
    let after = rss_bytes();
    assert!(after.saturating_sub(before) < GROWTH_BYTES_MAX, "RSS grew from {before} to {after} ({sent} bytes sent)");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_are_cheap() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    let before = rss_bytes();
    let mut conns = Vec::new();
    for _ in 0..500 {
        let mut c = Raw::connect(srv.addr).await;
        assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
        conns.push(c);
    }
    let after = rss_bytes();
    assert!(after.saturating_sub(before) < GROWTH_BYTES_MAX, "RSS grew from {before} to {after}");
    let mut info_client = Raw::connect(srv.addr).await;
    let info = match info_client.cmd(&["INFO", "clients"]).await {
        V::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(info.contains("connected_clients:501"), "{info}");
    drop(conns);
    srv.stop().await;
}
