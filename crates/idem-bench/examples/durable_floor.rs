//! The floor under any durable server on this machine: a RESP server that does
//! nothing but count requests, append 64 bytes per request to a preallocated
//! file, `fdatasync` it and answer `+OK`. No parsing beyond request framing, no
//! table, no allocation per request. Whatever this reaches with a sync policy
//! is an upper bound for idem with that policy, measured with the same
//! redis-benchmark line in the same run (`bench/durable-floor.sh`).
//!
//! ```text
//! cargo run --release -p idem-bench --example durable_floor -- PORT DIR MODE
//! ```
//!
//! Modes:
//! - `none`: answer at once, never write (the no-persistence ceiling).
//! - `loop`: Redis `appendfsync always`: after each `epoll_wait` round that
//!   read requests, write and sync them on the loop, then answer.
//! - `gather:GAP_US:MAX_US`: as `loop`, but first keep polling (timeout 0)
//!   until no request arrived for GAP_US or MAX_US passed (a fixed gap:
//!   idem's policy before its gap was weighed, `gather:20:200`).
//! - `thread`: a sync thread writes and syncs whatever the loop handed it
//!   while the loop keeps serving; the loop answers a batch when the thread
//!   signals it through an eventfd (one sync in flight at a time).
//!
//! Bounds: 1,024 connections, 64 KiB read buffer per connection (a request
//! that does not fit closes the connection), a 1 GiB log (the server exits
//! when it is full). Linux only.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const MAX_CONNS: usize = 1024;
const BUF: usize = 64 * 1024;
const LOG_BYTES: u64 = 1 << 30;
const RECORD: usize = 64;
const LISTENER: u64 = u64::MAX;
const EVENTFD: u64 = u64::MAX - 1;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    None,
    Loop,
    Gather { gap: Duration, max: Duration },
    Thread,
}

struct Conn {
    fd: RawFd,
    buf: Vec<u8>,
    len: usize,
    /// Requests read, not yet handed to a sync.
    unsynced: u32,
    /// Requests in the sync in flight (thread mode).
    in_flight: u32,
}

/// Counts the complete RESP requests at the start of `b` and returns
/// (requests, bytes they take). Only `*N\r\n` followed by N `$len\r\n...\r\n`.
fn frame(b: &[u8]) -> Result<(u32, usize), ()> {
    let mut at = 0;
    let mut n = 0;
    loop {
        let start = at;
        let Some((argc, next)) = number(b, at, b'*')? else { return Ok((n, start)) };
        at = next;
        for _ in 0..argc {
            let Some((len, next)) = number(b, at, b'$')? else { return Ok((n, start)) };
            if b.len() < next + len as usize + 2 {
                return Ok((n, start));
            }
            at = next + len as usize + 2;
        }
        n += 1;
    }
}

fn number(b: &[u8], at: usize, tag: u8) -> Result<Option<(u64, usize)>, ()> {
    if at >= b.len() {
        return Ok(None);
    }
    if b[at] != tag {
        return Err(());
    }
    let mut v = 0u64;
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' => v = v * 10 + u64::from(b[i] - b'0'),
            b'\r' => return Ok((i + 1 < b.len()).then_some((v, i + 2))),
            _ => return Err(()),
        }
        if v > 1 << 20 {
            return Err(());
        }
        i += 1;
    }
    Ok(None)
}

fn check(r: libc::c_int, what: &str) -> libc::c_int {
    if r < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    r
}

struct FloorState {
    /// (bytes to write, offset) handed to the sync thread, taken by it.
    work: Mutex<Option<(Vec<u8>, u64)>>,
    cv: Condvar,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|s| s.parse().ok()).expect("PORT");
    let dir = args.next().expect("DIR");
    let mode = match args.next().as_deref().unwrap_or("loop") {
        "none" => Mode::None,
        "loop" => Mode::Loop,
        "thread" => Mode::Thread,
        g if g.starts_with("gather:") => {
            let us = |s: Option<&str>| s.and_then(|s| s.parse().ok()).map(Duration::from_micros);
            let mut v = g["gather:".len()..].split(':');
            match (us(v.next()), us(v.next()), v.next()) {
                (Some(gap), Some(max), None) => Mode::Gather { gap, max },
                _ => panic!("mode {g}: expected gather:GAP_US:MAX_US, two whole numbers"),
            }
        }
        other => panic!("unknown mode {other}"),
    };

    let path = std::path::Path::new(&dir).join("floor.log");
    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    if mode != Mode::None {
        // Preallocate and sync zeros, as idem's segments are, so a sync
        // changes no size or block map.
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(LOG_BYTES >> 20) {
            file.write_all(&zeros).unwrap();
        }
        file.sync_all().unwrap();
    }
    let file = Arc::new(file);

    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let ep = check(unsafe { libc::epoll_create1(0) }, "epoll_create1");
    let add = |fd: RawFd, token: u64| {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }, "epoll_ctl");
    };
    add(listener.as_raw_fd(), LISTENER);
    let efd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) }, "eventfd");
    add(efd, EVENTFD);

    let shared = Arc::new(FloorState { work: Mutex::new(None), cv: Condvar::new() });
    if mode == Mode::Thread {
        let shared = shared.clone();
        let file = file.clone();
        std::thread::Builder::new()
            .name("floor-sync".into())
            .spawn(move || loop {
                let (bytes, off) = {
                    let mut w = shared.work.lock().unwrap();
                    while w.is_none() {
                        w = shared.cv.wait(w).unwrap();
                    }
                    w.take().unwrap()
                };
                file.write_all_at(&bytes, off).unwrap();
                file.sync_data().expect("fdatasync failed: stopping");
                let one = 1u64;
                check(unsafe { libc::write(efd, (&one as *const u64).cast(), 8) } as i32, "eventfd write");
            })
            .unwrap();
    }

    println!("listening on 127.0.0.1:{port}, mode ok");
    let mut conns: Vec<Option<Conn>> = (0..MAX_CONNS).map(|_| None).collect();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut log: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut offset: u64 = 0;
    let mut syncing = false;
    let mut waiting: VecDeque<usize> = VecDeque::new();
    let record = [b'r'; RECORD];
    let replies = b"+OK\r\n".repeat(1024); // whole replies, sent from here by `send`
    let (mut syncs, mut synced) = (0u64, 0u64);

    let mut poll_once = |timeout: i32, conns: &mut Vec<Option<Conn>>, log: &mut Vec<u8>, syncing: &mut bool| -> u32 {
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return 0;
            }
            panic!("epoll_wait: {e}");
        }
        let mut read = 0;
        for ev in &events[..n as usize] {
            match ev.u64 {
                LISTENER => {
                    while let Ok((s, _)) = listener.accept() {
                        s.set_nodelay(true).unwrap();
                        let fd = std::os::fd::IntoRawFd::into_raw_fd(s);
                        let Some(slot) = conns.iter().position(Option::is_none) else {
                            unsafe { libc::close(fd) };
                            continue;
                        };
                        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
                        conns[slot] = Some(Conn { fd, buf: vec![0; BUF], len: 0, unsynced: 0, in_flight: 0 });
                        add(fd, slot as u64);
                    }
                }
                EVENTFD => {
                    let mut v = 0u64;
                    unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
                    *syncing = false;
                }
                i => {
                    let slot = i as usize;
                    let c = conns[slot].as_mut().unwrap();
                    let r = unsafe { libc::read(c.fd, c.buf[c.len..].as_mut_ptr().cast(), BUF - c.len) };
                    let framed = if r > 0 {
                        c.len += r as usize;
                        frame(&c.buf[..c.len]).ok().filter(|&(_, used)| used > 0 || c.len < BUF)
                    } else if r < 0
                        && matches!(
                            std::io::Error::last_os_error().kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        )
                    {
                        continue;
                    } else {
                        None
                    };
                    let Some((k, used)) = framed else {
                        unsafe { libc::close(c.fd) };
                        conns[slot] = None;
                        continue;
                    };
                    c.buf.copy_within(used..c.len, 0);
                    c.len -= used;
                    if mode == Mode::None {
                        send(c.fd, &replies, k);
                    } else {
                        c.unsynced += k;
                        for _ in 0..k {
                            log.extend_from_slice(&record);
                        }
                        read += k;
                    }
                }
            }
        }
        read
    };

    loop {
        let timeout = if mode == Mode::Thread && !log.is_empty() && !syncing { 0 } else { -1 };
        let got = poll_once(timeout, &mut conns, &mut log, &mut syncing);
        match mode {
            Mode::None => {}
            Mode::Loop | Mode::Gather { .. } => {
                if got == 0 {
                    continue;
                }
                if let Mode::Gather { gap, max } = mode {
                    let start = Instant::now();
                    let mut last = start;
                    loop {
                        let now = Instant::now();
                        if now - last >= gap || now - start >= max {
                            break;
                        }
                        if poll_once(0, &mut conns, &mut log, &mut syncing) > 0 {
                            last = Instant::now();
                        }
                    }
                }
                assert!(offset + log.len() as u64 <= LOG_BYTES, "log full");
                file.write_all_at(&log, offset).unwrap();
                file.sync_data().expect("fdatasync failed: stopping");
                offset += log.len() as u64;
                syncs += 1;
                synced += (log.len() / RECORD) as u64;
                log.clear();
                for c in conns.iter_mut().flatten() {
                    if c.unsynced > 0 {
                        send(c.fd, &replies, c.unsynced);
                        c.unsynced = 0;
                    }
                }
            }
            Mode::Thread => {
                if !syncing && !waiting.is_empty() {
                    // The sync in flight ended: answer its connections.
                    for slot in waiting.drain(..) {
                        if let Some(c) = conns[slot].as_mut() {
                            send(c.fd, &replies, c.in_flight);
                            c.in_flight = 0;
                        }
                    }
                }
                if !syncing && !log.is_empty() {
                    assert!(offset + log.len() as u64 <= LOG_BYTES, "log full");
                    for (slot, c) in conns.iter_mut().enumerate() {
                        if let Some(c) = c.as_mut().filter(|c| c.unsynced > 0) {
                            c.in_flight = c.unsynced;
                            c.unsynced = 0;
                            waiting.push_back(slot);
                        }
                    }
                    let bytes = std::mem::take(&mut log);
                    let len = bytes.len() as u64;
                    syncs += 1;
                    synced += len / RECORD as u64;
                    *shared.work.lock().unwrap() = Some((bytes, offset));
                    shared.cv.notify_one();
                    offset += len;
                    syncing = true;
                }
            }
        }
        if syncs > 0 && syncs % 2_000 == 0 {
            eprintln!("syncs {syncs}, records per sync {:.1}", synced as f64 / syncs as f64);
            syncs = 0;
            synced = 0;
        }
    }
}

/// Writes `k` replies (`+OK\r\n`, 5 bytes each). A short write resumes
/// mid-reply, and a full socket buffer is waited out (`poll`, at most 10 s,
/// then the replies are dropped: the client is not reading).
fn send(fd: RawFd, replies: &[u8], k: u32) {
    const REPLY: usize = 5;
    let total = k as usize * REPLY;
    let mut sent = 0;
    while sent < total {
        let from = sent % REPLY;
        let chunk = (total - sent).min(replies.len() - from);
        let r = unsafe { libc::send(fd, replies[from..].as_ptr().cast(), chunk, libc::MSG_NOSIGNAL) };
        if r > 0 {
            sent += r as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                if unsafe { libc::poll(&mut p, 1, 10_000) } <= 0 {
                    return;
                }
            }
            _ => return, // the client went away
        }
    }
}
