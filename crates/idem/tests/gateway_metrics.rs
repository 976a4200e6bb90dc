//! `idem gateway --metrics-listen`: a replayed request moves the
//! duplicates-absorbed counter on `GET /metrics`, and the upstream runs once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A keep-alive HTTP/1.1 upstream answering every request with 201 and a
/// fixed JSON body; counts the requests it got.
fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let hits = counted.clone();
            std::thread::spawn(move || serve_upstream(conn, &hits));
        }
    });
    (addr, hits)
}

fn serve_upstream(conn: TcpStream, hits: &AtomicUsize) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = format!("{{\"order\":{n}}}");
        let head = format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if conn.write_all(format!("{head}{answer}").as_bytes()).is_err() {
            return;
        }
    }
}

struct Gateway {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request on its own connection; returns status, lower-cased head, body.
fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The value of the sample `series` (name and labels as printed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_replay_moves_the_duplicates_absorbed_counter() {
    let (up, hits) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let gw: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["gateway", "--listen", &gw.to_string(), "--upstream", &format!("http://{up}")])
        .args(["--metrics-listen", &metrics.to_string(), "--log", "warn"])
        .arg("--data")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start idem gateway");
    let _gateway = Gateway { child, _dir: dir };
    wait_port(gw);
    wait_port(metrics);

    let scrape = || {
        let (status, head, body) = call(metrics, "GET", "/metrics", &[], "");
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/plain"), "{head}");
        body
    };
    const ABSORBED: &str = "idem_gateway_duplicates_absorbed_total";
    const REPLAYED: &str = "idem_gateway_requests_total{outcome=\"replayed\"}";
    const EXECUTED: &str = "idem_gateway_requests_total{outcome=\"executed\"}";
    let before = scrape();
    // Registered when the layer was built, before any request.
    assert_eq!(sample(&before, ABSORBED), Some(0.0), "{before}");

    let headers = [("Idempotency-Key", "\"order-1\""), ("Content-Type", "application/json")];
    let first = call(gw, "POST", "/orders", &headers, "{\"item\":\"tea\"}");
    let second = call(gw, "POST", "/orders", &headers, "{ \"item\": \"tea\" }");
    assert_eq!((first.0, second.0), (201, 201));
    assert_eq!(first.2, second.2, "the duplicate gets the first response");
    assert!(!first.1.contains("idempotent-replayed"), "{}", first.1);
    assert!(second.1.contains("idempotent-replayed: true"), "{}", second.1);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the upstream ran once");

    let after = scrape();
    for family in [
        "idem_gateway_requests_total",
        "idem_gateway_request_duration_seconds",
        "idem_gateway_duplicates_absorbed_total",
        "idem_gateway_idem_call_duration_seconds",
    ] {
        assert!(after.contains(&format!("# HELP {family} ")), "{family} has no HELP line: {after}");
    }
    assert_eq!(sample(&after, ABSORBED), Some(1.0), "{after}");
    assert_eq!(sample(&after, REPLAYED), Some(1.0), "{after}");
    assert_eq!(sample(&after, EXECUTED), Some(1.0), "{after}");
    assert!(
        sample(&after, "idem_gateway_idem_call_duration_seconds_count").is_some_and(|n| n >= 2.0),
        "both keyed requests called the store: {after}"
    );
}
