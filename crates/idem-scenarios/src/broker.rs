//! A work queue on NATS JetStream: one stream and one durable pull consumer
//! per queue, explicit acks, redelivery after `ack_wait`. At-least-once, as
//! every broker in the write-ups: an unacked message comes back.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;

/// Bound on messages a queue holds (a run never comes near it).
const STREAM_MESSAGES_MAX: i64 = 1_000_000;
/// Bound on delivered-but-unacked messages per consumer.
const ACK_PENDING_MAX: i64 = 10_000;

pub(crate) struct WorkQueue {
    js: jetstream::Context,
    stream_name: String,
    subject: String,
    consumer: jetstream::consumer::Consumer<pull::Config>,
}

impl WorkQueue {
    /// Creates the stream `name` (memory storage) with one subject and a
    /// durable pull consumer whose unacked messages are redelivered after
    /// `ack_wait`.
    pub async fn create(nats_url: &str, name: &str, ack_wait: Duration) -> anyhow::Result<WorkQueue> {
        let client =
            async_nats::connect(nats_url).await.with_context(|| format!("connecting to NATS at {nats_url}"))?;
        let js = jetstream::new(client);
        let subject = format!("{name}.work");
        let _ = js.delete_stream(name).await;
        let stream = js
            .create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::Memory,
                max_messages: STREAM_MESSAGES_MAX,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating JetStream stream {name}"))?;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("workers".to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: ACK_PENDING_MAX,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the consumer of {name}"))?;
        Ok(WorkQueue { js, stream_name: name.to_string(), subject, consumer })
    }

    /// A handle that publishes into this queue (cheap to clone, `'static`).
    pub fn publisher(&self) -> Publisher {
        Publisher { js: self.js.clone(), subject: self.subject.clone() }
    }

    /// Publishes messages and waits until JetStream has stored them all.
    pub async fn publish_all(&self, payloads: impl IntoIterator<Item = Bytes>) -> anyhow::Result<()> {
        self.publisher().publish_all(payloads).await
    }

    /// The durable consumer (clone it into each receiver).
    pub fn consumer(&self) -> jetstream::consumer::Consumer<pull::Config> {
        self.consumer.clone()
    }

    /// `(not yet delivered, delivered but unacked)`.
    pub async fn backlog(&self) -> anyhow::Result<(u64, usize)> {
        let mut c = self.consumer.clone();
        let info = c.info().await.context("consumer info")?;
        Ok((info.num_pending, info.num_ack_pending))
    }

    /// Deletes the stream (and its consumer).
    pub async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream_name).await;
    }
}

/// Publishes into one queue.
#[derive(Clone)]
pub(crate) struct Publisher {
    js: jetstream::Context,
    subject: String,
}

impl Publisher {
    /// Publishes messages and waits until JetStream has stored them all.
    pub async fn publish_all(&self, payloads: impl IntoIterator<Item = Bytes>) -> anyhow::Result<()> {
        let mut acks = Vec::new();
        for p in payloads {
            acks.push(self.js.publish(self.subject.clone(), p).await.context("publishing")?);
        }
        for a in acks {
            a.await.context("publish ack")?;
        }
        Ok(())
    }
}
