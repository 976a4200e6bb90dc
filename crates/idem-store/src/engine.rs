//! The sharded engine: the keyspace split over [`Machine`]s, each behind its
//! own lock, driven by connection tasks directly (no hop to another thread on
//! the hot path), with the write-ahead log as the only shared writer.
//!
//! The path of one pipeline (`execute_batch`):
//! 1. for each command, lock its shard, apply it to the machine, append the
//!    resulting changes to the log *while still holding the lock* (so a key's
//!    log order is its apply order), unlock;
//! 2. once the whole pipeline is applied, wait once for the log to make the
//!    highest LSN it produced or observed durable (group commit: one
//!    fdatasync covers every connection's records written meanwhile);
//! 3. release the replies.
//!
//! A read waits too, for the last appended record: it may have observed state
//! whose record is not yet durable, and must not reveal it before it is.
//!
//! A command that parks (WAIT) registers a one-shot channel in its shard
//! under the same lock as the apply, so no wake-up can be lost; commands after
//! it in the same pipeline run only after it has its answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use idem_core::machine::{self, Applied, Effects, Env, Machine, WaiterId};
use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command, ErrorCode, Limits};
use parking_lot::Mutex;
use rand::RngCore;
use tokio::sync::oneshot;

use crate::wal::{Log, LogOptions, Lsn};
use crate::{FsyncMode, StoreConfig, StoreError};

/// How often the ticker looks for expired leases, passed WAIT deadlines and
/// records to reclaim. It bounds the latency of a lease-expiry handover to a
/// parked waiter; handovers on COMMIT, ABORT and UNLOCK are immediate.
const TICK_INTERVAL: Duration = Duration::from_millis(5);

/// Fences are reserved in blocks: before the first fence of a block is handed
/// out, a high-water mark for the whole block is logged, so after a crash the
/// sequence resumes above anything that could have been granted.
const FENCE_BLOCK: u64 = 1 << 20;

/// How often the ticker recounts the memory estimate of the shards that
/// changed since their last count: it corrects the running figure for
/// records that expired or were handed over, which no command addressed.
const MEMORY_RECOUNT_INTERVAL: Duration = Duration::from_secs(1);

/// Most shards a store may be configured with.
pub const SHARDS_MAX: usize = 1024;

/// The engine's clock: monotonic milliseconds that resume, after a restart,
/// from the highest time in the log. Downtime therefore does not count against
/// leases and TTLs (the conservative rule: a lease never ends early).
#[derive(Debug)]
struct Clock {
    base_ms: u64,
    start: Instant,
    /// Set only by [`Store::open_with_test_clock`]: the time is the test's.
    test: Option<idem_core::TestClock>,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        match &self.test {
            Some(t) => t.now_ms(),
            None => self.base_ms + self.start.elapsed().as_millis() as u64,
        }
    }
}

/// The server-wide fence sequence.
#[derive(Debug)]
struct Fences {
    /// The next fence to hand out.
    next: AtomicU64,
    /// Every fence below this is covered by a logged high-water mark. Read
    /// without a lock on every grant; written only under `reserving`.
    reserved: AtomicU64,
    /// Serialises the logging of a new high-water mark (once per block).
    reserving: Mutex<()>,
}

impl Fences {
    fn next(&self, log: Option<&Log>, now_ms: u64) -> u64 {
        let fence = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(log) = log else { return fence };
        // Fast path: the block is already reserved. The Acquire pairs with the
        // Release below, so the high-water record was appended (and so is
        // ordered in the log) before the record that will carry this fence.
        if fence < self.reserved.load(Ordering::Acquire) {
            return fence;
        }
        let _reserving = self.reserving.lock();
        let reserved = self.reserved.load(Ordering::Acquire);
        if fence >= reserved {
            let high = fence + FENCE_BLOCK;
            // A failed append leaves the log failed; the change record that
            // follows fails too and the caller is answered READONLY, so the
            // fence is never acknowledged.
            if log.append_fence_high(now_ms, high).is_ok() {
                self.reserved.store(high, Ordering::Release);
            }
        }
        fence
    }

    /// Every fence handed out so far is below this.
    fn high(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

/// A parked caller's answer: the reply, and the LSN it depends on.
type Wake = (CmdResult, Lsn);

struct ShardState {
    machine: Machine,
    waiters: std::collections::HashMap<WaiterId, oneshot::Sender<Wake>>,
    effects: Effects,
    /// This shard's share of `Memory::used_bytes`.
    memory_bytes: u64,
    /// Whether the shard may have changed since its memory was last recounted.
    memory_dirty: bool,
}

struct Shard {
    state: Mutex<ShardState>,
}

struct Inner {
    shards: Box<[Shard]>,
    log: Option<Log>,
    clock: Clock,
    fences: Fences,
    limits: Limits,
    next_waiter: AtomicU64,
    stop: AtomicBool,
    data_dir: Option<PathBuf>,
    fsync: FsyncMode,
    ticker: Mutex<Option<JoinHandle<()>>>,
    snapshotting: AtomicBool,
    /// How long `Store::open` took, recovery included.
    recovery_ms: AtomicU64,
    snapshot_stats: Mutex<SnapshotStats>,
    memory: Memory,
}

/// The memory estimate of every record ([`Machine::memory_bytes`]) against
/// `maxmemory_bytes`. The sum of the shards' shares, each changed only
/// under its shard's lock: by the commands' own changes when there is a
/// bound, and by the ticker's recount.
struct Memory {
    used_bytes: AtomicU64,
    /// 0: no bound.
    max_bytes: u64,
}

impl Memory {
    /// Moves `shard`'s share to `bytes`.
    fn set_share(&self, shard: &mut ShardState, bytes: u64) {
        let old = std::mem::replace(&mut shard.memory_bytes, bytes);
        if bytes >= old {
            self.used_bytes.fetch_add(bytes - old, Ordering::Relaxed);
        } else {
            let before = self.used_bytes.fetch_sub(old - bytes, Ordering::Relaxed);
            assert!(before >= old - bytes, "the total holds every shard's share");
        }
    }

    /// `OOM` when the store is at its bound and `creates` (the command would create a record).
    fn refuse(&self, creates: impl FnOnce() -> bool) -> Option<CmdError> {
        let used = self.used_bytes.load(Ordering::Relaxed);
        if self.max_bytes == 0 || used < self.max_bytes || !creates() {
            return None;
        }
        Some(CmdError::new(
            ErrorCode::Oom,
            format!(
                "command not allowed when the records use {used} bytes of maxmemory_bytes {}; existing records still work",
                self.max_bytes
            ),
        ))
    }
}

/// The snapshots written since open, for INFO and metrics.
#[derive(Clone, Copy, Default)]
struct SnapshotStats {
    count: u64,
    ms_last: u64,
    bytes_last: u64,
    records_last: u64,
}

/// The embedded store: implements [`Backend`]. Open it with [`Store::open`].
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.inner.shards.len())
            .field("data_dir", &self.inner.data_dir)
            .finish()
    }
}

struct EngineEnv<'a> {
    fences: &'a Fences,
    log: Option<&'a Log>,
    now_ms: u64,
}

impl Env for EngineEnv<'_> {
    fn next_fence(&mut self) -> u64 {
        self.fences.next(self.log, self.now_ms)
    }
    fn random_token(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        b
    }
}

/// FNV-1a: keys are short, and the shard choice needs speed, not DoS
/// resistance (a client can only crowd its own keys into one shard).
fn shard_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

enum ApplyOutcome {
    /// Finished: the result and the LSN that must be durable before it is released.
    Done(CmdResult, Lsn),
    /// Parked on a WAIT.
    Parked(WaiterId, usize, oneshot::Receiver<Wake>),
}

impl Store {
    /// Opens the store described by `config`, recovering its data directory
    /// (when it has one). Starts the ticker thread.
    pub fn open(config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        Store::open_clocked(config, None)
    }

    /// Opens an in-memory store whose engine time is `clock`'s (a test
    /// moves it by hand). Test-only: the `test-clock` feature, which no
    /// server binary enables. A store with a data directory is refused: its
    /// log would record the test's times.
    #[cfg(feature = "test-clock")]
    pub fn open_with_test_clock(config: StoreConfig, clock: idem_core::TestClock) -> Result<Arc<Store>, StoreError> {
        if let Some(dir) = &config.data_dir {
            return Err(StoreError::Io {
                path: dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a test clock is for in-memory stores only",
                ),
            });
        }
        Store::open_clocked(config, Some(clock))
    }

    fn open_clocked(config: StoreConfig, test_clock: Option<idem_core::TestClock>) -> Result<Arc<Store>, StoreError> {
        let opened = Instant::now();
        let shard_count = config.shards.clamp(1, SHARDS_MAX);
        let mut machines: Vec<Machine> = (0..shard_count).map(|_| Machine::new(config.limits.clone())).collect();
        let (log, clock_ms, fence_high) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
                let opts = LogOptions { fsync: config.fsync, snapshot_after_bytes: config.snapshot_after_bytes };
                let storage =
                    crate::wal::Storage { prealloc_after_bytes: config.prealloc_after_bytes, ..Default::default() };
                let (log, recovered) = Log::open_on(dir, &opts, &storage, &mut |_now_ms, change| {
                    let i = (shard_hash(change.route_key()) % shard_count as u64) as usize;
                    machines[i].replay(&change);
                })?;
                (Some(log), recovered.clock_ms, recovered.fence_high)
            }
            None => (None, 0, 0),
        };
        let shards = machines
            .into_iter()
            .map(|machine| Shard {
                state: Mutex::new(ShardState {
                    machine,
                    waiters: std::collections::HashMap::new(),
                    effects: Effects::default(),
                    memory_bytes: 0,
                    memory_dirty: true,
                }),
            })
            .collect();
        let first_fence = fence_high + 1;
        // Seeded bug `fence-reissue` (test builds only, docs/reliability.md):
        // recovery forgets the high-water mark and fences start again at 1.
        #[cfg(feature = "seeded-bugs")]
        let first_fence = if idem_core::seeded::active(idem_core::seeded::Bug::FenceReissue) { 1 } else { first_fence };
        let inner = Arc::new(Inner {
            shards,
            log,
            clock: Clock { base_ms: clock_ms, start: Instant::now(), test: test_clock },
            // `reserved == next` makes the first grant log a new high-water mark.
            fences: Fences {
                next: AtomicU64::new(first_fence),
                reserved: AtomicU64::new(first_fence),
                reserving: Mutex::new(()),
            },
            limits: config.limits.clone(),
            next_waiter: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            data_dir: config.data_dir.clone(),
            fsync: config.fsync,
            ticker: Mutex::new(None),
            snapshotting: AtomicBool::new(false),
            recovery_ms: AtomicU64::new(0),
            snapshot_stats: Mutex::new(SnapshotStats::default()),
            memory: Memory { used_bytes: AtomicU64::new(0), max_bytes: config.maxmemory_bytes },
        });
        // Count what recovery loaded before serving, so the bound holds from the start.
        inner.recount_memory();
        let ticker_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("idem-ticker".into())
            .spawn(move || ticker_inner.run_ticker())
            .map_err(|source| StoreError::Io { path: PathBuf::from("<ticker thread>"), source })?;
        *inner.ticker.lock() = Some(handle);
        inner.recovery_ms.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(Arc::new(Store { inner }))
    }

    /// The engine's current time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The limits the store enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Writes a snapshot now (normally triggered by log growth) and compacts the log.
    pub fn snapshot(&self) -> Result<(), StoreError> {
        self.inner.snapshot()
    }
}

impl Inner {
    fn shard_of(&self, key: &[u8]) -> usize {
        (shard_hash(key) % self.shards.len() as u64) as usize
    }

    fn read_only_error(&self) -> Option<CmdError> {
        let log = self.log.as_ref()?;
        log.failure()
            .map(|why| CmdError::read_only(format!("storage failed, commands are refused until restart: {why}")))
    }

    /// The LSN a reply that observed state (a read, or a write that changed
    /// nothing) must wait for.
    fn observed_lsn(&self) -> Lsn {
        match &self.log {
            Some(log) if log.failure().is_none() => log.last_appended(),
            _ => Lsn(0),
        }
    }

    /// Logs the changes in `effects` (if any) and hands woken waiters their
    /// answers. Must be called with the shard's lock held.
    fn settle(&self, shard_state: &mut ShardState, now_ms: u64) -> Result<Lsn, CmdError> {
        let lsn = if shard_state.effects.changes.is_empty() {
            Ok(self.observed_lsn())
        } else {
            match &self.log {
                Some(log) => {
                    log.append(now_ms, &shard_state.effects.changes).map_err(|e| CmdError::read_only(e.to_string()))
                }
                None => Ok(Lsn(0)),
            }
        };
        let ShardState { waiters, effects, .. } = shard_state;
        for (id, result) in effects.woken.drain(..) {
            if let Some(tx) = waiters.remove(&id) {
                let answer = match &lsn {
                    Ok(l) => (result, *l),
                    Err(e) => (Err(e.clone()), Lsn(0)),
                };
                // The receiver is gone if its caller hung up; nothing to do then.
                let _ = tx.send(answer);
            }
        }
        effects.changes.clear();
        lsn
    }

    fn apply(&self, cmd: &Command) -> ApplyOutcome {
        // After a log failure every command is refused, reads too: the state
        // in memory may hold changes whose records were never made durable
        // (their callers were answered READONLY), and a read must not reveal
        // what a restart will not have.
        if let Some(e) = self.read_only_error() {
            return ApplyOutcome::Done(Err(e), Lsn(0));
        }
        let key = match cmd.route_key() {
            Some(k) => k,
            None => return self.apply_multi(cmd),
        };
        let idx = self.shard_of(key);
        let mut guard = self.shards[idx].state.lock();
        let shard_state = &mut *guard;
        let now_ms = self.clock.now_ms();
        if let Some(e) = self.memory.refuse(|| shard_state.machine.creates_record(cmd)) {
            return ApplyOutcome::Done(Err(e), Lsn(0));
        }
        let waiter = (cmd.wait_ms() > 0).then(|| WaiterId(self.next_waiter.fetch_add(1, Ordering::Relaxed)));
        let mut env = EngineEnv { fences: &self.fences, log: self.log.as_ref(), now_ms };
        // With a bound, the command's own change of the estimate is counted
        // at once; other changes (expiry, handovers) at the next recount.
        let bounded = self.memory.max_bytes > 0 && cmd.is_write();
        let before = if bounded { shard_state.machine.command_bytes(cmd) } else { 0 };
        let applied = shard_state.machine.apply(now_ms, cmd, waiter, &mut env, &mut shard_state.effects);
        if cmd.is_write() && !shard_state.effects.changes.is_empty() {
            shard_state.memory_dirty = true;
            if bounded {
                let mut after = shard_state.machine.command_bytes(cmd);
                if let Command::TokenNew { scope, .. } = cmd {
                    after += machine::token_record_bytes(scope);
                }
                let share = (shard_state.memory_bytes + after).saturating_sub(before);
                self.memory.set_share(shard_state, share);
            }
        }
        let lsn = self.settle(shard_state, now_ms);
        match applied {
            Applied::Done(result) => match lsn {
                Ok(lsn) => ApplyOutcome::Done(result, lsn),
                Err(e) => ApplyOutcome::Done(Err(e), Lsn(0)),
            },
            Applied::Parked => {
                let id = waiter.expect("the machine parks only callers that gave a waiter id");
                let (tx, rx) = oneshot::channel();
                shard_state.waiters.insert(id, tx);
                ApplyOutcome::Parked(id, idx, rx)
            }
        }
    }

    /// CLAIM.ALL: lock every shard its keys live on, in index order (so two
    /// CLAIM.ALLs never deadlock), and apply it across them at once.
    fn apply_multi(&self, cmd: &Command) -> ApplyOutcome {
        let Command::ClaimAll { owner, keys } = cmd else {
            // `Command::route_key` is `None` for CLAIM.ALL alone, so any
            // other command here is a bug in that table, not bad input.
            unreachable!("only CLAIM.ALL has no route key: {cmd:?}");
        };
        let mut idxs: Vec<usize> = keys.iter().map(|k| self.shard_of(k)).collect();
        idxs.sort_unstable();
        idxs.dedup();
        let mut guards: Vec<_> = idxs.iter().map(|&i| self.shards[i].state.lock()).collect();
        let creates = || {
            keys.iter().any(|k| {
                let i = idxs.binary_search(&self.shard_of(k)).expect("every key's shard is locked");
                guards[i].machine.creates_record(&Command::Claim { key: k.clone(), owner: owner.clone(), ttl_ms: None })
            })
        };
        if let Some(e) = self.memory.refuse(creates) {
            return ApplyOutcome::Done(Err(e), Lsn(0));
        }
        for g in guards.iter_mut() {
            // Counted at the next recount (CLAIM.ALL adds small records).
            g.memory_dirty = true;
        }
        let now_ms = self.clock.now_ms();
        let mut effects = Effects::default();
        let result = {
            let mut machines: Vec<&mut Machine> = guards.iter_mut().map(|g| &mut g.machine).collect();
            let shard_of = |k: &[u8]| idxs.binary_search(&self.shard_of(k)).expect("every key's shard is locked");
            machine::claim_all(now_ms, owner, keys, &mut machines, &shard_of, &mut effects)
        };
        // Log under every lock so the record is ordered after the previous
        // changes of each key and before the next.
        let first = &mut guards[0];
        std::mem::swap(&mut first.effects.changes, &mut effects.changes);
        let lsn = self.settle(first, now_ms);
        drop(guards);
        match lsn {
            Ok(lsn) => ApplyOutcome::Done(result, lsn),
            Err(e) => ApplyOutcome::Done(Err(e), Lsn(0)),
        }
    }

    fn cancel(&self, idx: usize, id: WaiterId) {
        let mut shard_state = self.shards[idx].state.lock();
        shard_state.machine.cancel(id);
        shard_state.waiters.remove(&id);
    }

    async fn execute_batch(&self, cmds: Vec<Command>) -> Vec<CmdResult> {
        let mut results = Vec::with_capacity(cmds.len());
        let mut wait_for = Lsn(0);
        for cmd in &cmds {
            match self.apply(cmd) {
                ApplyOutcome::Done(result, lsn) => {
                    wait_for = wait_for.max(lsn);
                    results.push(result);
                }
                ApplyOutcome::Parked(id, idx, rx) => {
                    // If this future is dropped while parked (the client hung
                    // up), the guard withdraws the waiter from its machine.
                    let guard = CancelGuard { inner: self, idx, id, armed: true };
                    let answer = rx.await;
                    let mut guard = guard;
                    guard.armed = false;
                    match answer {
                        Ok((result, lsn)) => {
                            wait_for = wait_for.max(lsn);
                            results.push(result);
                        }
                        Err(_) => results.push(Err(CmdError::busy("store shut down while waiting"))),
                    }
                }
            }
        }
        // Seeded bug `ack-before-sync` (test builds only, docs/reliability.md):
        // the reply does not wait for its records; nothing asks for their
        // write, so they stay in the log's buffer until a snapshot.
        #[cfg(feature = "seeded-bugs")]
        if idem_core::seeded::active(idem_core::seeded::Bug::AckBeforeSync) {
            return results;
        }
        if let Some(log) = &self.log {
            if wait_for > Lsn(0) {
                if let Err(e) = log.durable(wait_for).await {
                    // Nothing that depended on the lost records may be acknowledged.
                    let err = CmdError::read_only(e.to_string());
                    for r in results.iter_mut() {
                        if r.is_ok() {
                            *r = Err(err.clone());
                        }
                    }
                }
            }
        }
        results
    }

    /// Recounts the memory estimate of every shard that changed since its
    /// last count, one shard's lock at a time.
    fn recount_memory(&self) {
        for shard in self.shards.iter() {
            let mut guard = shard.state.lock();
            if guard.memory_dirty {
                let bytes = guard.machine.memory_bytes();
                guard.memory_dirty = false;
                self.memory.set_share(&mut guard, bytes);
            }
        }
    }

    fn run_ticker(self: Arc<Self>) {
        let mut recounted = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK_INTERVAL);
            if recounted.elapsed() >= MEMORY_RECOUNT_INTERVAL {
                self.recount_memory();
                recounted = Instant::now();
            }
            for shard in self.shards.iter() {
                let mut guard = shard.state.lock();
                let shard_state = &mut *guard;
                let now_ms = self.clock.now_ms();
                if shard_state.machine.next_deadline_ms().is_none_or(|d| d > now_ms) {
                    continue;
                }
                let mut env = EngineEnv { fences: &self.fences, log: self.log.as_ref(), now_ms };
                shard_state.machine.tick(now_ms, &mut env, &mut shard_state.effects);
                shard_state.memory_dirty = true;
                if let Err(e) = self.settle(shard_state, now_ms) {
                    tracing::error!(error = %e, "could not log expiry handovers");
                }
            }
            if let Some(log) = &self.log {
                if log.snapshot_due() && !self.snapshotting.swap(true, Ordering::AcqRel) {
                    let me = Arc::clone(&self);
                    let spawned = std::thread::Builder::new().name("idem-snapshot".into()).spawn(move || {
                        if let Err(e) = me.snapshot() {
                            tracing::error!(error = %e, "snapshot failed; the log keeps growing until one succeeds");
                        }
                        me.snapshotting.store(false, Ordering::Release);
                    });
                    if let Err(e) = spawned {
                        tracing::error!(error = %e, "could not start the snapshot thread");
                        self.snapshotting.store(false, Ordering::Release);
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> Result<(), StoreError> {
        let Some(log) = &self.log else { return Ok(()) };
        let started = Instant::now();
        let mut writer = log.begin_snapshot()?;
        let mut records = 0u64;
        for shard in self.shards.iter() {
            // One shard at a time: the others keep serving meanwhile.
            let shard_state = shard.state.lock();
            let now_ms = self.clock.now_ms();
            let mut err = None;
            shard_state.machine.dump(now_ms, &mut |change| {
                if err.is_none() {
                    records += 1;
                    err = writer.add(&change).err();
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
        }
        // Read after every shard is dumped: covers every fence they hold.
        let fence_high = self.fences.high();
        let bytes = writer.bytes();
        writer.finish(fence_high, self.clock.now_ms())?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        {
            let mut st = self.snapshot_stats.lock();
            st.count += 1;
            st.ms_last = elapsed_ms;
            st.bytes_last = bytes;
            st.records_last = records;
        }
        tracing::info!(records, elapsed_ms, "snapshot written");
        Ok(())
    }
}

struct CancelGuard<'a> {
    inner: &'a Inner,
    idx: usize,
    id: WaiterId,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.cancel(self.idx, self.id);
        }
    }
}

impl Backend for Store {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(self.inner.execute_batch(cmds))
    }

    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        let n: usize = self.inner.shards.iter().map(|s| s.state.lock().machine.len()).sum();
        Box::pin(async move { Ok(n as u64) })
    }

    fn info(&self) -> Vec<(String, String)> {
        let inner = &self.inner;
        let mut v = vec![
            ("store".to_string(), "embedded".to_string()),
            ("shards".to_string(), inner.shards.len().to_string()),
            (
                "data_dir".to_string(),
                inner.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "(memory only)".into()),
            ),
            (
                "fsync".to_string(),
                match (&inner.log, inner.fsync) {
                    (None, _) => "none (memory only)",
                    (Some(_), FsyncMode::Always) => "always",
                    (Some(_), FsyncMode::EverySecond) => "every-second",
                }
                .to_string(),
            ),
            ("engine_time_ms".to_string(), inner.clock.now_ms().to_string()),
            ("fence_next".to_string(), inner.fences.high().to_string()),
            ("memory_used_bytes".to_string(), inner.memory.used_bytes.load(Ordering::Relaxed).to_string()),
            ("maxmemory_bytes".to_string(), inner.memory.max_bytes.to_string()),
        ];
        let mut counts = idem_core::machine::MachineCounts::default();
        let mut parked = 0u64;
        for shard in inner.shards.iter() {
            let st = shard.state.lock();
            counts.add(&st.machine.counts());
            parked += st.waiters.len() as u64;
        }
        let snap = *inner.snapshot_stats.lock();
        v.extend([
            ("records_idem".to_string(), counts.idem.to_string()),
            ("records_claims".to_string(), counts.claims.to_string()),
            ("records_locks".to_string(), counts.locks.to_string()),
            ("records_tokens".to_string(), counts.tokens.to_string()),
            ("records_counters".to_string(), counts.counters.to_string()),
            ("records_values".to_string(), counts.values.to_string()),
            ("records_fsm".to_string(), counts.fsm.to_string()),
            ("records_slots".to_string(), counts.slots.to_string()),
            ("parked_waiters".to_string(), parked.to_string()),
            ("recovery_ms".to_string(), inner.recovery_ms.load(Ordering::Relaxed).to_string()),
            ("snapshots".to_string(), snap.count.to_string()),
            ("snapshot_ms_last".to_string(), snap.ms_last.to_string()),
            ("snapshot_bytes_last".to_string(), snap.bytes_last.to_string()),
            ("snapshot_records_last".to_string(), snap.records_last.to_string()),
        ]);
        let failure = inner.log.as_ref().and_then(|l| l.failure());
        v.push(("storage_ok".to_string(), if failure.is_some() { "0" } else { "1" }.to_string()));
        if let Some(why) = failure {
            v.push(("storage_failure".to_string(), why));
        }
        if let Some(log) = &inner.log {
            let stats = log.stats();
            let per_sync = |x: u64| {
                if stats.syncs == 0 {
                    "0".to_string()
                } else {
                    format!("{:.1}", x as f64 / stats.syncs as f64)
                }
            };
            v.extend([
                ("log_records".to_string(), stats.records.to_string()),
                ("log_bytes".to_string(), stats.bytes.to_string()),
                ("log_syncs".to_string(), stats.syncs.to_string()),
                ("log_records_per_sync".to_string(), per_sync(stats.records)),
                ("log_sync_us_avg".to_string(), per_sync(stats.sync_us_total)),
                ("log_sync_us_max".to_string(), stats.sync_us_max.to_string()),
                ("log_batch_records_max".to_string(), stats.batch_records_max.to_string()),
                ("log_segments_started".to_string(), stats.rotations.to_string()),
                ("log_segments_preallocated".to_string(), stats.prealloc_rotations.to_string()),
                ("log_sync_us_total".to_string(), stats.sync_us_total.to_string()),
            ]);
            // Cumulative, as a Prometheus histogram reads them.
            let mut below = 0;
            for (i, n) in stats.sync_us_buckets.iter().enumerate() {
                below += n;
                let bound = crate::wal::SYNC_US_BOUNDS.get(i).map_or("inf".to_string(), |b| b.to_string());
                v.push((format!("log_sync_us_bucket_{bound}"), below.to_string()));
            }
        }
        v
    }

    fn inspect_idem<'a>(
        &'a self,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<idem_core::machine::IdemView>, CmdError>> {
        let shard = &self.inner.shards[self.inner.shard_of(key)];
        let now_ms = self.inner.clock.now_ms();
        let view = shard.state.lock().machine.inspect_idem(now_ms, key);
        Box::pin(async move { Ok(Some(view)) })
    }

    fn loop_hooks(&self) -> Option<Arc<dyn idem_core::LoopHooks>> {
        let log = self.inner.log.as_ref()?;
        Some(Arc::new(LoopCommit(log.loop_sync())))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.stop.store(true, Ordering::Relaxed);
            if let Some(log) = &self.inner.log {
                if let Err(e) = log.flush().await {
                    tracing::error!(error = %e, "final log flush failed");
                }
            }
            // Parked callers get an answer instead of hanging.
            for shard in self.inner.shards.iter() {
                let mut shard_state = shard.state.lock();
                for (_, tx) in shard_state.waiters.drain() {
                    let _ = tx.send((Err(CmdError::busy("server shutting down")), Lsn(0)));
                }
            }
        })
    }
}

/// Group commit inside a server's event loops (see `wal::LoopSync`).
struct LoopCommit(crate::wal::LoopSync);

impl idem_core::LoopHooks for LoopCommit {
    fn on_loop_start(&self) {
        self.0.enter();
    }

    fn before_loop_park(&self) {
        self.0.before_park();
    }

    fn loop_task(&self) -> BoxFuture<'static, ()> {
        Box::pin(self.0.nudges())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.inner.ticker.lock().take() {
            let _ = h.join();
        }
    }
}
