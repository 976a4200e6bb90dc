//! The conformance cases, one file per section of docs/commands.md, plus the
//! concurrency races. Every case is `async fn(&dyn Backend, &Ctx)` and panics
//! on the first violation with the command and the reply it got.

mod claim;
mod counter;
mod errors;
mod fsm;
mod idem;
mod lock;
mod races;
mod slots;
mod token;
mod value;

pub use claim::*;
pub use counter::*;
pub use errors::*;
pub use fsm::*;
pub use idem::*;
pub use lock::*;
pub use races::*;
pub use slots::*;
pub use token::*;
pub use value::*;
