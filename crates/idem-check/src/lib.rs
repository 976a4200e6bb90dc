//! # idem-check
//!
//! Checks a recorded history of calls to idem (JSONL, see [`history`]):
//!
//! - [`linearizability`]: every key's sub-history must be linearizable
//!   against the model of its primitive ([`model`]), searched with the
//!   Wing–Gong–Lowe algorithm under a time budget. An exhausted budget is
//!   [`Verdict::Unknown`], never a pass.
//! - [`side`]: linear-time checks that need no search and localise a bug:
//!   fences, lease overlap, counter bounds and op ids, replays, durability.
//!
//! The checker must be able to fail: its tests feed it known-bad histories
//! and compare it with a brute-force search on small random ones.
#![warn(missing_docs)]

pub mod history;
pub mod linearizability;
pub mod model;
pub mod side;
mod wgl;

pub use history::{Call, Event, EventKind, History, HistoryError, Op, Reply};
pub use linearizability::{check_linearizable, CheckOptions, KeyResult, LinearReport, Verdict};
pub use side::{check_side, Anomaly, SideOptions, SideReport};
