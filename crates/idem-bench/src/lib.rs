//! Shared helpers of the benchmark tools: command builders for the engine
//! microbenchmarks (`benches/engine.rs`), a poll-once executor for futures
//! that never wait, and process helpers for the memory tool
//! (`src/bin/memory.rs`): free ports, child processes stopped on drop, RSS.
//!
//! Nothing here is part of idem's API; benchmarks live in their own crate so
//! that their dependencies (criterion, the redis client) stay out of the
//! library's.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::pin::pin;
use std::process::{Child, Command as Process};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use idem_core::Command;

/// Key length of the memory figure and of the engine benchmarks: 16 bytes.
pub const KEY_BYTES: usize = 16;

/// Result length of the memory figure and of the COMMIT benchmark: 32 bytes.
pub const RESULT_BYTES: usize = 32;

/// The `i`-th benchmark key: `k` and 15 decimal digits, exactly [`KEY_BYTES`] long.
pub fn key(i: u64) -> Bytes {
    let k = format!("k{i:015}");
    debug_assert_eq!(k.len(), KEY_BYTES);
    Bytes::from(k)
}

/// A 32-byte result, as the memory figure stores.
pub fn result_value() -> Bytes {
    Bytes::from_static(b"ok:0123456789abcdef0123456789abc")
}

/// Splits a RESP-style command line into arguments (for `Command::parse`).
pub fn args(line: &str) -> Vec<Bytes> {
    line.split_ascii_whitespace().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
}

/// `IDEM.BEGIN key` with the default lease, as `Command::parse` builds it.
pub fn begin(key: Bytes) -> Command {
    Command::IdemBegin { key, fingerprint: None, lease_ms: 30_000, wait_ms: 0 }
}

/// `IDEM.COMMIT key fence result` with the default retention.
pub fn commit(key: Bytes, fence: u64) -> Command {
    Command::IdemCommit { key, fence, result: result_value(), keep_ms: 86_400_000 }
}

/// `CLAIM key owner1` without TTL.
pub fn claim(key: Bytes) -> Command {
    Command::Claim { key, owner: Bytes::from_static(b"owner1"), ttl_ms: None }
}

/// `LOCK key owner1 LEASE lease_ms`.
pub fn lock(key: Bytes, lease_ms: u64) -> Command {
    Command::Lock { name: key, owner: Bytes::from_static(b"owner1"), lease_ms, wait_ms: 0 }
}

/// `COUNTER.ADD key 1`.
pub fn counter_add(key: Bytes) -> Command {
    Command::CounterAdd { key, delta: 1, min: None, max: None, op: None, keep_ms: 86_400_000 }
}

/// Runs a future that is expected to complete without waiting (the
/// memory-only store's `execute_batch` without WAIT): polls it once.
///
/// # Panics
/// If the future is pending: then it needs a real executor.
pub fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(&noop_waker())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future waited; poll_once only runs futures that never wait"),
    }
}

/// A waker that does nothing (`Waker::noop` is newer than the workspace's rust-version).
fn noop_waker() -> Waker {
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: every function of the vtable ignores the data pointer, so a
    // null pointer satisfies the RawWaker contract.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process that is killed (and reaped) when dropped, so a tool that
/// fails half way leaves no server behind.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    name: String,
}

impl Guard {
    /// Spawns `cmd`; `name` is for messages.
    pub fn spawn(name: &str, cmd: &mut Process) -> io::Result<Guard> {
        let child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("starting {name}: {e}")))?;
        Ok(Guard { child, name: name.to_string() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server at `port` answers PING (at most `timeout`).
    pub fn wait_ready(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited early: {status}", self.name);
            }
            if let Ok(mut con) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                anyhow::bail!("{} did not answer PING on port {port} within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of process `pid`, in bytes (`VmRSS` in /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS line in /proc/<pid>/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_benchmark_length() {
        assert_eq!(key(0).len(), KEY_BYTES);
        assert_eq!(key(999_999_999).len(), KEY_BYTES);
        assert_eq!(result_value().len(), RESULT_BYTES);
    }

    #[test]
    fn parsed_commands_match_the_builders() {
        let limits = idem_core::Limits::default();
        let k = key(7);
        let line = format!("IDEM.BEGIN {} LEASE 30000", std::str::from_utf8(&k).unwrap());
        assert_eq!(Command::parse(&args(&line), &limits).unwrap(), begin(k.clone()));
        let line = format!("COUNTER.ADD {} 1", std::str::from_utf8(&k).unwrap());
        assert_eq!(Command::parse(&args(&line), &limits).unwrap(), counter_add(k));
    }

    #[test]
    fn own_process_has_a_resident_size() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
