//! # idem-client
//!
//! An async client of idem over RESP.
//!
//! - [`RemoteBackend`]: a running idem server as an [`idem_core::Backend`].
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
    Begin, Claim, ClaimAll, CounterAdd, FsmMove, Held, IdemState, LockInfo, LockReply, Renew, Reserve, SlotHeld,
    ValueSet, Versioned,
};
