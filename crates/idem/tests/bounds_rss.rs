//! The memory bounds of `idem serve`, pushed past with real clients while
//! the server's resident memory (VmRSS of the spawned process) is read:
//! `client_buffers_bytes_max` against many unfinished RESP requests and
//! many unfinished HTTP bodies, and `maxmemory_bytes` against a stream of
//! new records. Each takes a few seconds.
//!
//! Without the bounds, 40 connections holding an unfinished 7.2 MiB RESP
//! request each added about 290 MiB of RSS (issue 20). Here the live
//! buffers stay under the bound, and RSS may grow by up to four times it:
//! the allocator keeps the pages of evicted clients' buffers for a while
//! after they are freed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound on any wait, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);
const MIB: usize = 1024 * 1024;
/// Clients, as in the measurement.
const CLIENTS: usize = 40;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `idem serve`, killed when dropped.
struct Serve {
    child: Child,
    port: u16,
    http_port: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `idem serve` with the settings `env` (as `IDEM_*` variables).
    fn start(data: &Path, env: &[(&str, String)]) -> Serve {
        let (port, http_port) = (free_port(), free_port());
        let mut c = Command::new(env!("CARGO_BIN_EXE_idem"));
        for (k, _) in std::env::vars() {
            if k.starts_with("IDEM_") {
                c.env_remove(k);
            }
        }
        c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        // jemalloc hands freed pages back at once, so VmRSS is the memory
        // the server holds, not pages it freed and jemalloc keeps for its
        // 10 s decay (how many of those an eviction leaves depends on the
        // machine's load). The prefixed name is the one this build reads.
        for var in ["_RJEM_MALLOC_CONF", "MALLOC_CONF"] {
            c.env(var, "dirty_decay_ms:0,muzzy_decay_ms:0");
        }
        let child = c
            .args(["serve", "--port", &port.to_string(), "--http-port", &http_port.to_string(), "--log", "warn"])
            .arg("--data")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start idem serve");
        let mut s = Serve { child, port, http_port };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() || TcpStream::connect(("127.0.0.1", http_port)).is_err()
        {
            assert!(s.child.try_wait().unwrap().is_none(), "idem serve exited early");
            assert!(Instant::now() < deadline, "idem serve did not open its ports");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// The server's resident memory, bytes.
    fn rss_bytes(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
    }

    /// One INFO field.
    fn info(&self, field: &str) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"INFO\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        // A bulk string: `$len\r\n` then the text; read until it is all here.
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "INFO: closed");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((len, rest)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n")) {
                if rest.len() >= len.parse::<usize>().unwrap() {
                    let line = rest.lines().find(|l| l.starts_with(&format!("{field}:"))).expect("the field");
                    return line[field.len() + 1..].trim().parse().unwrap();
                }
            }
        }
    }
}

/// Sends `head` then `body_sent` bytes of padding on each of `CLIENTS`
/// connections at once, and keeps them open (the requests stay unfinished).
/// Returns the connections; write errors (an evicted client) are expected.
fn flood(port: u16, head: &[u8], body_sent: usize) -> Vec<TcpStream> {
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let head = head.to_vec();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(PATIENCE)).unwrap();
                let chunk = vec![b'x'; 64 * 1024];
                let _ = s.write_all(&head);
                let mut left = body_sent;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                s
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn unfinished_resp_requests_are_held_to_client_buffers_bytes_max() {
    let bound = 32 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(dir.path(), &[("IDEM_CLIENT_BUFFERS_BYTES_MAX", bound.to_string())]);
    let before = srv.rss_bytes();
    // 7.2 MiB each: three 1.8 MiB bulks sent whole, a fourth 1.8 MiB one cut short.
    let bulk = 1_887_436;
    let mut head = b"*6\r\n$9\r\nVALUE.SET\r\n$1\r\nk\r\n".to_vec();
    let mut sent = 0;
    for _ in 0..3 {
        head.extend_from_slice(format!("${bulk}\r\n").as_bytes());
        head.resize(head.len() + bulk, b'v');
        head.extend_from_slice(b"\r\n");
        sent += bulk;
    }
    head.extend_from_slice(format!("${bulk}\r\n").as_bytes());
    let conns = flood(srv.port, &head, 7 * MIB + MIB / 5 - sent);
    let grown = srv.rss_bytes().saturating_sub(before);
    let evicted = srv.info("evicted_clients");
    eprintln!("RESP: RSS grew {} MiB with {CLIENTS} clients, {evicted} evicted", grown / MIB);
    assert!(grown < 4 * bound, "RSS grew {grown} bytes, bound {bound}");
    assert!(evicted as usize >= CLIENTS - bound / (7 * MIB) - 1, "only {evicted} of {CLIENTS} clients evicted");
    assert!(srv.info("client_buffers_bytes") as usize <= bound);
    drop(conns);
}

#[test]
fn unfinished_http_bodies_are_held_to_client_buffers_bytes_max() {
    let bound = 32 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(
        dir.path(),
        &[
            ("IDEM_CLIENT_BUFFERS_BYTES_MAX", bound.to_string()),
            // The bound under test, not the timeout, must stop them.
            ("IDEM_HTTP_BODY_READ_TIMEOUT_MS", "60000".to_string()),
        ],
    );
    let before = srv.rss_bytes();
    let head = format!(
        "POST /v1/command HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        8 * MIB - 1
    );
    let conns = flood(srv.http_port, head.as_bytes(), 7 * MIB + MIB / 2);
    let grown = srv.rss_bytes().saturating_sub(before);
    let evicted = srv.info("evicted_clients");
    eprintln!("HTTP: RSS grew {} MiB with {CLIENTS} clients, {evicted} evicted", grown / MIB);
    assert!(grown < 4 * bound, "RSS grew {grown} bytes, bound {bound}");
    assert!(evicted as usize >= CLIENTS - bound / (7 * MIB) - 1, "only {evicted} of {CLIENTS} clients evicted");
    drop(conns);
}

#[test]
fn new_records_stop_at_maxmemory_bytes() {
    let bound = 16 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(dir.path(), &[("IDEM_MAXMEMORY_BYTES", bound.to_string())]);
    let before = srv.rss_bytes();
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let value = "v".repeat(1000);
    let (mut ok, mut oom) = (0usize, 0usize);
    let mut pending = Vec::new();
    let mut i = 0;
    // Twice what the bound holds: the second half must all be refused.
    while ok + oom < 2 * bound / 1000 {
        let mut batch = String::new();
        for _ in 0..500 {
            batch.push_str(&format!("VALUE.SET key:{i:08} {value}\r\n"));
            i += 1;
        }
        s.write_all(batch.as_bytes()).unwrap();
        let mut lines = 0;
        let mut buf = [0u8; 65536];
        while lines < 500 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed");
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = pending.drain(..end + 2).collect();
                if line.starts_with(b"-OOM") {
                    oom += 1;
                    lines += 1;
                } else if line.starts_with(b"*") {
                    // `*2` then `$2 ok` then `:version`: count the array once.
                    ok += 1;
                    lines += 1;
                } else {
                    assert!(!line.starts_with(b"-"), "{}", String::from_utf8_lossy(&line));
                }
            }
        }
    }
    let grown = srv.rss_bytes().saturating_sub(before);
    let used = srv.info("memory_used_bytes") as usize;
    eprintln!("maxmemory: {ok} records created, {oom} refused, estimate {used} bytes, RSS grew {} MiB", grown / MIB);
    assert!(oom >= bound / 1000, "only {oom} refused");
    assert!(ok < bound / 1000, "{ok} records of 1000 bytes fit a bound of {bound}");
    assert!(used >= bound && used < bound + 2 * 1100, "estimate {used} bytes");
    assert!(grown < 4 * bound, "RSS grew {grown} bytes, bound {bound}");
    // The records that exist still read.
    s.write_all(b"VALUE.GET key:00000000\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"*2\r\n$1000\r\n"), "{}", String::from_utf8_lossy(&buf[..n.min(40)]));
}
