//! Test helpers: start a server on port 0, a raw RESP client, a tiny HTTP
//! client and a test-only backend that needs no store.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command, Reply};
use idem_server::{Server, ServerConfig};
use std::sync::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

/// Upper bound on any single wait in a test, so a bug fails the test
/// instead of hanging it. Never an assertion on speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A running server and the means to stop it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with `config` on 127.0.0.1 port 0 (and HTTP on port
    /// 0 when `config.http_bind` is set).
    pub async fn start(mut config: ServerConfig, backend: Arc<dyn Backend>) -> TestServer {
        config.bind = "127.0.0.1:0".parse().unwrap();
        if config.http_bind.is_some() {
            config.http_bind = Some("127.0.0.1:0".parse().unwrap());
        }
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let http = server.http_local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(backend, async move {
            let _ = rx.await;
        }));
        TestServer { addr, http, stop: Some(tx), task }
    }

    /// Starts a server with the embedded in-memory store.
    pub async fn with_store(config: ServerConfig) -> TestServer {
        let store = idem_store::Store::open(idem_store::StoreConfig::default()).expect("open store");
        Self::start(config, store).await
    }

    /// Asks the server to shut down and waits until `run` returns.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task).await.expect("server stops").expect("server task");
    }

    /// Asks for shutdown without waiting; returns the task to await.
    pub fn begin_stop(mut self) -> JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task
    }
}

/// A RESP value as read by the raw client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<V>),
    Map(Vec<(V, V)>),
}

impl V {
    pub fn bulk(s: &str) -> V {
        V::Bulk(s.as_bytes().to_vec())
    }
    pub fn err_code(&self) -> Option<&str> {
        match self {
            V::Err(e) => e.split(' ').next(),
            _ => None,
        }
    }
    pub fn as_array(&self) -> &[V] {
        match self {
            V::Array(v) => v,
            other => panic!("expected an array, got {other:?}"),
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A hand-driven RESP client: sends any bytes, reads replies one by one.
pub struct Raw {
    io: BufReader<TcpStream>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let s =
            tokio::time::timeout(PATIENCE, TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
        Raw { io: BufReader::new(s) }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("send");
    }

    /// Sends a command and reads its reply.
    pub async fn cmd(&mut self, args: &[&str]) -> V {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&encode_cmd(&args)).await;
        self.read().await.expect("a reply, not end of stream")
    }

    /// Reads one reply; `None` at end of stream (or a reset).
    pub async fn read(&mut self) -> Option<V> {
        tokio::time::timeout(PATIENCE, read_value(&mut self.io)).await.expect("reply in time")
    }

    /// Reads (and drops) replies until the server closes; returns them.
    pub async fn read_until_closed(&mut self) -> Vec<V> {
        let mut seen = Vec::new();
        while let Some(v) = self.read().await {
            seen.push(v);
        }
        seen
    }
}

fn read_value(
    io: &mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<V>> + Send + '_>> {
    Box::pin(async move {
        let mut line = Vec::new();
        match io.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF: {:?}", String::from_utf8_lossy(&line));
        let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        Some(match line[0] {
            b'+' => V::Simple(body),
            b'-' => V::Err(body),
            b':' => V::Int(body.parse().expect("integer")),
            b'_' => V::Nil,
            b'$' => {
                let n: i64 = body.parse().expect("bulk length");
                if n < 0 {
                    V::Nil
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    io.read_exact(&mut buf).await.ok()?;
                    buf.truncate(n as usize);
                    V::Bulk(buf)
                }
            }
            b'*' => {
                let n: i64 = body.parse().expect("array length");
                if n < 0 {
                    V::Nil
                } else {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(read_value(io).await?);
                    }
                    V::Array(items)
                }
            }
            b'%' => {
                let n: usize = body.parse().expect("map length");
                let mut pairs = Vec::new();
                for _ in 0..n {
                    let k = read_value(io).await?;
                    let v = read_value(io).await?;
                    pairs.push((k, v));
                }
                V::Map(pairs)
            }
            other => panic!("unexpected reply type byte {other:?}"),
        })
    })
}

/// A test backend: answers every command `["echo", NAME, batch_len]`,
/// records the batches it was given, DBSIZE 42, and holds any command whose
/// key is `gate` until [`TestBackend::open_gate`].
pub struct TestBackend {
    pub batches: Mutex<Vec<Vec<&'static str>>>,
    pub shut_down: AtomicBool,
    pub gate: Semaphore,
    /// When set, VALUE.GET replies with this many bytes.
    pub big_reply_bytes: std::sync::atomic::AtomicUsize,
}

impl TestBackend {
    pub fn new() -> Arc<TestBackend> {
        Arc::new(TestBackend {
            batches: Mutex::new(Vec::new()),
            shut_down: AtomicBool::new(false),
            gate: Semaphore::new(0),
            big_reply_bytes: Default::default(),
        })
    }
    pub fn open_gate(&self) {
        self.gate.add_permits(1000);
    }
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(|b| b.len()).collect()
    }
}

impl Backend for TestBackend {
    fn name(&self) -> &'static str {
        "test"
    }

    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(async move {
            self.batches.lock().unwrap().push(cmds.iter().map(|c| c.name()).collect());
            let n = cmds.len() as i64;
            let mut out = Vec::new();
            for c in &cmds {
                if c.route_key().is_some_and(|k| k.as_ref() == b"gate") {
                    self.gate.acquire().await.expect("gate").forget();
                }
                let big = self.big_reply_bytes.load(Ordering::Relaxed);
                if big > 0 && matches!(c, Command::ValueGet { .. }) {
                    out.push(Ok(Reply::Array(vec![Reply::Bulk(Bytes::from(vec![b'x'; big])), Reply::Int(1)])));
                    continue;
                }
                if c.route_key().is_some_and(|k| k.as_ref() == b"stale") {
                    out.push(Err(CmdError::stale("fence 1 is not current")));
                    continue;
                }
                out.push(Ok(Reply::status_with(
                    "echo",
                    [Reply::Bulk(Bytes::from_static(c.name().as_bytes())), Reply::Int(n)],
                )));
            }
            out
        })
    }

    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async { Ok(42) })
    }

    fn info(&self) -> Vec<(String, String)> {
        vec![("test_field".into(), "1".into())]
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.shut_down.store(true, Ordering::SeqCst) })
    }
}

/// The server process's resident memory, in bytes (the server runs in this
/// process, so this is the server's memory plus the test's).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).expect("VmRSS value").parse().expect("VmRSS number");
    kb * 1024
}

/// A minimal HTTP/1.1 request (Connection: close); returns status, headers and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a huge body; ignore write errors.
    let _ = s.write_all(body).await;
    let mut resp = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut resp)).await.expect("http reply in time").ok();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status: u16 = head.split(' ').nth(1).expect("status").parse().expect("status code");
    let mut body = resp[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}
