//! A `metrics` recorder that keeps every counter and gauge in an atomic,
//! so that `/metrics` can print the series recorded through the `metrics`
//! crate (see `crate::metrics`) beside the server's own figures.
//! Histograms through `metrics` are not kept: the server records none.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Whether a series counts up or goes both ways (a gauge holds f64 bits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One registered series.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) kind: Kind,
    value: Arc<AtomicU64>,
}

impl Series {
    /// The value now, as Prometheus prints it.
    pub(crate) fn value(&self) -> f64 {
        let raw = self.value.load(Relaxed);
        match self.kind {
            Kind::Counter => raw as f64,
            Kind::Gauge => f64::from_bits(raw),
        }
    }
}

/// The recorder; install it with [`install_recorder`].
#[derive(Default)]
pub struct PrometheusRecorder {
    series: Mutex<Vec<Series>>,
}

impl PrometheusRecorder {
    fn register(&self, key: &Key, kind: Kind) -> Arc<AtomicU64> {
        let labels: Vec<(String, String)> =
            key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
        let mut all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        // A server started twice in one process registers the same series
        // again: both handles share one value, as one scrape shows one line.
        if let Some(s) = all.iter().find(|s| s.name == key.name() && s.labels == labels && s.kind == kind) {
            return s.value.clone();
        }
        let value = Arc::new(AtomicU64::new(if kind == Kind::Gauge { 0f64.to_bits() } else { 0 }));
        all.push(Series { name: key.name().to_string(), labels, kind, value: value.clone() });
        value
    }

    /// Calls `f` with every series registered so far.
    pub(crate) fn with_series<R>(&self, f: impl FnOnce(&[Series]) -> R) -> R {
        f(&self.series.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.register(key, Kind::Counter))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.register(key, Kind::Gauge))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

static INSTALLED: OnceLock<&'static PrometheusRecorder> = OnceLock::new();

/// Installs the process-wide recorder whose series `/metrics` prints.
/// Call it before [`crate::Server::run`] (handles bind to the recorder
/// present when the server registers them). Calling it again does nothing;
/// if another global recorder is already installed, `/metrics` shows the
/// server's own figures only and this returns `false`.
pub fn install_recorder() -> bool {
    if INSTALLED.get().is_some() {
        return true;
    }
    let recorder: &'static PrometheusRecorder = Box::leak(Box::default());
    if metrics::set_global_recorder(recorder).is_err() {
        return false;
    }
    INSTALLED.get_or_init(|| recorder);
    true
}

/// The installed recorder, if [`install_recorder`] succeeded.
pub(crate) fn installed() -> Option<&'static PrometheusRecorder> {
    INSTALLED.get().copied()
}
