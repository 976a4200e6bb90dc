//! The process-wide `metrics` recorder that idem's processes export: the
//! server's `/metrics`, `idem gateway --metrics-listen`, and the broker
//! consumers record through the `metrics` facade, and [`render`] prints
//! every series in the Prometheus text exposition format (version 0.0.4).
//!
//! ```text
//! idem_metrics::exporter::install();            // once, before handles are registered
//! metrics::counter!(gateway::REQUESTS_TOTAL, gateway::OUTCOME => gateway::outcome::REPLAYED).increment(1);
//! let mut text = String::new();
//! idem_metrics::exporter::render(&mut text);    // on each scrape
//! ```
//!
//! ## Costs and bounds
//!
//! Registering a handle takes a lock and a hash lookup; recording through a
//! handle is lock-free: a counter or gauge is one atomic, a histogram one
//! atomic add on its bucket and its count and a compare-and-swap on its
//! sum. Code on a hot path registers its handles once and keeps them
//! (`metrics::counter!` registers on every call).
//!
//! - At most [`SERIES_MAX`] series (one name with one label set; a
//!   histogram is one series). A registration beyond it gets a handle that
//!   records nothing and is counted in [`DROPPED_SERIES_TOTAL`]; the memory
//!   held is therefore bounded, whatever label values a caller makes up.
//! - A name registered with one type and then another (a counter, then a
//!   histogram) keeps its first type; the second registration is dropped
//!   the same way, since one name has one `# TYPE` in the exposition.
//! - A histogram labelled `le` is dropped: `le` names its buckets.
//! - Histograms have the fixed buckets [`HISTOGRAM_BOUNDS`] (in the unit the
//!   series records, seconds for every idem series): memory per histogram
//!   is fixed, whatever is recorded.
//!
//! Names are exported as registered except that a character Prometheus does
//! not allow in a name becomes `_`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Most series one process exports. idem's fixed label sets need about 200
/// (the server's per-command counters for two transports are the bulk; the
/// gateway's and the brokers' are a few dozen); the rest is headroom for an
/// embedding application. At most about 200 bytes each (a histogram), so
/// the recorder holds well under a megabyte.
pub const SERIES_MAX: usize = 1024;

/// Counter exported by [`render`]: registrations refused by a bound (see
/// the module docs). Non-zero means some series are missing.
pub const DROPPED_SERIES_TOTAL: &str = "idem_metrics_series_dropped_total";

/// Upper bounds (inclusive) of the histogram buckets, in seconds: from a
/// reply served from memory (50 µs) to a handler that ran for ten seconds;
/// above the last, `+Inf`.
pub const HISTOGRAM_BOUNDS: [f64; 17] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Fixed-bucket histogram.
struct Buckets {
    /// `[i]`: observations of at most `HISTOGRAM_BOUNDS[i]` and above the
    /// bound before; the last: above every bound.
    counts: [AtomicU64; HISTOGRAM_BOUNDS.len() + 1],
    /// The sum of the observations, as f64 bits.
    sum: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets { counts: Default::default(), sum: AtomicU64::new(0f64.to_bits()) }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // NaN belongs in no bucket and would poison the sum.
        if value.is_nan() {
            return;
        }
        let i = HISTOGRAM_BOUNDS.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Relaxed);
        // The closure always returns Some, so the update cannot fail.
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }
}

/// What a series holds.
#[derive(Clone)]
enum Value {
    Counter(Arc<AtomicU64>),
    /// f64 bits (the `metrics` gauge representation of an `AtomicU64`).
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
            Value::Histogram(_) => "histogram",
        }
    }
}

/// Every series, behind the registration lock.
#[derive(Default)]
struct Registry {
    /// By key (label order does not matter to `Key`'s equality).
    by_key: HashMap<Key, Value>,
    /// By exported name, then sorted labels: the order [`render`] prints.
    by_name: BTreeMap<String, Family>,
    /// `# HELP` texts, by exported name (only for names with series).
    help: HashMap<String, String>,
}

/// The series of one name.
struct Family {
    kind: &'static str,
    series: BTreeMap<Vec<(String, String)>, Value>,
}

/// A recorder keeping every series in memory for [`Exporter::render`].
/// [`install`] makes one the global recorder; tests may use one locally
/// (`metrics::with_local_recorder`).
#[derive(Default)]
pub struct Exporter {
    registry: Mutex<Registry>,
    dropped: AtomicU64,
}

impl Exporter {
    /// An empty exporter.
    pub fn new() -> Exporter {
        Exporter::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the maps consistent (each
        // insertion is one call), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of `key`, registered now if new; None if refused.
    fn register(&self, key: &Key, kind: &'static str, make: fn() -> Value) -> Option<Value> {
        let mut reg = self.lock();
        if let Some(v) = reg.by_key.get(key) {
            return if v.kind() == kind { Some(v.clone()) } else { self.refuse() };
        }
        let value = make();
        debug_assert_eq!(value.kind(), kind);
        let name = export_name(key.name());
        let mut labels: Vec<(String, String)> =
            key.labels().map(|l| (export_name(l.key()), l.value().to_string())).collect();
        labels.sort();
        let refused = reg.by_key.len() >= SERIES_MAX
            || reg.by_name.get(&name).is_some_and(|f| f.kind != value.kind())
            || (matches!(value, Value::Histogram(_)) && labels.iter().any(|(k, _)| k == "le"))
            || labels.windows(2).any(|w| w[0].0 == w[1].0);
        if refused {
            return self.refuse();
        }
        let family = reg.by_name.entry(name).or_insert_with(|| Family { kind: value.kind(), series: BTreeMap::new() });
        // Two keys that differ only in characters the export name replaces
        // would print one series twice: the second is refused.
        if family.series.contains_key(&labels) {
            return self.refuse();
        }
        family.series.insert(labels, value.clone());
        reg.by_key.insert(key.clone(), value.clone());
        debug_assert!(reg.by_key.len() <= SERIES_MAX);
        Some(value)
    }

    fn refuse(&self) -> Option<Value> {
        self.dropped.fetch_add(1, Relaxed);
        None
    }

    fn describe(&self, name: KeyName, description: SharedString) {
        let mut reg = self.lock();
        // Bounded like the series: only names that have (or will have) a
        // series within the bound are described, one text per name.
        if reg.help.len() < SERIES_MAX {
            reg.help.insert(export_name(name.as_str()), description.into_owned());
        }
    }

    /// Appends every series to `out`, in the text exposition format: per
    /// name an optional `# HELP`, a `# TYPE`, then its samples; histograms
    /// as cumulative `_bucket{le=..}`, `_sum` and `_count`. Ends with
    /// [`DROPPED_SERIES_TOTAL`].
    pub fn render(&self, out: &mut String) {
        let reg = self.lock();
        for (name, family) in &reg.by_name {
            if let Some(help) = reg.help.get(name) {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            }
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, value) in &family.series {
                match value {
                    Value::Counter(v) => sample(out, name, "", labels, None, v.load(Relaxed) as f64),
                    Value::Gauge(v) => sample(out, name, "", labels, None, f64::from_bits(v.load(Relaxed))),
                    Value::Histogram(h) => {
                        let mut below = 0;
                        for (i, c) in h.counts.iter().enumerate() {
                            below += c.load(Relaxed);
                            let le = HISTOGRAM_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
                            sample(out, name, "_bucket", labels, Some(le), below as f64);
                        }
                        sample(out, name, "_sum", labels, None, f64::from_bits(h.sum.load(Relaxed)));
                        sample(out, name, "_count", labels, None, below as f64);
                    }
                }
            }
        }
        drop(reg);
        let _ = writeln!(
            out,
            "# HELP {DROPPED_SERIES_TOTAL} Series registrations refused by the exporter's bounds.\n\
             # TYPE {DROPPED_SERIES_TOTAL} counter\n{DROPPED_SERIES_TOTAL} {}",
            self.dropped.load(Relaxed)
        );
    }
}

impl Recorder for Exporter {
    fn describe_counter(&self, name: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(name, description);
    }
    fn describe_gauge(&self, name: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(name, description);
    }
    fn describe_histogram(&self, name: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(name, description);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.register(key, "counter", || Value::Counter(Arc::default())) {
            Some(Value::Counter(v)) => Counter::from_arc(v),
            _ => Counter::noop(),
        }
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.register(key, "gauge", || Value::Gauge(Arc::new(AtomicU64::new(0f64.to_bits())))) {
            Some(Value::Gauge(v)) => Gauge::from_arc(v),
            _ => Gauge::noop(),
        }
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.register(key, "histogram", || Value::Histogram(Arc::default())) {
            Some(Value::Histogram(v)) => Histogram::from_arc(v),
            _ => Histogram::noop(),
        }
    }
}

static INSTALLED: OnceLock<&'static Exporter> = OnceLock::new();

/// Installs the process-wide exporter as the global `metrics` recorder.
/// Call it before anything registers handles: a handle stays bound to the
/// recorder present when it was registered. Returns true if the exporter
/// is installed (now or before), false if another recorder already is (then
/// [`render`] prints only [`DROPPED_SERIES_TOTAL`]).
pub fn install() -> bool {
    if INSTALLED.get().is_some() {
        return true;
    }
    let exporter: &'static Exporter = Box::leak(Box::default());
    if metrics::set_global_recorder(exporter).is_err() {
        // Lost a race with another install() or another recorder.
        return INSTALLED.get().is_some();
    }
    let stored = INSTALLED.get_or_init(|| exporter);
    assert!(std::ptr::eq(*stored, exporter), "set_global_recorder succeeds once per process");
    true
}

/// Appends every series of the installed exporter to `out` (see
/// [`Exporter::render`]); with none installed, only [`DROPPED_SERIES_TOTAL`]
/// at 0.
pub fn render(out: &mut String) {
    match INSTALLED.get() {
        Some(e) => e.render(out),
        None => Exporter::default().render(out),
    }
}

/// `name` with every character outside `[a-zA-Z0-9_:]` as `_`, and a `_`
/// before a leading digit.
fn export_name(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// One sample line: `name{labels[,le]} value`.
fn sample(out: &mut String, name: &str, suffix: &str, labels: &[(String, String)], le: Option<f64>, value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            let _ = write!(out, "le=\"{}\"", number(le));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// A float as the text format writes it (`+Inf`, `-Inf`, `NaN`).
fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        v.to_string()
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(e: &Exporter) -> String {
        let mut s = String::new();
        e.render(&mut s);
        s
    }

    #[test]
    fn counters_gauges_histograms_render_with_their_type() {
        let e = Exporter::new();
        metrics::with_local_recorder(&e, || {
            metrics::describe_counter!("idem_x_total", "Xs seen.");
            metrics::counter!("idem_x_total", "outcome" => "a").increment(2);
            metrics::counter!("idem_x_total", "outcome" => "b").increment(1);
            metrics::counter!("idem_x_total", "outcome" => "a").increment(1);
            metrics::gauge!("idem_g").set(-1.5);
            let h = metrics::histogram!("idem_h_seconds", "broker" => "nats");
            h.record(0.00005);
            h.record(0.003);
            h.record(100.0);
            h.record(f64::NAN);
        });
        let text = rendered(&e);
        let want = [
            "# HELP idem_x_total Xs seen.\n# TYPE idem_x_total counter\n",
            "idem_x_total{outcome=\"a\"} 3\nidem_x_total{outcome=\"b\"} 1\n",
            "# TYPE idem_g gauge\nidem_g -1.5\n",
            "# TYPE idem_h_seconds histogram\n",
            "idem_h_seconds_bucket{broker=\"nats\",le=\"0.00005\"} 1\n",
            "idem_h_seconds_bucket{broker=\"nats\",le=\"0.0025\"} 1\n",
            "idem_h_seconds_bucket{broker=\"nats\",le=\"0.005\"} 2\n",
            "idem_h_seconds_bucket{broker=\"nats\",le=\"10\"} 2\n",
            "idem_h_seconds_bucket{broker=\"nats\",le=\"+Inf\"} 3\n",
            "idem_h_seconds_sum{broker=\"nats\"} 100.00305\n",
            "idem_h_seconds_count{broker=\"nats\"} 3\n",
            "idem_metrics_series_dropped_total 0\n",
        ];
        for w in want {
            assert!(text.contains(w), "missing {w:?} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE idem_x_total").count(), 1);
        assert_eq!(text.matches("_bucket{").count(), HISTOGRAM_BOUNDS.len() + 1);
    }

    #[test]
    fn label_order_and_reregistration_share_one_series() {
        let e = Exporter::new();
        metrics::with_local_recorder(&e, || {
            metrics::counter!("idem_y_total", "a" => "1", "b" => "2").increment(1);
            metrics::counter!("idem_y_total", "b" => "2", "a" => "1").increment(1);
        });
        let text = rendered(&e);
        assert!(text.contains("idem_y_total{a=\"1\",b=\"2\"} 2\n"), "{text}");
        assert_eq!(text.matches("idem_y_total{").count(), 1, "{text}");
    }

    #[test]
    fn series_beyond_the_bound_are_dropped_and_counted() {
        let e = Exporter::new();
        metrics::with_local_recorder(&e, || {
            for i in 0..SERIES_MAX + 10 {
                metrics::counter!("idem_z_total", "i" => i.to_string()).increment(1);
            }
            // Refused: another type under a known name, `le` on a histogram.
            metrics::gauge!("idem_z_total", "i" => "new").set(1.0);
            metrics::histogram!("idem_h", "le" => "1").record(1.0);
            // An existing series still records.
            metrics::counter!("idem_z_total", "i" => "0").increment(1);
        });
        let text = rendered(&e);
        assert_eq!(text.matches("idem_z_total{").count(), SERIES_MAX, "{}", &text[text.len() - 300..]);
        assert!(text.contains("idem_z_total{i=\"0\"} 2\n"));
        assert!(!text.contains(&format!("i=\"{SERIES_MAX}\"")));
        assert!(text.ends_with("idem_metrics_series_dropped_total 12\n"), "{}", &text[text.len() - 200..]);
        assert!(!text.contains("idem_h"));
    }

    #[test]
    fn names_and_label_values_are_made_valid() {
        let e = Exporter::new();
        metrics::with_local_recorder(&e, || {
            metrics::counter!("my.app-requests", "path" => "a\"b\\c\nd").increment(1);
            metrics::counter!("9lives").increment(1);
            // Same exported name and labels as the first: refused, not printed twice.
            metrics::counter!("my_app_requests", "path" => "a\"b\\c\nd").increment(1);
        });
        let text = rendered(&e);
        assert!(text.contains("my_app_requests{path=\"a\\\"b\\\\c\\nd\"} 1\n"), "{text}");
        assert!(text.contains("_9lives 1\n"), "{text}");
        assert!(text.ends_with("idem_metrics_series_dropped_total 1\n"), "{text}");
    }

    #[test]
    fn the_global_exporter_renders_what_the_facade_records() {
        assert!(install());
        assert!(install(), "installing twice is harmless");
        metrics::counter!("idem_global_test_total").increment(4);
        let mut text = String::new();
        render(&mut text);
        assert!(text.contains("# TYPE idem_global_test_total counter\nidem_global_test_total 4\n"), "{text}");
    }
}
