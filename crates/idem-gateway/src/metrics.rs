//! The layer's series, named in `idem_metrics::gateway` and recorded through
//! the `metrics` facade. Every handle is registered once, when the layer is
//! built: a request then costs an indexed load and an atomic add per
//! series, with no name looked up. The `metrics` crate binds a handle to
//! the recorder installed when it is registered, so an exporter must be
//! installed before the layer is built; without one the handles record
//! nothing.
//!
//! | series | kind | labels |
//! |---|---|---|
//! | `idem_gateway_requests_total` | counter | `outcome` |
//! | `idem_gateway_duplicates_absorbed_total` | counter | |
//! | `idem_gateway_request_duration_seconds` | histogram | `outcome` |
//! | `idem_gateway_idem_call_duration_seconds` | histogram | |

use std::time::Duration;

use idem_metrics::gateway as names;
use metrics::{Counter, Histogram};
use tokio::net::TcpListener;

/// Installs idem's Prometheus exporter as the process's `metrics` recorder
/// (see `idem_metrics::exporter`). Call it before building the layer.
/// False: another recorder was installed first.
pub fn install_exporter() -> bool {
    idem_metrics::exporter::install()
}

/// Serves `GET /metrics` (the installed exporter, Prometheus text format
/// 0.0.4) on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            let mut out = String::new();
            idem_metrics::exporter::render(&mut out);
            ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
        }),
    );
    axum::serve(listener, app).await
}

/// What happened to a request, the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The wrapped service ran for a first request (or a retry after an expired lease).
    Executed = 0,
    /// A stored outcome answered it: a replay, or the 410 of a response too large to store.
    Replayed = 1,
    /// The first request with the key was still running: 409.
    InFlight = 2,
    /// The key was first used with a different request: 422.
    Mismatch = 3,
    /// No usable key on an idempotent request: missing or invalid (400),
    /// or a body over its bound or too slow to arrive (413, 408), so that
    /// no key could be read from it. idem was not asked.
    MissingKey = 4,
    /// Not idempotent here: passed to the service untouched.
    Bypassed = 5,
    /// The store could not be reached or answered an error: 503, not run.
    IdemError = 6,
}

const OUTCOMES: [Outcome; 7] = [
    Outcome::Executed,
    Outcome::Replayed,
    Outcome::InFlight,
    Outcome::Mismatch,
    Outcome::MissingKey,
    Outcome::Bypassed,
    Outcome::IdemError,
];

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Executed => names::outcome::EXECUTED,
            Outcome::Replayed => names::outcome::REPLAYED,
            Outcome::InFlight => names::outcome::IN_FLIGHT,
            Outcome::Mismatch => names::outcome::MISMATCH,
            Outcome::MissingKey => names::outcome::MISSING_KEY,
            Outcome::Bypassed => names::outcome::BYPASSED,
            Outcome::IdemError => names::outcome::IDEM_ERROR,
        }
    }
}

/// The layer's metric handles.
pub(crate) struct Metrics {
    requests: [Counter; OUTCOMES.len()],
    durations: [Histogram; OUTCOMES.len()],
    duplicates_absorbed: Counter,
    idem_call: Histogram,
}

impl Metrics {
    /// Registers every series with the recorder installed now.
    pub(crate) fn register() -> Metrics {
        metrics::describe_counter!(names::REQUESTS_TOTAL, "Requests the gateway answered, by what happened.");
        metrics::describe_histogram!(
            names::DURATION_SECONDS,
            "Time from the request to the response head, by outcome."
        );
        metrics::describe_counter!(
            names::DUPLICATES_ABSORBED_TOTAL,
            "Duplicates answered with the stored response instead of running again."
        );
        metrics::describe_histogram!(names::IDEM_CALL_SECONDS, "Time a keyed request spent in store calls.");
        Metrics {
            requests: OUTCOMES.map(|o| metrics::counter!(names::REQUESTS_TOTAL, names::OUTCOME => o.label())),
            durations: OUTCOMES.map(|o| metrics::histogram!(names::DURATION_SECONDS, names::OUTCOME => o.label())),
            duplicates_absorbed: metrics::counter!(names::DUPLICATES_ABSORBED_TOTAL),
            idem_call: metrics::histogram!(names::IDEM_CALL_SECONDS),
        }
    }

    /// Records one request: its outcome, its time to the response head, and
    /// the time its calls to the store took (none when it made none).
    pub(crate) fn record(&self, outcome: Outcome, elapsed: Duration, idem: Option<Duration>) {
        let i = outcome as usize;
        debug_assert_eq!(OUTCOMES[i], outcome);
        self.requests[i].increment(1);
        self.durations[i].record(elapsed.as_secs_f64());
        if outcome == Outcome::Replayed {
            self.duplicates_absorbed.increment(1);
        }
        if let Some(t) = idem {
            self.idem_call.record(t.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_the_named_label_set_in_order() {
        assert_eq!(OUTCOMES.map(Outcome::label), names::outcome::ALL);
        for (i, o) in OUTCOMES.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }
}
