//! [`Lock`]: a held lease with a watchdog, its fence, a `lost()` signal, and
//! release on drop.
//!
//! The watchdog renews the lease every third of it, so two renewals may fail
//! in a row before the lease runs out. The guard counts its lease from the
//! moment each successful RENEW was *sent* (the server's lease can only end
//! later than that), and once that deadline passes without a renewal, or a
//! RENEW replies `lost`, the guard is lost for good: [`Lock::held`] is false
//! from then on and [`Lock::lost`] completes. It never claims the lock again,
//! because by then someone else may hold it (the fence is what protects the
//! resource; see docs/commands.md, "Leases").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::Error;
use crate::replies::{LockReply, Renew};

/// Shortest lease a [`Lock`] accepts: renewing every third of it must leave
/// room for a round trip.
pub const LOCK_LEASE_MS_MIN: u64 = 30;

/// Shortest pause between two attempts of a failed renewal (a quarter of
/// the renewal period otherwise), so a dead server is not called in a loop.
/// `idempotent()` renews its record's lease with the same pause.
pub(crate) const RENEW_RETRY_MS_MIN: u64 = 5;

/// Options of [`Lock::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOptions {
    lease_ms: u64,
    wait_ms: u64,
    owner: Option<Bytes>,
}

impl LockOptions {
    /// A lease of `lease_ms` (at least [`LOCK_LEASE_MS_MIN`]), no wait, a
    /// fresh owner id.
    pub fn new(lease_ms: u64) -> Self {
        LockOptions { lease_ms, wait_ms: 0, owner: None }
    }
    /// Wait up to `ms` for the lock, first come first served.
    pub fn wait_ms(mut self, ms: u64) -> Self {
        self.wait_ms = ms;
        self
    }
    /// The owner id to lock as (by default a fresh one per guard, so two
    /// guards never share a grant).
    pub fn owner(mut self, owner: impl AsRef<[u8]>) -> Self {
        self.owner = Some(Bytes::copy_from_slice(owner.as_ref()));
        self
    }
}

/// What the watchdog shares with the guard.
struct Shared {
    /// Whether the lease was lost; becomes true once and stays true.
    lost: watch::Sender<bool>,
    /// Until when the lease is known to last (a tokio instant).
    valid_until: std::sync::Mutex<Instant>,
}

/// A held lock. Created by [`Lock::acquire`]; renewed in the background
/// every third of its lease; released by [`Lock::release`] or, failing that,
/// when dropped (an `UNLOCK` spawned on the current runtime).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = idem_client::testing::TestServer::start().await;
/// use idem_client::{Client, Config, Lock, LockOptions};
///
/// let client = Client::connect(Config::new(server.url())).await?;
/// let lock = Lock::acquire(&client, "report:daily", LockOptions::new(3_000).wait_ms(1_000)).await?;
/// // Pass the fence to every write the lock protects; the resource refuses
/// // a fence lower than the highest it has seen.
/// let fence = lock.fence();
/// tokio::select! {
///     _ = lock.lost() => { /* stop: someone else may hold the lock now */ }
///     _ = async { /* the work, writing with `fence` */ } => {}
/// }
/// assert!(lock.held());
/// lock.release().await?;
/// # let _ = fence;
/// # Ok(()) }
/// ```
pub struct Lock {
    client: Client,
    name: Bytes,
    owner: Bytes,
    fence: u64,
    lease_ms: u64,
    shared: Arc<Shared>,
    lost: watch::Receiver<bool>,
    watchdog: Option<JoinHandle<()>>,
}

impl Lock {
    /// `LOCK name owner LEASE lease_ms [WAIT wait_ms]`, then starts the
    /// watchdog. Someone else holding the lock (after the wait) is
    /// [`Error::LockBusy`].
    pub async fn acquire(client: &Client, name: impl AsRef<[u8]>, opts: LockOptions) -> Result<Lock, Error> {
        if opts.lease_ms < LOCK_LEASE_MS_MIN {
            return Err(Error::Config(format!(
                "lock lease_ms is {}, expected at least {LOCK_LEASE_MS_MIN}",
                opts.lease_ms
            )));
        }
        let name = Bytes::copy_from_slice(name.as_ref());
        let owner = opts.owner.clone().unwrap_or_else(fresh_owner);
        let sent = Instant::now();
        let fence = match client.lock(&name, &owner, opts.lease_ms, opts.wait_ms).await? {
            LockReply::Acquired { fence } => fence,
            LockReply::Busy { holder, left_ms } => return Err(Error::LockBusy { holder, left_ms }),
        };
        assert!(fence > 0, "fences start at 1");
        // The lease runs from the grant, which came after the request was
        // sent: sent + lease is a safe lower bound on its end. After a WAIT
        // the grant may have come much later than that bound says, so one
        // renewal right away gives a bound measured after the grant.
        let mut valid_until = sent + Duration::from_millis(opts.lease_ms);
        if opts.wait_ms > 0 {
            let renew_sent = Instant::now();
            match client.renew(&name, &owner, opts.lease_ms).await {
                Ok(Renew::Renewed { fence: f }) if f == fence => {
                    valid_until = renew_sent + Duration::from_millis(opts.lease_ms);
                }
                other => {
                    // Not a usable grant: give it back rather than leave it
                    // held by nobody until its lease runs out.
                    let _ = client.unlock(&name, &owner).await;
                    return Err(match other {
                        Err(e) => e,
                        Ok(_) => Error::Stale("the lock's lease ran out before its first renewal".into()),
                    });
                }
            }
        }
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared { lost: tx, valid_until: std::sync::Mutex::new(valid_until) });
        let watchdog =
            tokio::spawn(watchdog(client.clone(), name.clone(), owner.clone(), fence, opts.lease_ms, shared.clone()));
        Ok(Lock {
            client: client.clone(),
            name,
            owner,
            fence,
            lease_ms: opts.lease_ms,
            shared,
            lost: rx,
            watchdog: Some(watchdog),
        })
    }

    /// The fence of this grant: pass it to every write the lock protects.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The lock's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The owner id this guard locked as.
    pub fn owner(&self) -> &[u8] {
        &self.owner
    }

    /// The lease, in milliseconds.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Whether the guard still holds the lock: not lost, and the last
    /// renewal's lease has not run out. Once false, never true again.
    pub fn held(&self) -> bool {
        if *self.lost.borrow() {
            return false;
        }
        let valid_until = *self.shared.valid_until.lock().expect("lock guard mutex");
        if Instant::now() >= valid_until {
            // The watchdog may be late (a stalled runtime); the deadline
            // alone decides, and it is final.
            self.shared.lost.send_replace(true);
            return false;
        }
        true
    }

    /// Completes when the lock is lost (a RENEW replied `lost`, or the lease
    /// ran out before a renewal got through). Never completes while held;
    /// completes at once if already lost. Cancel-safe.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.lost.clone();
        async move {
            // An error means the sender is gone: only the guard's drop does that.
            let _ = rx.wait_for(|lost| *lost).await;
        }
    }

    /// Stops the watchdog and sends `UNLOCK`; true when the lock was still
    /// this guard's.
    pub async fn release(mut self) -> Result<bool, Error> {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        self.shared.lost.send_replace(true);
        self.client.unlock(&self.name, &self.owner).await
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let Some(w) = self.watchdog.take() else { return }; // released explicitly
        w.abort();
        self.shared.lost.send_replace(true);
        // Without a runtime the lease simply runs out.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, name, owner) = (self.client.clone(), self.name.clone(), self.owner.clone());
            rt.spawn(async move {
                if let Err(e) = client.unlock(&name, &owner).await {
                    tracing::warn!(error = %e, "UNLOCK on drop failed; the lease will run out instead");
                }
            });
        }
    }
}

/// A fresh owner id: the process id, a per-process counter and random bits,
/// so two guards (in one process or two) never lock as the same owner.
fn fresh_owner() -> Bytes {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    Bytes::from(format!("lock-{}-{seq}-{:016x}", std::process::id(), h.finish()))
}

/// Renews every third of the lease until the guard goes away or the lease is lost.
async fn watchdog(client: Client, name: Bytes, owner: Bytes, fence: u64, lease_ms: u64, shared: Arc<Shared>) {
    let period = Duration::from_millis(lease_ms / 3);
    let lease = Duration::from_millis(lease_ms);
    let mut next = Instant::now() + period;
    loop {
        let valid_until = *shared.valid_until.lock().expect("lock guard mutex");
        if valid_until > Instant::now() {
            tokio::time::sleep_until(next.min(valid_until)).await;
        }
        let valid_until = *shared.valid_until.lock().expect("lock guard mutex");
        let now = Instant::now();
        if now >= valid_until {
            break;
        }
        // A renewal that has not answered by the end of the lease is useless.
        let sent = now;
        match tokio::time::timeout(valid_until - now, client.renew(&name, &owner, lease_ms)).await {
            Ok(Ok(Renew::Renewed { fence: f })) if f == fence => {
                let mut until = shared.valid_until.lock().expect("lock guard mutex");
                assert!(sent + lease >= *until, "a renewal only moves the lease's end later");
                *until = sent + lease;
                drop(until);
                next = sent + period;
            }
            Ok(Ok(Renew::Renewed { fence: f })) => {
                // Same owner, another grant: not this guard's lease any more.
                tracing::warn!(fence, renewed = f, "RENEW answered another fence; the lock is lost");
                break;
            }
            Ok(Ok(Renew::Lost)) => break,
            Ok(Err(e)) => {
                // Retry soon, while the lease lasts: a brief outage must not
                // cost the lock, and a long one ends in the deadline above.
                tracing::debug!(error = %e, "RENEW failed; retrying while the lease lasts");
                next = Instant::now() + (period / 4).max(Duration::from_millis(RENEW_RETRY_MS_MIN));
            }
            Err(_) => {}
        }
    }
    shared.lost.send_replace(true);
}
