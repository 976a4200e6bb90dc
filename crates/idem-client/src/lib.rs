//! # idem-client
//!
//! An async Rust client of idem over RESP (tokio, built on the `redis`
//! crate): every primitive one typed call away, and the patterns built on
//! them.
//!
//! - [`Client`]: a bounded pool of connections ([`Config`]) and one method
//!   per command of docs/commands.md. Replies are enums ([`Begin`],
//!   [`Claim`], [`LockReply`], [`CounterAdd`], ...); a refused request is an
//!   [`Error`] with one variant per error code ([`Error::Mismatch`],
//!   [`Error::Stale`], [`Error::LimitExceeded`], ...). Every reply is checked
//!   against the shape the contract gives its command: anything else is
//!   [`Error::Protocol`], never a guessed value.
//! - [`Client::idempotent`]: run a closure once per key, replay its
//!   serialised result to duplicates, and tell the caller which it got
//!   ([`Outcome::Fresh`] or [`Outcome::Replayed`]).
//! - [`Lock`]: a lease with a watchdog (renewal every third of the lease),
//!   its fence, a [`Lock::lost`] future, and release on drop.
//! - [`RemoteBackend`]: a running idem server as an [`idem_core::Backend`],
//!   for front ends that serve the contract from another server.
//!
//! Why a pool and not one multiplexed connection: a server runs one
//! connection's commands in order, so a `WAIT` that parks would hold up every
//! call behind it. Each call takes a connection of its own for its duration;
//! at most `pool_size` exist, and a call that finds them all busy waits for
//! one within its deadline. A broken connection is dropped and the next call
//! reconnects; no call is ever resent on its own, since a write whose
//! connection broke may have been applied ([`Error::Transport`]).
//!
//! ## Every primitive
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), idem_client::Error> {
//! # let server = idem_client::testing::TestServer::start().await;
//! # let url = server.url();
//! use idem_client::*;
//!
//! let idem = Client::connect(Config::new(url)).await?; // e.g. "redis://127.0.0.1:7379"
//!
//! // Idempotency keys: run once, replay the result.
//! let opts = BeginOptions::new().fingerprint("amount=500").lease_ms(30_000);
//! if let Begin::Started { fence, .. } = idem.begin("pay:order-42", &opts).await? {
//!     idem.commit("pay:order-42", fence, "receipt-7").await?;
//! }
//! assert_eq!(idem.begin("pay:order-42", &opts).await?, Begin::Done("receipt-7".into()));
//! let other_body = BeginOptions::new().fingerprint("amount=900");
//! assert!(matches!(idem.begin("pay:order-42", &other_body).await, Err(Error::Mismatch(_))));
//!
//! // Unique claims.
//! assert_eq!(idem.claim("email:ada@example.com", "user-1", None).await?, Claim::Claimed);
//! assert_eq!(idem.owner("email:ada@example.com").await?, Some("user-1".into()));
//!
//! // Leases with fencing (see `Lock` for the guard with a watchdog).
//! let LockReply::Acquired { fence } = idem.lock("report", "worker-1", 10_000, 0).await? else { panic!() };
//! assert_eq!(idem.renew("report", "worker-1", 10_000).await?, Renew::Renewed { fence });
//! assert!(idem.unlock("report", "worker-1").await?);
//!
//! // One-time tokens.
//! let token = idem.token_new("reset:user-1", 600_000).await?;
//! assert!(idem.token_use("reset:user-1", &token).await?);
//! assert!(!idem.token_use("reset:user-1", &token).await?);
//!
//! // Bounded counters, applied once per op id.
//! idem.counter_add("stock:sku-9", 3, &CounterOptions::new()).await?;
//! let take = CounterOptions::new().min(0).op("order-42");
//! assert_eq!(idem.counter_add("stock:sku-9", -1, &take).await?, CounterAdd::Applied(2));
//! assert_eq!(idem.counter_add("stock:sku-9", -1, &take).await?, CounterAdd::Replayed(2));
//!
//! // Versioned values.
//! assert_eq!(idem.value_set("cfg", "v1", Some(0)).await?, ValueSet::Stored { version: 1 });
//! assert_eq!(idem.value_set("cfg", "v2", Some(0)).await?, ValueSet::Conflict { version: 1 });
//!
//! // State machines.
//! assert_eq!(idem.fsm_move("order-42", "paid", &["none", "new"]).await?, FsmMove::Moved("paid".into()));
//! assert_eq!(idem.fsm_move("order-42", "paid", &["new"]).await?, FsmMove::Already("paid".into()));
//!
//! // Slot reservations.
//! assert_eq!(idem.slots_reserve("room:17:2026-12-01", 18, 20, "meeting-1", None).await?, Reserve::Reserved);
//! assert!(matches!(idem.slots_reserve("room:17:2026-12-01", 20, 21, "meeting-2", None).await?, Reserve::Conflict(_)));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod idempotent;
mod lock;
mod pool;
mod remote;
mod replies;
mod wire;

#[cfg(feature = "test-server")]
pub mod testing;

pub use client::{BeginOptions, Client, CounterOptions};
pub use config::{
    Config, COMMAND_TIMEOUT_MS_DEFAULT, COMMAND_TIMEOUT_MS_MAX, CONNECT_TIMEOUT_MS_DEFAULT, CONNECT_TIMEOUT_MS_MAX,
    POOL_SIZE_DEFAULT, POOL_SIZE_MAX,
};
pub use error::Error;
pub use idempotent::{Attempt, IdempotentError, IdempotentOptions, OnRunning, Outcome, IDEMPOTENT_WAIT_MS_DEFAULT};
pub use lock::{Lock, LockOptions, LOCK_LEASE_MS_MIN};
pub use remote::RemoteBackend;
pub use replies::{
    ok_reply, renew_reply, Begin, Claim, ClaimAll, CounterAdd, FsmMove, Held, IdemState, LockInfo, LockReply, Renew,
    Reserve, SlotHeld, ValueSet, Versioned,
};
