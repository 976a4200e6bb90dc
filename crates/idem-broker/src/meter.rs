//! The consumer's metrics, recorded through the `metrics` facade under the
//! names of `idem_metrics::broker`. Every series is registered once, when a
//! consumer starts (one handle per label combination); a message then costs
//! an indexed load and an increment, no label vector and no name lookup.
//! As with the server's metrics, install the recorder before the consumer
//! starts: handles bind to the recorder installed when they are registered.

use std::time::Duration;

use idem_metrics::broker as names;
use metrics::{Counter, Histogram};

use crate::process::Outcome;

/// The handles of one consumer.
pub(crate) struct Meter {
    messages: [Counter; Outcome::ALL.len()],
    seconds: [Histogram; Outcome::ALL.len()],
    duplicates_absorbed: Counter,
}

impl Meter {
    /// Registers the series of a consumer of `broker` (a value of
    /// `idem_metrics::broker::brokers`).
    pub(crate) fn register(broker: &'static str) -> Meter {
        let labels = |o: Outcome| [(names::BROKER, broker), (names::OUTCOME, o.label())];
        metrics::describe_counter!(names::MESSAGES_TOTAL, "Deliveries settled, by broker and what happened.");
        metrics::describe_histogram!(names::HANDLE_SECONDS, "Time from a delivery's arrival to its settlement.");
        metrics::describe_counter!(
            names::DUPLICATES_ABSORBED_TOTAL,
            "Redeliveries acknowledged without running the handler again."
        );
        Meter {
            messages: Outcome::ALL.map(|o| metrics::counter!(names::MESSAGES_TOTAL, &labels(o))),
            seconds: Outcome::ALL.map(|o| metrics::histogram!(names::HANDLE_SECONDS, &labels(o))),
            duplicates_absorbed: metrics::counter!(names::DUPLICATES_ABSORBED_TOTAL, names::BROKER => broker),
        }
    }

    /// Counts one settled delivery that took `took` from its arrival.
    pub(crate) fn record(&self, outcome: Outcome, took: Duration) {
        let i = outcome.index();
        self.messages[i].increment(1);
        self.seconds[i].record(took.as_secs_f64());
        if outcome == Outcome::Duplicate {
            self.duplicates_absorbed.increment(1);
        }
    }
}
