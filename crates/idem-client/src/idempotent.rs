//! `idempotent()`: run a piece of work once per key and replay its result.
//!
//! `IDEM.BEGIN` decides who runs: the first caller gets `started` and runs
//! the closure; its result is serialised (JSON, through serde) and
//! committed, and every later caller gets it back as [`Outcome::Replayed`].
//! An error from the closure aborts the record, so the next caller runs the
//! work afresh, except in a later attempt (`number > 1`): an earlier
//! attempt's lease ran out, maybe halfway through the work, and aborting
//! would hand the next caller attempt 1 with no warning to look for that
//! half-done work. A failed later attempt therefore leaves its record to
//! run out its lease, and the next caller gets attempt `number + 1`. A caller that arrives while the work is running waits for it
//! (`IDEM.BEGIN ... WAIT`) or gets [`Error::InFlight`] at once, as
//! [`OnRunning`] says.
//!
//! While the closure runs, its lease is renewed (`IDEM.RENEW`) every third
//! of it, so the lease need not cover the work, only a pause of this
//! process: a crashed caller's key frees within one lease. A renewal that
//! fails for a transport error is retried while the lease lasts; one that
//! is `STALE` (the lease ran out anyway, and another attempt may run) stops
//! the renewals, the closure runs to its end, and its commit is refused
//! with [`Error::Stale`] (the closure's effects then need the fence check
//! that `attempt > 1` warns about).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use idem_core::command::{IDEM_LEASE_MS_DEFAULT, KEEP_MS_DEFAULT};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::{BeginOptions, Client};
use crate::error::Error;
use crate::lock::RENEW_RETRY_MS_MIN;
use crate::replies::Begin;

/// The longest a duplicate waits for the running attempt by default: the
/// contract's longest WAIT is 5 minutes, but a caller behind an HTTP request
/// rarely has more than half a minute.
pub const IDEMPOTENT_WAIT_MS_DEFAULT: u64 = 30_000;

/// What a caller does when another attempt of the same key is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRunning {
    /// Wait up to `wait_ms` for it to end: replay its result, or run the
    /// work if it aborted or its lease ran out. Still running after the
    /// wait: [`Error::InFlight`].
    Wait {
        /// The longest wait, in milliseconds (at most 5 minutes).
        wait_ms: u64,
    },
    /// Fail at once with [`Error::InFlight`].
    Fail,
}

/// Options of [`Client::idempotent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotentOptions {
    fingerprint: Option<Bytes>,
    lease_ms: u64,
    keep_ms: u64,
    on_running: OnRunning,
}

impl Default for IdempotentOptions {
    fn default() -> Self {
        IdempotentOptions {
            fingerprint: None,
            lease_ms: IDEM_LEASE_MS_DEFAULT,
            keep_ms: KEEP_MS_DEFAULT,
            on_running: OnRunning::Wait { wait_ms: IDEMPOTENT_WAIT_MS_DEFAULT },
        }
    }
}

impl IdempotentOptions {
    /// A 30 s lease, results kept 24 h, duplicates wait up to 30 s, no fingerprint.
    pub fn new() -> Self {
        Self::default()
    }
    /// A fingerprint of the request: the same key with another fingerprint
    /// fails with [`Error::Mismatch`] and runs nothing.
    pub fn fingerprint(mut self, fp: impl AsRef<[u8]>) -> Self {
        self.fingerprint = Some(Bytes::copy_from_slice(fp.as_ref()));
        self
    }
    /// How long another caller waits to take the key over when this one
    /// stops renewing (it crashed, or lost the server). Renewed every third
    /// of it while the work runs.
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.lease_ms = ms;
        self
    }
    /// How long the result is replayed after the commit.
    pub fn keep_ms(mut self, ms: u64) -> Self {
        self.keep_ms = ms;
        self
    }
    /// What a duplicate does while the first attempt runs.
    pub fn on_running(mut self, on_running: OnRunning) -> Self {
        self.on_running = on_running;
        self
    }
}

/// Which attempt the closure is: its fence (to pass to a resource that
/// checks fences) and its number (above 1, an earlier attempt's lease ran
/// out, maybe halfway through the work).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The fence of this attempt.
    pub fence: u64,
    /// 1 for the first attempt.
    pub number: u64,
}

/// The result of [`Client::idempotent`], and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The closure ran in this call and its result was committed.
    Fresh(T),
    /// An earlier call ran it; this is its stored result.
    Replayed(T),
}

impl<T> Outcome<T> {
    /// The result, wherever it came from.
    pub fn into_inner(self) -> T {
        match self {
            Outcome::Fresh(t) | Outcome::Replayed(t) => t,
        }
    }
    /// Whether the result was replayed rather than produced by this call.
    pub fn is_replay(&self) -> bool {
        matches!(self, Outcome::Replayed(_))
    }
}

/// Why [`Client::idempotent`] failed.
#[derive(Debug, thiserror::Error)]
pub enum IdempotentError<E> {
    /// idem refused or could not be reached (including [`Error::InFlight`],
    /// [`Error::Mismatch`], and [`Error::Stale`] when the commit came after
    /// the lease ran out).
    #[error(transparent)]
    Idem(#[from] Error),
    /// The closure failed. A first attempt's record was aborted, so a retry
    /// runs the work again at once; a later attempt's record runs out its
    /// lease first (see [`Attempt`]).
    #[error("the work failed: {0}")]
    Failed(E),
}

impl Client {
    /// Runs `work` once for `key`: the first caller runs it and commits its
    /// result; later callers get the stored result back, marked
    /// [`Outcome::Replayed`]. A duplicate that arrives
    /// while the work runs waits or fails as [`OnRunning`] says. The lease is
    /// renewed every third of it while `work` runs; a commit after it was
    /// lost anyway is [`Error::Stale`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = idem_client::testing::TestServer::start().await;
    /// use idem_client::{Client, Config, IdempotentOptions, Outcome};
    ///
    /// let client = Client::connect(Config::new(server.url())).await?;
    /// let opts = IdempotentOptions::new().fingerprint("body-sha256-1f3a");
    /// let charge = |_attempt| async { Ok::<_, std::io::Error>(format!("charged 42 EUR")) };
    ///
    /// let first = client.idempotent("pay:order-42", &opts, charge).await?;
    /// assert_eq!(first, Outcome::Fresh("charged 42 EUR".to_string()));
    /// let retry = client.idempotent("pay:order-42", &opts, charge).await?;
    /// assert_eq!(retry, Outcome::Replayed("charged 42 EUR".to_string()));
    /// # Ok(()) }
    /// ```
    pub async fn idempotent<T, E, F, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        opts: &IdempotentOptions,
        work: F,
    ) -> Result<Outcome<T>, IdempotentError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = key.as_ref();
        let wait_ms = match opts.on_running {
            OnRunning::Wait { wait_ms } => wait_ms,
            OnRunning::Fail => 0,
        };
        let mut begin = BeginOptions::new().lease_ms(opts.lease_ms).wait_ms(wait_ms);
        if let Some(fp) = &opts.fingerprint {
            begin = begin.fingerprint(fp);
        }
        let (fence, number) = match self.begin(key, &begin).await? {
            Begin::Done(stored) => return Ok(Outcome::Replayed(serde_json::from_slice(&stored).map_err(Error::from)?)),
            Begin::Running { fence, left_ms } => return Err(Error::InFlight { fence, left_ms }.into()),
            Begin::Started { fence, attempt } => (fence, attempt),
        };
        match self.renewing(key, fence, opts.lease_ms, work(Attempt { fence, number })).await {
            Ok(value) => {
                let encoded = match serde_json::to_vec(&value) {
                    Ok(b) => b,
                    Err(e) => {
                        // Nothing stored: free the key so the work can be retried.
                        self.abort_quietly(key, fence).await;
                        return Err(Error::from(e).into());
                    }
                };
                self.commit_keep(key, fence, &encoded, opts.keep_ms).await?;
                Ok(Outcome::Fresh(value))
            }
            Err(e) => {
                if number == 1 {
                    self.abort_quietly(key, fence).await;
                }
                Err(IdempotentError::Failed(e))
            }
        }
    }

    /// Runs `work` while renewing the lease of `fence` every third of
    /// `lease_ms`, until the work ends or a renewal is `STALE` (the work then
    /// still runs to its end; its commit will say the record was lost).
    async fn renewing<R>(&self, key: &[u8], fence: u64, lease_ms: u64, work: impl Future<Output = R>) -> R {
        let period = Duration::from_millis((lease_ms / 3).max(1));
        let retry = (period / 4).max(Duration::from_millis(RENEW_RETRY_MS_MIN));
        let lease = Duration::from_millis(lease_ms);
        let renew = async {
            let start = tokio::time::Instant::now();
            // The lease began before BEGIN's reply came back, so it ends no
            // later than this: past it, a renewal can only be STALE.
            let mut valid_until = start + lease;
            let mut next = start + period;
            loop {
                tokio::time::sleep_until(next).await;
                let sent = tokio::time::Instant::now();
                if sent >= valid_until {
                    tracing::warn!(fence, "no IDEM.RENEW succeeded within the lease: the attempt lost its record");
                    return;
                }
                match self.idem_renew(key, fence, lease_ms).await {
                    Ok(_) => {
                        valid_until = sent + lease;
                        next = sent + period;
                    }
                    Err(Error::Stale(_)) => {
                        tracing::warn!(fence, "IDEM.RENEW is STALE: the attempt lost its record");
                        return;
                    }
                    Err(e) => {
                        // A brief outage must not cost the record: retry
                        // soon, while the lease lasts.
                        tracing::debug!(fence, error = %e, "IDEM.RENEW failed; retrying while the lease lasts");
                        next = tokio::time::Instant::now() + retry;
                    }
                }
            }
        };
        tokio::pin!(work, renew);
        tokio::select! {
            out = &mut work => out,
            () = &mut renew => work.await,
        }
    }

    /// Aborts after a failure whose error the caller gets instead: if the
    /// abort itself fails, the lease running out frees the key anyway.
    async fn abort_quietly(&self, key: &[u8], fence: u64) {
        if let Err(e) = self.abort(key, fence).await {
            tracing::warn!(fence, error = %e, "IDEM.ABORT after a failed attempt; the key frees when its lease runs out");
        }
    }
}
