//! # idem-broker
//!
//! Message consumers that apply each message's effect once, over brokers that
//! deliver at least once (NATS JetStream, RabbitMQ). For each delivery:
//!
//! 1. the key is read from a header (`Nats-Msg-Id`, AMQP `message-id`) or a
//!    JSON body field ([`KeySource`]);
//! 2. the key is claimed with `IDEM.BEGIN` and a lease, renewed with
//!    `IDEM.RENEW` while the handler runs (on JetStream the message is also
//!    marked in progress);
//! 3. the handler runs; its result is committed, then the delivery is acked;
//! 4. a duplicate whose record is done is acked without running; one whose
//!    key is in flight elsewhere comes back after a delay; a failed handler's
//!    record is aborted and the message retried with backoff, and past
//!    [`Settings::deliveries_max`] it goes to the dead-letter queue.
//!
//! The record lives on an idem server ([`Adapter`]) or, exactly once even
//! across crashes, in the handler's own database transaction
//! ([`PostgresInbox`], [`MysqlInbox`]). `docs/brokers.md` has the state
//! diagram and what each broker guarantees.
#![warn(missing_docs)]

mod driver;
mod error;
mod key;
mod meter;
mod ordering;
mod pipeline;
mod process;
mod settings;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "jetstream")]
pub mod jetstream;
#[cfg(feature = "scenario")]
pub mod s2;

pub use error::{ConsumeError, KeyError, SettingsError};
pub use key::{KeySource, KEY_BYTES_MAX};
pub use pipeline::{PipelineLimits, PIPELINES_IN_FLIGHT_MAX, PIPELINE_COMMANDS_MAX, PIPELINE_LIMIT_MAX};
pub use process::{
    Action, Adapter, Failure, Handler, HandlerSlots, Message, MysqlHandler, MysqlInbox, PgHandler, PostgresInbox,
    Process, Stats, StatsSnapshot, Unguarded,
};
pub use settings::*;
