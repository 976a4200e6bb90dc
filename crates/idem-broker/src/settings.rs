//! The consumer's settings: every bound named, documented and checked.

use crate::error::SettingsError;
use crate::key::KeySource;

/// Messages handled at once, by default.
pub const CONCURRENCY_DEFAULT: u32 = 32;
/// At most this many handlers at once per consumer.
pub const CONCURRENCY_MAX: u32 = 4_096;
/// Messages the broker sends ahead of the handlers, by default.
pub const PREFETCH_DEFAULT: u32 = 64;
/// At most this many messages sent ahead.
pub const PREFETCH_MAX: u32 = 65_535;
/// The idem lease of one handler run, by default (idem's own default).
pub const LEASE_MS_DEFAULT: u64 = 30_000;
/// The shortest lease: shorter than a round trip or two, and every run
/// would lose its key.
pub const LEASE_MS_MIN: u64 = 100;
/// How long a done record answers duplicates, by default: a day, far past
/// any broker's redelivery horizon (JetStream's ack wait times its
/// deliveries; RabbitMQ's consumer timeout is 30 minutes).
pub const KEEP_MS_DEFAULT: u64 = 86_400_000;
/// How often a running handler's JetStream message is marked in progress
/// (`+WPI`), by default: a third of JetStream's default 30 s ack wait.
pub const PROGRESS_EVERY_MS_DEFAULT: u64 = 10_000;
/// The first retry after a handler failure waits this long, by default;
/// each further failure doubles it.
pub const BACKOFF_MS_DEFAULT: u64 = 200;
/// The longest wait before a retry, by default.
pub const BACKOFF_MS_MAX_DEFAULT: u64 = 30_000;
/// The shortest redelivery delay of a message whose key is in flight
/// elsewhere: sooner, and the redelivery would find it still running.
pub const BUSY_DELAY_MS_MIN: u64 = 50;
/// Deliveries of one message, by default, before a failing handler sends
/// it to the dead-letter queue.
pub const DELIVERIES_MAX_DEFAULT: u32 = 5;
/// Graceful shutdown waits this long for running handlers, by default;
/// the ones still running then are released for redelivery.
pub const DRAIN_MS_DEFAULT: u64 = 30_000;
/// Longest duration any `*_ms` setting takes: idem's longest lease and keep.
pub const DURATION_MS_MAX: u64 = 30 * 86_400_000;

/// How a consumer treats each message. Build with [`Settings::new`] and the
/// setters; [`Settings::validate`] checks every bound.
#[derive(Clone, Debug)]
pub struct Settings {
    name: String,
    key: KeySource,
    order_key: Option<KeySource>,
    concurrency: u32,
    prefetch: u32,
    lease_ms: u64,
    keep_ms: u64,
    progress_every_ms: u64,
    backoff_ms: u64,
    backoff_ms_max: u64,
    deliveries_max: u32,
    drain_ms: u64,
}

impl Settings {
    /// Settings of the consumer `name`, reading keys from `key`. The name
    /// prefixes every idem key (`name:key`), so two consumers of one message
    /// each apply it once.
    pub fn new(name: impl Into<String>, key: KeySource) -> Settings {
        Settings {
            name: name.into(),
            key,
            order_key: None,
            concurrency: CONCURRENCY_DEFAULT,
            prefetch: PREFETCH_DEFAULT,
            lease_ms: LEASE_MS_DEFAULT,
            keep_ms: KEEP_MS_DEFAULT,
            progress_every_ms: PROGRESS_EVERY_MS_DEFAULT,
            backoff_ms: BACKOFF_MS_DEFAULT,
            backoff_ms_max: BACKOFF_MS_MAX_DEFAULT,
            deliveries_max: DELIVERIES_MAX_DEFAULT,
            drain_ms: DRAIN_MS_DEFAULT,
        }
    }
    /// Messages with the same order key (read like the idempotency key)
    /// never run at once in this consumer, and run in arrival order.
    pub fn order_key(mut self, source: KeySource) -> Self {
        self.order_key = Some(source);
        self
    }
    /// Handlers running at once.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }
    /// Messages the broker may send ahead (JetStream pull batch, AMQP QoS).
    pub fn prefetch(mut self, n: u32) -> Self {
        self.prefetch = n;
        self
    }
    /// The idem lease of one run; the handler is stopped when it runs out.
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.lease_ms = ms;
        self
    }
    /// How long a done record answers duplicates.
    pub fn keep_ms(mut self, ms: u64) -> Self {
        self.keep_ms = ms;
        self
    }
    /// How often a running JetStream message is marked in progress.
    pub fn progress_every_ms(mut self, ms: u64) -> Self {
        self.progress_every_ms = ms;
        self
    }
    /// The first retry delay after a failure, and the longest.
    pub fn backoff_ms(mut self, first_ms: u64, max_ms: u64) -> Self {
        self.backoff_ms = first_ms;
        self.backoff_ms_max = max_ms;
        self
    }
    /// Deliveries before a failing message is dead-lettered.
    pub fn deliveries_max(mut self, n: u32) -> Self {
        self.deliveries_max = n;
        self
    }
    /// How long shutdown waits for running handlers.
    pub fn drain_ms(mut self, ms: u64) -> Self {
        self.drain_ms = ms;
        self
    }

    /// Checks every bound; the first one broken is the error.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let in_range = |name, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(SettingsError { name, value, min, max })
            }
        };
        in_range("name length", self.name.len() as u64, 1, 63)?;
        in_range("concurrency", self.concurrency.into(), 1, CONCURRENCY_MAX.into())?;
        in_range("prefetch", self.prefetch.into(), 1, PREFETCH_MAX.into())?;
        in_range("lease_ms", self.lease_ms, LEASE_MS_MIN, DURATION_MS_MAX)?;
        in_range("keep_ms", self.keep_ms, 1, DURATION_MS_MAX)?;
        in_range("progress_every_ms", self.progress_every_ms, 10, DURATION_MS_MAX)?;
        in_range("backoff_ms", self.backoff_ms, 1, DURATION_MS_MAX)?;
        in_range("backoff_ms_max", self.backoff_ms_max, self.backoff_ms, DURATION_MS_MAX)?;
        in_range("deliveries_max", self.deliveries_max.into(), 1, 1_000)?;
        in_range("drain_ms", self.drain_ms, 0, DURATION_MS_MAX)?;
        Ok(())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn key(&self) -> &KeySource {
        &self.key
    }
    pub(crate) fn order_key_source(&self) -> Option<&KeySource> {
        self.order_key.as_ref()
    }
    pub(crate) fn concurrency_n(&self) -> u32 {
        self.concurrency
    }
    pub(crate) fn prefetch_n(&self) -> u32 {
        self.prefetch
    }
    pub(crate) fn lease(&self) -> u64 {
        self.lease_ms
    }
    pub(crate) fn keep(&self) -> u64 {
        self.keep_ms
    }
    pub(crate) fn progress_every(&self) -> u64 {
        self.progress_every_ms
    }
    pub(crate) fn deliveries_limit(&self) -> u32 {
        self.deliveries_max
    }
    pub(crate) fn drain(&self) -> u64 {
        self.drain_ms
    }

    /// The idem key of a message key: `name:key`.
    pub(crate) fn idem_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.name.len() + 1 + key.len());
        k.extend_from_slice(self.name.as_bytes());
        k.push(b':');
        k.extend_from_slice(key);
        k
    }

    /// The wait before the retry that follows the `deliveries`-th failed
    /// delivery: the first delay, doubled per further failure, capped.
    pub(crate) fn backoff_after(&self, deliveries: u32) -> u64 {
        let doublings = deliveries.saturating_sub(1).min(32);
        self.backoff_ms.saturating_mul(1u64 << doublings).min(self.backoff_ms_max)
    }

    /// The redelivery delay of a message whose key another run holds with
    /// `left_ms` of lease left: when that run ends at the latest, within
    /// [`BUSY_DELAY_MS_MIN`] and the longest backoff.
    pub(crate) fn busy_delay(&self, left_ms: u64) -> u64 {
        left_ms.clamp(BUSY_DELAY_MS_MIN, self.backoff_ms_max.max(BUSY_DELAY_MS_MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        let s = Settings::new("orders", KeySource::nats_msg_id());
        assert_eq!(s.validate(), Ok(()));
        let e = s.clone().concurrency(0).validate().unwrap_err();
        assert_eq!(e.name, "concurrency");
        assert_eq!(s.clone().lease_ms(10).validate().unwrap_err().name, "lease_ms");
        assert_eq!(s.clone().backoff_ms(500, 100).validate().unwrap_err().name, "backoff_ms_max");
        assert_eq!(Settings::new("", KeySource::nats_msg_id()).validate().unwrap_err().name, "name length");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = Settings::new("c", KeySource::nats_msg_id()).backoff_ms(100, 1_000);
        assert_eq!([1, 2, 3, 4, 5, 100].map(|d| s.backoff_after(d)), [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(s.busy_delay(5), BUSY_DELAY_MS_MIN);
        assert_eq!(s.busy_delay(700), 700);
        assert_eq!(s.busy_delay(60_000), 1_000);
    }

    #[test]
    fn idem_keys_are_prefixed_by_the_consumer() {
        let s = Settings::new("billing", KeySource::nats_msg_id());
        assert_eq!(s.idem_key(b"m-1"), b"billing:m-1");
    }
}
