//! # idem-metrics
//!
//! The metric names idem's adapters emit, in one place, so that the HTTP
//! gateway (the `Idempotency-Key` tower layer) and the broker consumers
//! (NATS, RabbitMQ) report series that the dashboard and the Grafana
//! dashboard in docs/ can read without a translation table. Every series,
//! the server's included, is listed in docs/observability.md.
//!
//! Adapters record through the `metrics` crate facade (any exporter), with
//! labels from the fixed sets below only: a label value never comes from a
//! request (no keys, no paths, no subjects), so series stay bounded.
//!
//! ```text
//! metrics::counter!(gateway::REQUESTS_TOTAL, gateway::OUTCOME => gateway::outcome::REPLAYED).increment(1);
//! metrics::histogram!(gateway::DURATION_SECONDS, gateway::OUTCOME => gateway::outcome::EXECUTED).record(secs);
//! ```
//!
//! [`exporter`] is the recorder that prints them: one for the server's
//! `/metrics`, `idem gateway --metrics-listen` and the broker consumers.
//! [`us_histogram`] is the lock-free microsecond histogram the server's
//! command latencies and the durable log's sync probes count with.
#![warn(missing_docs)]

pub mod exporter;
pub mod us_histogram;

/// Series of the HTTP gateway (`Idempotency-Key` middleware).
pub mod gateway {
    /// Counter: requests seen by the gateway, by `outcome`.
    pub const REQUESTS_TOTAL: &str = "idem_gateway_requests_total";
    /// Counter: requests the gateway answered from a stored response
    /// instead of running the handler again (the gateway's absorbed duplicates).
    pub const DUPLICATES_ABSORBED_TOTAL: &str = "idem_gateway_duplicates_absorbed_total";
    /// Histogram (seconds): time from request to response, by `outcome`.
    pub const DURATION_SECONDS: &str = "idem_gateway_request_duration_seconds";
    /// Histogram (seconds): time spent talking to idem per request.
    pub const IDEM_CALL_SECONDS: &str = "idem_gateway_idem_call_duration_seconds";
    /// The label naming what happened to a request.
    pub const OUTCOME: &str = "outcome";

    /// Values of [`OUTCOME`].
    pub mod outcome {
        /// The handler ran (first attempt, or a retry after an expired lease).
        pub const EXECUTED: &str = "executed";
        /// The stored response was replayed (a duplicate absorbed).
        pub const REPLAYED: &str = "replayed";
        /// Another request with the key is in flight: 409 Conflict.
        pub const IN_FLIGHT: &str = "in_flight";
        /// Same key, different payload: 422.
        pub const MISMATCH: &str = "mismatch";
        /// No `Idempotency-Key` header on a route that needs one: 400.
        pub const MISSING_KEY: &str = "missing_key";
        /// The request passed through (method or route not covered).
        pub const BYPASSED: &str = "bypassed";
        /// idem could not be reached or refused: the gateway's failure policy applied.
        pub const IDEM_ERROR: &str = "idem_error";
        /// Every value, for tests and for pre-registering series.
        pub const ALL: [&str; 7] = [EXECUTED, REPLAYED, IN_FLIGHT, MISMATCH, MISSING_KEY, BYPASSED, IDEM_ERROR];
    }
}

/// Series of the broker consumers (NATS JetStream, RabbitMQ).
pub mod broker {
    /// Counter: messages delivered to the consumer, by `broker` and `outcome`.
    pub const MESSAGES_TOTAL: &str = "idem_broker_messages_total";
    /// Counter: redeliveries whose effect was skipped because it already
    /// happened (the consumer's absorbed duplicates), by `broker`.
    pub const DUPLICATES_ABSORBED_TOTAL: &str = "idem_broker_duplicates_absorbed_total";
    /// Histogram (seconds): handler time per message, by `broker` and `outcome`.
    pub const HANDLE_SECONDS: &str = "idem_broker_handle_duration_seconds";
    /// The label naming the broker.
    pub const BROKER: &str = "broker";
    /// The label naming what happened to a message.
    pub const OUTCOME: &str = "outcome";

    /// Values of [`BROKER`].
    pub mod brokers {
        /// NATS JetStream.
        pub const NATS: &str = "nats";
        /// RabbitMQ.
        pub const RABBITMQ: &str = "rabbitmq";
    }

    /// Values of [`OUTCOME`].
    pub mod outcome {
        /// The handler ran and the message was acknowledged.
        pub const PROCESSED: &str = "processed";
        /// Already processed: acknowledged without running the handler.
        pub const DUPLICATE: &str = "duplicate";
        /// Another consumer holds the message's key: left for redelivery.
        pub const IN_FLIGHT: &str = "in_flight";
        /// The handler failed: negatively acknowledged for a retry.
        pub const FAILED: &str = "failed";
        /// Sent to the dead-letter queue (no key, a permanent failure, or
        /// the delivery limit reached).
        pub const DEAD_LETTERED: &str = "dead_lettered";
        /// Given back to the broker unprocessed at shutdown.
        pub const RELEASED: &str = "released";
        /// Every value.
        pub const ALL: [&str; 6] = [PROCESSED, DUPLICATE, IN_FLIGHT, FAILED, DEAD_LETTERED, RELEASED];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_prometheus_names_under_idem() {
        let names = [
            gateway::REQUESTS_TOTAL,
            gateway::DUPLICATES_ABSORBED_TOTAL,
            gateway::DURATION_SECONDS,
            gateway::IDEM_CALL_SECONDS,
            broker::MESSAGES_TOTAL,
            broker::DUPLICATES_ABSORBED_TOTAL,
            broker::HANDLE_SECONDS,
        ];
        for n in names {
            assert!(n.starts_with("idem_"), "{n}");
            assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{n}");
        }
        let labels = gateway::outcome::ALL.iter().chain(&broker::outcome::ALL);
        for l in labels {
            assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{l}");
        }
    }

    /// The adapters' series as docs/observability.md and the Grafana
    /// dashboard name them: every name in the table and on a panel, every
    /// label value in the table.
    #[test]
    fn docs_and_dashboard_name_every_adapter_series() {
        let doc = include_str!("../../../docs/observability.md");
        let grafana = include_str!("../../../docs/grafana-dashboard.json");
        let names = [
            gateway::REQUESTS_TOTAL,
            gateway::DUPLICATES_ABSORBED_TOTAL,
            gateway::DURATION_SECONDS,
            gateway::IDEM_CALL_SECONDS,
            broker::MESSAGES_TOTAL,
            broker::DUPLICATES_ABSORBED_TOTAL,
            broker::HANDLE_SECONDS,
            exporter::DROPPED_SERIES_TOTAL,
        ];
        for n in names {
            assert!(doc.contains(&format!("| `{n}` |")), "{n} has no row in docs/observability.md");
            assert!(grafana.contains(n), "{n} is on no panel of docs/grafana-dashboard.json");
        }
        let values = gateway::outcome::ALL
            .iter()
            .chain(&broker::outcome::ALL)
            .chain(&[broker::brokers::NATS, broker::brokers::RABBITMQ]);
        for v in values {
            assert!(doc.contains(&format!("`{v}`")), "label value {v} is not in docs/observability.md");
        }
    }
}
