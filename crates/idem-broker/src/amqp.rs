//! RabbitMQ (AMQP 0-9-1): a consumer with manual acks on a queue that
//! [`declare_queue`] set up with a dead-letter queue.
//!
//! | action | what the consumer does |
//! |---|---|
//! | ack | `basic.ack` (acks due at the same moment share one, with `multiple`) |
//! | redeliver after d | publish a copy (its delivery count in [`DELIVERIES_HEADER`]) to the delay queue of the smallest delay tier ≥ d, wait for the broker's confirm, then `basic.ack` the original |
//! | release (shutdown) | `basic.nack` with requeue |
//! | dead-letter | `basic.reject` without requeue: the queue's dead-letter exchange routes it to `<queue>.dlq` |
//!
//! AMQP has no "requeue after a delay": a delay queue per tier holds the copy
//! with a per-queue message TTL and dead-letters it back to the work queue
//! when the TTL ends (one TTL per queue, so messages expire in order at the
//! head). A crash between the copy's publish and the original's ack leaves
//! two copies; the record answers the second. RabbitMQ has no per-message
//! ack timer to renew (its consumer timeout is per channel and long).

mod acks;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

use self::acks::Acks;
use crate::driver::{self, Delivery};
use crate::error::{ConsumeError, KeyError};
use crate::key::{check, KeySource};
use crate::process::{Action, Process, Stats, StatsSnapshot};
use crate::settings::Settings;

/// Header carrying how many times the consumer has delivered a message that
/// went through a delay queue.
pub const DELIVERIES_HEADER: &str = "x-idem-deliveries";
/// Delay tiers by default, in milliseconds: one delay queue each.
pub const DELAY_TIERS_MS_DEFAULT: [u64; 4] = [100, 1_000, 10_000, 60_000];
/// At most this many delay tiers (queues) per work queue.
pub const DELAY_TIERS_MAX: usize = 16;
/// RabbitMQ's own delivery limit on the work queue (a quorum queue): a
/// backstop for a message whose consumer dies each time it runs it, so
/// never reaches the consumer's limit.
pub const QUEUE_DELIVERY_LIMIT: i64 = 20;

fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

fn delay_queue_name(queue: &str, ms: u64) -> String {
    format!("{queue}.delay-{ms}ms")
}

/// Declares the durable quorum queue `queue` whose rejected messages (and
/// messages past [`QUEUE_DELIVERY_LIMIT`]) go to `<queue>.dlq`, and that
/// queue. Idempotent: declaring again with the same arguments is a no-op.
pub async fn declare_queue(channel: &Channel, queue: &str) -> Result<(), ConsumeError> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let broker = |e: lapin::Error| ConsumeError::Broker(e.to_string());
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    channel.queue_declare(&dlq_name(queue), durable, quorum.clone()).await.map_err(broker)?;
    let mut args = quorum;
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dlq_name(queue).into()));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(QUEUE_DELIVERY_LIMIT));
    channel.queue_declare(queue, durable, args).await.map_err(broker)?;
    Ok(())
}

/// Deletes `queue`, its dead-letter queue and the delay queues of `tiers`.
pub async fn delete_queue(channel: &Channel, queue: &str, tiers: &[u64]) -> Result<(), ConsumeError> {
    let broker = |e: lapin::Error| ConsumeError::Broker(e.to_string());
    let mut names = vec![queue.to_string(), dlq_name(queue)];
    names.extend(tiers.iter().map(|ms| delay_queue_name(queue, *ms)));
    for n in names {
        channel.queue_delete(&n, QueueDeleteOptions::default()).await.map_err(broker)?;
    }
    Ok(())
}

/// Consumes `queue` (declared by [`declare_queue`]) on `connection` until
/// `shutdown` resolves, then drains. `delay_tiers_ms` are the redelivery
/// delays offered (sorted, at most [`DELAY_TIERS_MAX`]).
pub async fn consume<P: Process>(
    connection: &Connection,
    queue: &str,
    delay_tiers_ms: &[u64],
    settings: Settings,
    process: Arc<P>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsSnapshot, ConsumeError> {
    settings.validate()?;
    let mut tiers = delay_tiers_ms.to_vec();
    tiers.sort_unstable();
    tiers.dedup();
    if tiers.is_empty() || tiers.len() > DELAY_TIERS_MAX || tiers[0] == 0 {
        return Err(ConsumeError::Broker(format!(
            "delay tiers must be 1..={DELAY_TIERS_MAX} durations above 0 ms, got {delay_tiers_ms:?}"
        )));
    }
    let broker = |e: lapin::Error| ConsumeError::Broker(e.to_string());
    let consuming = connection.create_channel().await.map_err(broker)?;
    let publishing = connection.create_channel().await.map_err(broker)?;
    publishing.confirm_select(ConfirmSelectOptions::default()).await.map_err(broker)?;
    for ms in &tiers {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::try_from(*ms).unwrap_or(i64::MAX)));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        publishing.queue_declare(&delay_queue_name(queue, *ms), durable, args).await.map_err(broker)?;
    }
    let prefetch = u16::try_from(settings.prefetch_n()).unwrap_or(u16::MAX);
    consuming.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(broker)?;
    let consumer = consuming
        .basic_consume(
            queue,
            &format!("{}-{}", settings_tag(&settings), std::process::id()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    let delays = Arc::new(Delays { channel: publishing, queue: queue.to_string(), tiers });
    let acks = Arc::new(Acks::default());
    let deliveries = consumer
        .take_while(|d| {
            if let Err(e) = d {
                tracing::warn!(error = %e, "AMQP consumer failed; stopping");
            }
            futures::future::ready(d.is_ok())
        })
        .filter_map(|d| futures::future::ready(d.ok()))
        .map(move |d| {
            acks.delivered(d.delivery_tag);
            AmqpDelivery { d, delays: delays.clone(), acks: acks.clone() }
        });
    let snapshot = driver::run(Box::pin(deliveries), settings, process, stats, shutdown).await;
    // Closing the channel gives every message sent ahead back to the queue.
    let _ = consuming.close(200, "shutdown").await;
    Ok(snapshot)
}

fn settings_tag(settings: &Settings) -> String {
    format!("idem-{}", settings.name())
}

struct Delays {
    channel: Channel,
    queue: String,
    tiers: Vec<u64>,
}

impl Delays {
    /// The smallest tier at least `delay_ms`, or the longest.
    fn tier(&self, delay_ms: u64) -> u64 {
        self.tiers.iter().copied().find(|t| *t >= delay_ms).unwrap_or(*self.tiers.last().expect("tiers are not empty"))
    }
}

struct AmqpDelivery {
    d: lapin::message::Delivery,
    delays: Arc<Delays>,
    acks: Arc<Acks>,
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref().and_then(|h| h.inner().get(name))
}

fn as_u32(v: &AMQPValue) -> Option<u32> {
    match v {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some((*n).into()),
        _ => None,
    }
}

impl Delivery for AmqpDelivery {
    const BROKER: &'static str = idem_metrics::broker::brokers::RABBITMQ;

    fn key(&self, source: &KeySource) -> Result<Vec<u8>, KeyError> {
        if let Some(k) = source.read_body(&self.d.data) {
            return k;
        }
        let KeySource::Header(name) = source else { unreachable!("read_body reads every body source") };
        if name.eq_ignore_ascii_case("message-id") {
            return match self.d.properties.message_id() {
                Some(id) => check(id.as_str().as_bytes().to_vec()),
                None => Err(KeyError::NoHeader(name.clone())),
            };
        }
        match header(&self.d.properties, name) {
            Some(AMQPValue::LongString(s)) => check(s.as_bytes().to_vec()),
            Some(AMQPValue::ShortString(s)) => check(s.as_str().as_bytes().to_vec()),
            Some(AMQPValue::ByteArray(b)) => check(b.as_slice().to_vec()),
            Some(_) => Err(KeyError::NotAKey(name.clone())),
            None => Err(KeyError::NoHeader(name.clone())),
        }
    }

    fn payload(&self) -> Bytes {
        Bytes::copy_from_slice(&self.d.data)
    }

    fn deliveries(&self) -> u32 {
        // Delays counted by this consumer, and requeues counted by a
        // quorum queue (`x-delivery-count`, previous deliveries).
        let ours = header(&self.d.properties, DELIVERIES_HEADER).and_then(as_u32).unwrap_or(0);
        let queue = header(&self.d.properties, "x-delivery-count").and_then(as_u32).unwrap_or(0);
        ours.max(queue).saturating_add(1)
    }

    fn keep_alive(&self, _every_ms: u64) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn settle(self, action: &Action) -> BoxFuture<'static, Result<(), String>> {
        let action = action.clone();
        Box::pin(async move {
            let tag = self.d.delivery_tag;
            let acker = &self.d.acker;
            let settled_otherwise = match action {
                Action::Ack => {
                    self.acks.ack(tag, self.d.acker.clone()).await;
                    return Ok(());
                }
                Action::Redeliver { delay_ms } => {
                    self.delay(delay_ms).await?;
                    self.acks.ack(tag, self.d.acker.clone()).await;
                    return Ok(());
                }
                Action::Release => acker.nack(BasicNackOptions { requeue: true, multiple: false }).await,
                Action::DeadLetter { reason } => {
                    tracing::info!(reason, "dead-lettering");
                    acker.reject(BasicRejectOptions { requeue: false }).await
                }
            };
            // Only a reject or nack that went out frees its tag for a
            // multiple ack: one that failed leaves the delivery unsettled
            // (the broker requeues it when the channel closes), and no ack
            // may cover it.
            settled_otherwise.map_err(|e| e.to_string())?;
            self.acks.settled(tag);
            Ok(())
        })
    }
}

impl AmqpDelivery {
    /// Publishes a copy to the delay queue and waits for the broker to
    /// confirm it, so the original may be acked.
    async fn delay(&self, delay_ms: u64) -> Result<(), String> {
        let tier = self.delays.tier(delay_ms);
        let mut headers = self.d.properties.headers().clone().unwrap_or_default();
        headers.insert(DELIVERIES_HEADER.into(), AMQPValue::LongLongInt(i64::from(self.deliveries())));
        let props = self.d.properties.clone().with_headers(headers);
        let confirm = self
            .delays
            .channel
            .basic_publish(
                "",
                &delay_queue_name(&self.delays.queue, tier),
                BasicPublishOptions::default(),
                &self.d.data,
                props,
            )
            .await
            .map_err(|e| e.to_string())?;
        match confirm.await.map_err(|e| e.to_string())? {
            lapin::publisher_confirm::Confirmation::Ack(_) => Ok(()),
            other => Err(format!("the delay queue refused the copy: {other:?}")),
        }
    }
}
