//! A TCP fault proxy between idem and its external store: idem's `--store`
//! URL points at it, and it forwards every connection to the private
//! engine until a fault is switched on.
//!
//! - **blackhole**: nothing flows either way, and new connections are
//!   accepted but not forwarded; when it ends, what was held is delivered
//!   late (TCP retransmits across a partition that heals);
//! - **half-open**: requests still reach the store but its replies are held
//!   (the store commits, idem never hears); when it ends, every connection
//!   is reset, as the peers' keepalives would have done;
//! - **reset**: every connection is reset (RST) at once, and new ones are
//!   reset on accept while the fault lasts;
//! - **latency**: every chunk waits before it is forwarded.
//!
//! It runs on its own runtime, so a fault never slows the clients' runtime.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes read per forwarded chunk.
const CHUNK_BYTES: usize = 16 * 1024;
/// How long connecting to the engine may take before the client's
/// connection is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the link does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Blackhole,
    HalfOpen,
    Reset,
    Latency(Duration),
}

/// Which way bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// idem to the store (requests).
    Up,
    /// The store to idem (replies).
    Down,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    mode: Mode,
    /// Bumped to reset every connection open at that moment.
    resets: u64,
}

impl Link {
    fn flows(&self, way: Way) -> bool {
        match self.mode {
            Mode::Pass | Mode::Latency(_) => true,
            Mode::Blackhole | Mode::Reset => false,
            Mode::HalfOpen => way == Way::Up,
        }
    }
}

/// A running proxy; dropping it stops it and closes its connections.
pub struct Proxy {
    port: u16,
    link: watch::Sender<Link>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).context("binding the fault proxy")?;
        let port = listener.local_addr()?.port();
        let (link, rx) = watch::channel(Link { mode: Mode::Pass, resets: 0 });
        runtime.spawn(accept(listener, upstream, rx));
        Ok(Proxy { port, link, runtime: Some(runtime) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Switches the link to `mode`. Ending a half-open fault resets the
    /// connections it held, and starting a reset resets them all.
    pub fn set(&self, mode: Mode) {
        self.link.send_modify(|l| {
            if mode == Mode::Reset || (l.mode == Mode::HalfOpen && mode != Mode::HalfOpen) {
                l.resets += 1;
            }
            l.mode = mode;
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, link: watch::Receiver<Link>) {
    loop {
        let Ok((down, _)) = listener.accept().await else { continue };
        tokio::spawn(serve(down, upstream, link.clone()));
    }
}

/// Drops a connection with RST instead of FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn serve(down: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    let _ = down.set_nodelay(true);
    let mode = link.borrow().mode;
    if mode == Mode::Reset {
        reset(&down);
        return;
    }
    // A blackhole accepts and then says nothing, connects included.
    if link.wait_for(|l| l.mode != Mode::Blackhole).await.is_err() {
        return;
    }
    let resets = link.borrow().resets;
    let up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(up)) => up,
        _ => {
            reset(&down);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    tokio::spawn(pump(down_r, up_w, Way::Up, link.clone(), resets));
    tokio::spawn(pump(up_r, down_w, Way::Down, link, resets));
}

/// Returns once the connections opened at `resets` are to be reset.
async fn reset_of(link: &mut watch::Receiver<Link>, resets: u64) {
    let _ = link.wait_for(|l| l.resets != resets).await;
}

/// Forwards one direction until either end closes or the connection is
/// reset.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, way: Way, mut link: watch::Receiver<Link>, resets: u64) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let reset_both = |from: &OwnedReadHalf, to: &OwnedWriteHalf| {
        reset(from.as_ref());
        reset(to.as_ref());
    };
    loop {
        // Wait until bytes may flow this way (or the connection is reset).
        let Ok(l) = link.wait_for(|l| l.resets != resets || l.flows(way)).await.map(|l| *l) else { return };
        if l.resets != resets {
            return reset_both(&from, &to);
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            _ = reset_of(&mut link, resets) => return reset_both(&from, &to),
        };
        let mode = link.borrow().mode;
        if let Mode::Latency(d) = mode {
            tokio::time::sleep(d).await;
        }
        // A fault may have begun while the chunk was read: hold it.
        let Ok(l) = link.wait_for(|l| l.resets != resets || l.flows(way)).await.map(|l| *l) else { return };
        if l.resets != resets {
            return reset_both(&from, &to);
        }
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() {
                return reset_both(&from, &to);
            },
            _ = reset_of(&mut link, resets) => return reset_both(&from, &to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on a free port, for the proxy to forward to.
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(p: &Proxy) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s
    }

    fn roundtrip(s: &mut std::net::TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn forwards_holds_and_resets() {
        let p = Proxy::start(echo()).unwrap();
        let mut s = connect(&p);
        assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");

        // Blackhole: nothing comes back until it ends, then it does.
        p.set(Mode::Blackhole);
        assert!(roundtrip(&mut s, b"held").is_err(), "a blackhole forwarded");
        p.set(Mode::Pass);
        let mut got = vec![0u8; 4];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, b"held");

        // Half-open: the request goes through, the reply is held; ending
        // it resets the connection.
        p.set(Mode::HalfOpen);
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(roundtrip(&mut s, b"lost").is_err(), "half-open let a reply through");
        p.set(Mode::Pass);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        assert!(s.read_to_end(&mut rest).is_err() || rest.is_empty(), "the held connection was not closed");

        // Reset: open connections and new ones are refused with RST.
        let mut s = connect(&p);
        assert_eq!(roundtrip(&mut s, b"again").unwrap(), b"again");
        p.set(Mode::Reset);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut one = [0u8; 1];
        assert!(matches!(s.read(&mut one), Ok(0) | Err(_)), "a reset connection still reads");
        let mut fresh = connect(&p);
        fresh.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(roundtrip(&mut fresh, b"x").is_err(), "a new connection went through a reset");

        // Latency: forwarded, late.
        p.set(Mode::Latency(Duration::from_millis(200)));
        let mut s = connect(&p);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(roundtrip(&mut s, b"slow").unwrap(), b"slow");
        assert!(t.elapsed() >= Duration::from_millis(400), "both ways wait: {:?}", t.elapsed());
    }
}
