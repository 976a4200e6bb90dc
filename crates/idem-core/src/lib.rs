//! # idem-core
//!
//! The semantics of idem's primitives (docs/commands.md) in one place:
//! - [`Command`] and its parser, [`Reply`], [`CmdError`] and [`Limits`];
//! - [`machine::Machine`], a pure deterministic state machine of one shard;
//! - [`Change`], the unit the durable store logs and replays;
//! - [`Backend`], the interface every store implements.
//!
//! This crate depends on no engine, network or runtime crate.
#![warn(missing_docs)]

pub mod backend;
pub mod change;
pub mod command;
pub mod error;
pub mod limits;
pub mod machine;
pub mod outcome;
pub mod reply;
#[cfg(feature = "seeded-bugs")]
pub mod seeded;
pub mod store_url;
pub mod test_clock;

pub use backend::{Backend, BoxFuture, CmdResult, LoopHooks};
pub use change::{Change, IdemRecord, IdemState};
pub use command::Command;
pub use error::{CmdError, ErrorCode};
pub use limits::Limits;
pub use reply::Reply;
pub use store_url::BackendError;
pub use test_clock::TestClock;
