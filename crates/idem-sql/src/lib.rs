//! # idem-sql
//!
//! What the two SQL backends (`idem-postgres`, `idem-mysql`) share: the
//! driver of a pipeline ([`execute_batch`] over a [`SqlRunner`]), parked
//! WAITs (first come, first served among the waiters of one idem process),
//! one-time token text, the pool and timeout settings of the `--store` URL
//! ([`PoolSettings`]) and small conversions. Neither engine crate imports
//! from the other: what both need lives here.
//!
//! How a WAIT works on a SQL engine: the engine cannot park a caller, so the
//! caller polls. Within one process, the waiters of one key queue on a fair
//! (FIFO) async mutex; only the one at the head polls the engine, so a key
//! with a thousand local waiters costs one poller. The head polls, then
//! sleeps for the shortest of: its backoff (2 ms doubling up to a cap), the
//! time until the holder's lease runs out, and what is left of its WAIT. A
//! wake-up (this process ended the attempt or lock, or PostgreSQL sent
//! NOTIFY) cuts the sleep short. No DB connection is held while sleeping:
//! each poll takes one from the pool and gives it back.

pub mod decode;
pub mod insert_first;
pub mod pool;
pub mod test_row;

pub use decode::{decode, SqlRow};
pub use insert_first::InsertFirst;
pub use pool::PoolSettings;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use idem_core::{BoxFuture, CmdError, CmdResult, Command, Reply};
use rand::RngCore;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First pause between two polls of a parked WAIT.
pub const POLL_BACKOFF_MIN: Duration = Duration::from_millis(2);
/// Longest pause between two polls when no wake-up signal crosses processes
/// (MySQL; PostgreSQL while its LISTEN connection is down): the worst-case
/// latency with which a waiter notices an attempt or lock ended by another
/// idem process.
pub const POLL_BACKOFF_MAX: Duration = Duration::from_millis(50);
/// Extra pause after a lease's end before polling, so that the engine's clock
/// has surely passed it.
const LEASE_END_SLACK: Duration = Duration::from_millis(1);

/// What a parked caller waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitKind {
    /// IDEM.BEGIN on a running record.
    Idem,
    /// LOCK on a held lock.
    Lock,
}

/// The outcome of one poll of a parked WAIT.
pub enum Poll {
    /// The command is answered (started, done, acquired, or an error reply).
    Final(CmdResult),
    /// Still blocked: the reply to give if the WAIT ends now (`running` or
    /// `busy`), and when the holder's lease runs out.
    Blocked {
        /// `["running", ...]` or `["busy", ...]`.
        reply: Reply,
        /// Milliseconds until the holder's lease runs out.
        left_ms: u64,
    },
}

/// One key's local queue of parked callers.
struct KeyQueue {
    /// Fair mutex: its holder is the one waiter that polls the engine.
    turn: tokio::sync::Mutex<()>,
    /// Cuts the head's sleep short; `notify_one` keeps a permit when the head
    /// is between polls, so a wake-up is never lost.
    wake: Notify,
    /// Parked callers, the head included (LOCK.INFO's `waiters`).
    waiters: AtomicUsize,
}

/// The parked callers of one backend, per key.
pub struct BackendWaiters {
    queues: Mutex<HashMap<(WaitKind, Bytes), Arc<KeyQueue>>>,
    per_key_max: usize,
}

impl BackendWaiters {
    /// No waiters yet; at most `per_key_max` parked callers per key (the next gets `BUSY`).
    pub fn new(per_key_max: usize) -> Self {
        BackendWaiters { queues: Mutex::new(HashMap::new()), per_key_max }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<(WaitKind, Bytes), Arc<KeyQueue>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so poisoning is ignored.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Callers of this process parked on `key`.
    pub fn waiters(&self, kind: WaitKind, key: &Bytes) -> usize {
        self.map().get(&(kind, key.clone())).map_or(0, |q| q.waiters.load(Ordering::Relaxed))
    }

    /// Callers of this process parked on any key (INFO's `parked_waiters`).
    pub fn total(&self) -> usize {
        self.map().values().map(|q| q.waiters.load(Ordering::Relaxed)).sum()
    }

    /// Tells the head waiter of `key`, if any, to poll now.
    pub fn wake(&self, kind: WaitKind, key: &Bytes) {
        if let Some(q) = self.map().get(&(kind, key.clone())) {
            q.wake.notify_one();
        }
    }

    /// Tells every head waiter to poll now (after wake-ups may have been lost).
    pub fn wake_all(&self) {
        for q in self.map().values() {
            q.wake.notify_one();
        }
    }

    fn register(&self, kind: WaitKind, key: &Bytes) -> Result<Registration<'_>, CmdError> {
        let mut map = self.map();
        let q = map
            .entry((kind, key.clone()))
            .or_insert_with(|| {
                Arc::new(KeyQueue {
                    turn: tokio::sync::Mutex::new(()),
                    wake: Notify::new(),
                    waiters: AtomicUsize::new(0),
                })
            })
            .clone();
        if q.waiters.load(Ordering::Relaxed) >= self.per_key_max {
            return Err(CmdError::busy(format!("too many callers waiting on this key (limit {})", self.per_key_max)));
        }
        q.waiters.fetch_add(1, Ordering::Relaxed);
        Ok(Registration { waits: self, kind, key: key.clone(), queue: q })
    }

    /// Runs a WAIT of `wait_ms` on `key`: polls with `attempt` (its argument:
    /// whether to mark the engine's row as watched) until it gives a final
    /// reply or the WAIT passes, then returns the last blocked reply.
    /// `poll_cap` gives the current longest pause between polls.
    pub async fn park<F, Fut>(
        &self,
        kind: WaitKind,
        key: &Bytes,
        wait_ms: u64,
        poll_cap: &(dyn Fn() -> Duration + Send + Sync),
        mut attempt: F,
    ) -> CmdResult
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<Poll, CmdError>>,
    {
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        let reg = self.register(kind, key)?;
        let queue = reg.queue.clone();
        let _turn = match tokio::time::timeout_at(deadline, queue.turn.lock()).await {
            Ok(turn) => turn,
            // The WAIT passed before this caller's turn came: answer with the
            // state as it is now.
            Err(_) => {
                drop(reg);
                return match attempt(false).await? {
                    Poll::Final(r) => r,
                    Poll::Blocked { reply, .. } => Ok(reply),
                };
            }
        };
        let mut backoff = POLL_BACKOFF_MIN;
        loop {
            // Armed before the poll, so a wake-up sent while it runs is kept.
            let notified = reg.queue.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (reply, left_ms) = match attempt(true).await? {
                Poll::Final(r) => return r,
                Poll::Blocked { reply, left_ms } => (reply, left_ms),
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(reply);
            }
            let lease_end = Duration::from_millis(left_ms) + LEASE_END_SLACK;
            let nap = backoff.min(lease_end).min(deadline - now);
            tokio::select! {
                _ = tokio::time::sleep(nap) => backoff = (backoff * 2).min(poll_cap().max(POLL_BACKOFF_MIN)),
                _ = &mut notified => backoff = POLL_BACKOFF_MIN,
            }
        }
    }
}

/// A parked caller's place in its key's count; leaving drops the queue when
/// it was the last.
struct Registration<'a> {
    waits: &'a BackendWaiters,
    kind: WaitKind,
    key: Bytes,
    queue: Arc<KeyQueue>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self.waits.map();
        if self.queue.waiters.fetch_sub(1, Ordering::Relaxed) == 1 {
            map.remove(&(self.kind, self.key.clone()));
        }
    }
}

/// What a SQL backend provides to [`execute_batch`].
pub trait SqlRunner: Send + Sync {
    /// The backend's parked callers.
    fn waits(&self) -> &BackendWaiters;
    /// The longest pause between two polls of a parked WAIT right now.
    fn poll_cap(&self) -> Duration;
    /// Runs commands that never park, in order, each atomic on its own.
    fn run_plain<'a>(&'a self, cmds: &'a [Command]) -> BoxFuture<'a, Vec<CmdResult>>;
    /// One attempt of IDEM.BEGIN or LOCK on a connection of its own, given
    /// back before returning; `mark_wait` tells the engine a caller watches.
    fn poll_once<'a>(&'a self, cmd: &'a Command, mark_wait: bool) -> BoxFuture<'a, Result<Poll, CmdError>>;
}

/// Executes a pipeline: runs of commands that cannot park go to
/// [`SqlRunner::run_plain`] together; a command with WAIT parks alone, with no
/// connection held while it sleeps. Local waiters are woken after commands
/// that may end what they wait on, and LOCK.INFO gets its waiter count.
pub async fn execute_batch(runner: &dyn SqlRunner, cmds: Vec<Command>) -> Vec<CmdResult> {
    let waits = runner.waits();
    let mut results = Vec::with_capacity(cmds.len());
    let mut rest = &cmds[..];
    while let Some(first) = rest.first() {
        let parks = parked_target(first);
        let run = if parks.is_some() { 1 } else { rest.iter().take_while(|c| parked_target(c).is_none()).count() };
        let mut out = match parks {
            Some((kind, key)) => {
                let attempt = |mark| runner.poll_once(first, mark);
                let cap = || runner.poll_cap();
                vec![waits.park(kind, key, first.wait_ms(), &cap, attempt).await]
            }
            None => runner.run_plain(&rest[..run]).await,
        };
        // A runner that lost replies (it never should) still answers every
        // command, and later replies stay with their commands.
        out.resize_with(run, || Err(CmdError::busy("the engine gave no reply")));
        for (cmd, mut r) in rest[..run].iter().zip(out) {
            after_command(waits, cmd, &mut r);
            results.push(r);
        }
        rest = &rest[run..];
    }
    results
}

/// What a command that may park waits on, if it parks (WAIT > 0).
fn parked_target(cmd: &Command) -> Option<(WaitKind, &Bytes)> {
    match cmd {
        Command::IdemBegin { key, wait_ms, .. } if *wait_ms > 0 => Some((WaitKind::Idem, key)),
        Command::Lock { name, wait_ms, .. } if *wait_ms > 0 => Some((WaitKind::Lock, name)),
        _ => None,
    }
}

/// Wakes local waiters after a command that may have ended what they wait
/// on, and fills in LOCK.INFO's `waiters`: the callers of this process
/// parked on the lock (the engine does not know about other processes').
fn after_command(waits: &BackendWaiters, cmd: &Command, result: &mut CmdResult) {
    let Ok(reply) = result else {
        return;
    };
    match cmd {
        // A renewal moves the lease end the parked callers sleep until.
        Command::IdemCommit { key, .. }
        | Command::IdemAbort { key, .. }
        | Command::IdemRenew { key, .. }
        | Command::IdemDel { key } => waits.wake(WaitKind::Idem, key),
        Command::Unlock { name, .. } => waits.wake(WaitKind::Lock, name),
        Command::LockInfo { name } => {
            if let Reply::Array(items) = reply {
                if let Some(n) = items.get_mut(4) {
                    *n = Reply::Int(i64::try_from(waits.waiters(WaitKind::Lock, name)).unwrap_or(i64::MAX));
                }
            }
        }
        _ => {}
    }
}

/// The JSON array of hex strings that the MySQL procedures take for a list
/// of binary keys (CLAIM.ALL's keys, FSM.MOVE's FROM states).
pub fn hex_json_array(items: &[Bytes]) -> String {
    let mut out = Vec::with_capacity(2 + items.iter().map(|i| i.len() * 2 + 3).sum::<usize>());
    out.push(b'[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'"');
        push_hex(&mut out, item);
        out.push(b'"');
    }
    out.push(b']');
    // Only brackets, commas, quotes and hex digits: always ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends `data` as lowercase hex.
fn push_hex(out: &mut Vec<u8>, data: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in data {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// A new one-time token: 128 random bits from the OS as 32 lowercase hex
/// characters (URL-safe; the same form the embedded store gives).
pub fn new_token() -> Bytes {
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let mut text = Vec::with_capacity(32);
    push_hex(&mut text, &raw);
    Bytes::from(text)
}

/// A duration or fence from the contract as the engines' signed 64-bit
/// integer. Parsed durations are far below `i64::MAX`; a larger fence cannot
/// exist in the engine, so saturating keeps it unequal to every real one.
/// An idempotency row as the inspection query reads it (`state`, `fence`,
/// `attempt`, milliseconds left, result length), checked: anything the
/// schema does not allow is an error, not a plausible view.
pub fn stored_idem(
    state: &str,
    fence: i64,
    attempt: i64,
    left_ms: i64,
    result_bytes: i64,
) -> Result<idem_core::machine::StoredIdem, CmdError> {
    let bad =
        |what: &str| CmdError::new(idem_core::ErrorCode::Err, format!("unexpected idem record in the engine: {what}"));
    let running = match state {
        "running" => true,
        "done" => false,
        other => return Err(bad(&format!("state {other:?}"))),
    };
    Ok(idem_core::machine::StoredIdem {
        running,
        fence: u64::try_from(fence).map_err(|_| bad("negative fence"))?,
        attempt: u32::try_from(attempt).map_err(|_| bad("attempt out of range"))?,
        left_ms,
        result_bytes: u64::try_from(result_bytes).map_err(|_| bad("negative result length"))?,
    })
}

/// The inspector's view of `key` from its row (None: no row), with the
/// callers parked on it in this process (the only ones a SQL backend knows).
pub fn idem_view(
    waits: &BackendWaiters,
    key: &[u8],
    row: Option<idem_core::machine::StoredIdem>,
) -> idem_core::machine::IdemView {
    let waiters = waits.waiters(WaitKind::Idem, &Bytes::copy_from_slice(key)) as u64;
    idem_core::machine::IdemView::of_stored(row, waiters, idem_core::machine::WaitersScope::ThisProcess)
}

pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An engine integer that is never negative by construction (fences,
/// attempts, milliseconds left) as a reply integer.
pub fn uint(v: i64) -> Reply {
    Reply::uint(u64::try_from(v).unwrap_or(0))
}

/// A digest of an engine's routine texts (FNV-1a, 64 bits; a change
/// detector, not a checksum against tampering). Routines are re-created only
/// when the schema version moves, so each engine's tests pin this digest to
/// its version: routines changed without a new version step fail there.
pub fn routines_digest<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    texts
        .into_iter()
        .flat_map(|t| t.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// CLAIM.ALL's keys without repeats, in first-seen order: the engines
/// refuse to touch one row twice in one statement, and a repeated key adds
/// nothing to an all-or-nothing claim.
pub fn distinct_keys(keys: &[Bytes]) -> Vec<Bytes> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.iter().filter(|k| seen.insert(&k[..])).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_chars_and_differ() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 32);
        assert!(a.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        assert_ne!(a, b);
    }

    #[test]
    fn hex_json_arrays() {
        assert_eq!(hex_json_array(&[]), "[]");
        assert_eq!(hex_json_array(&[Bytes::from_static(b"k1"), Bytes::from_static(&[0, 255])]), r#"["6b31","00ff"]"#);
    }

    #[test]
    fn distinct_keys_keeps_first_order() {
        let k = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(distinct_keys(&[k("b"), k("a"), k("b"), k("c"), k("a")]), vec![k("b"), k("a"), k("c")]);
    }
}
