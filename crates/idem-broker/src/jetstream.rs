//! NATS JetStream: a durable pull consumer with explicit acks.
//!
//! | action | what the consumer sends |
//! |---|---|
//! | ack | `+ACK` |
//! | redeliver after d | `-NAK {"delay": d}` |
//! | release (shutdown) | `-NAK` |
//! | dead-letter | the message, with its headers and a reason, to the DLQ subject (waiting for the stream's ack), then `+TERM` |
//!
//! While a handler runs, `+WPI` every `progress_every_ms` keeps JetStream
//! from redelivering it after the consumer's ack wait. The consumer's own
//! `max_deliver` is a backstop: set it above [`Settings::deliveries_max`]
//! (or leave it unlimited), because a `-NAK` for a key in flight elsewhere
//! counts as a delivery too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;

use crate::driver::{self, Delivery};
use crate::error::{ConsumeError, KeyError};
use crate::key::{check, KeySource};
use crate::process::{Action, Process, Stats, StatsSnapshot};
use crate::settings::Settings;

/// Header naming why a message was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "Idem-Dead-Letter-Reason";
/// Header naming the subject a dead-lettered message was published on.
pub const DEAD_LETTER_SUBJECT_HEADER: &str = "Idem-Original-Subject";

/// Consumes `consumer` until `shutdown` resolves, then drains. Dead letters
/// are published on `dead_letter_subject` (a subject of a stream, so that
/// they are kept). `stats` counts the outcomes while it runs.
pub async fn consume<P: Process>(
    js: jetstream::Context,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    dead_letter_subject: impl Into<String>,
    settings: Settings,
    process: Arc<P>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsSnapshot, ConsumeError> {
    settings.validate()?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(settings.prefetch_n() as usize)
        .messages()
        .await
        .map_err(|e| ConsumeError::Broker(e.to_string()))?;
    let dead = Arc::new(DeadLetters { js, subject: dead_letter_subject.into() });
    // A pull error (a heartbeat missed, the consumer deleted) ends the
    // stream of deliveries; the loop then drains.
    let deliveries = messages
        .take_while(|m| {
            if let Err(e) = m {
                tracing::warn!(error = %e, "JetStream pull failed; stopping");
            }
            futures::future::ready(m.is_ok())
        })
        .filter_map(|m| futures::future::ready(m.ok()))
        .map(move |m| JsDelivery { msg: m, dead: dead.clone() });
    Ok(driver::run(Box::pin(deliveries), settings, process, stats, shutdown).await)
}

struct DeadLetters {
    js: jetstream::Context,
    subject: String,
}

struct JsDelivery {
    msg: jetstream::Message,
    dead: Arc<DeadLetters>,
}

impl Delivery for JsDelivery {
    const BROKER: &'static str = idem_metrics::broker::brokers::NATS;

    fn key(&self, source: &KeySource) -> Result<Vec<u8>, KeyError> {
        if let Some(k) = source.read_body(&self.msg.payload) {
            return k;
        }
        let KeySource::Header(name) = source else { unreachable!("read_body reads every body source") };
        let value = self.msg.headers.as_ref().and_then(|h| h.get(name.as_str()));
        match value {
            Some(v) => check(v.as_str().as_bytes().to_vec()),
            None => Err(KeyError::NoHeader(name.clone())),
        }
    }

    fn payload(&self) -> Bytes {
        self.msg.payload.clone()
    }

    fn deliveries(&self) -> u32 {
        self.msg.info().map_or(1, |i| u32::try_from(i.delivered).unwrap_or(u32::MAX).max(1))
    }

    fn keep_alive(&self, every_ms: u64) -> Option<BoxFuture<'static, ()>> {
        let msg = self.msg.clone();
        Some(Box::pin(async move {
            let every = Duration::from_millis(every_ms);
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "+WPI failed");
                }
            }
        }))
    }

    fn settle(self, action: &Action) -> BoxFuture<'static, Result<(), String>> {
        let action = action.clone();
        Box::pin(async move {
            let kind = match action {
                Action::Ack => AckKind::Ack,
                Action::Redeliver { delay_ms } => AckKind::Nak(Some(Duration::from_millis(delay_ms))),
                Action::Release => AckKind::Nak(None),
                Action::DeadLetter { reason } => {
                    self.dead_letter(&reason).await?;
                    AckKind::Term
                }
            };
            self.msg.ack_with(kind).await.map_err(|e| e.to_string())
        })
    }
}

impl JsDelivery {
    /// Publishes the message to the dead-letter subject and waits until a
    /// stream has stored it: only then may the original be terminated.
    async fn dead_letter(&self, reason: &str) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(h) = &self.msg.headers {
            // Nats-Msg-Id is kept: a dead letter published twice (a crash
            // between the publish and `+TERM`) is stored once by the DLQ
            // stream's own dedup window.
            for (name, values) in h.iter() {
                for v in values {
                    headers.append(name.clone(), v.clone());
                }
            }
        }
        headers.insert(DEAD_LETTER_REASON_HEADER, reason);
        headers.insert(DEAD_LETTER_SUBJECT_HEADER, self.msg.subject.as_str());
        let ack = self
            .dead
            .js
            .publish_with_headers(self.dead.subject.clone(), headers, self.msg.payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
