//! `/metrics`: every figure in the Prometheus text format (version 0.0.4).

use std::fmt::Write;

use super::telemetry::LATENCY_US_BOUNDS;
use crate::state::{InfoCounter, ServerState};

/// The Content-Type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric being written: its `# HELP` and `# TYPE` lines come first.
struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = write!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.head(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the text format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Seconds from microseconds, for the `le` label and sums.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Every figure of the server behind `state`, in the text format.
pub(crate) async fn render(state: &ServerState) -> String {
    let mut out = Out(String::with_capacity(16 * 1024));
    let counters = state.counters();
    out.one("idem_up", "gauge", "1 while the server runs.", 1.0);
    out.one("idem_uptime_seconds", "gauge", "Seconds since the server started.", state.uptime().as_secs_f64());
    out.one(
        "idem_commands_processed_total",
        "counter",
        "Requests received over RESP and HTTP, server commands included.",
        counters.get(InfoCounter::CommandsProcessed) as f64,
    );
    out.one(
        "idem_error_replies_total",
        "counter",
        "Error replies sent.",
        counters.get(InfoCounter::ErrorReplies) as f64,
    );
    out.one(
        "idem_resp_connections",
        "gauge",
        "RESP connections open now.",
        counters.get(InfoCounter::ConnectedClients) as f64,
    );
    out.one(
        "idem_resp_connections_received_total",
        "counter",
        "RESP connections accepted or turned away.",
        counters.get(InfoCounter::ConnectionsReceived) as f64,
    );
    out.one(
        "idem_resp_connections_rejected_total",
        "counter",
        "RESP connections turned away at max_connections.",
        counters.get(InfoCounter::ConnectionsRejected) as f64,
    );
    // Connections closed for a protocol error or a slow reader are
    // `idem_protocol_errors_total` and `idem_slow_clients_disconnected_total`
    // in the exporter's part (`crate::metrics`): one name, one series.
    if let Some(rss) = resident_bytes() {
        out.one("process_resident_memory_bytes", "gauge", "Resident memory of the server process.", rss as f64);
    }
    let http = state.observe().http();
    out.head("idem_http_requests_total", "counter", "HTTP requests answered, by status class.");
    for (class, n) in http.by_class() {
        out.sample("idem_http_requests_total", &[("status", class)], n as f64);
    }
    out.one("idem_http_connections", "gauge", "HTTP connections open now.", http.open() as f64);

    if let Some(t) = state.observe().telemetry() {
        out.head(
            "idem_duplicates_absorbed_total",
            "counter",
            "Duplicates idem stopped from taking effect again, by primitive (see docs/observability.md).",
        );
        for (p, n) in t.duplicates() {
            out.sample("idem_duplicates_absorbed_total", &[("primitive", p)], n as f64);
        }
        out.head("idem_command_outcomes_total", "counter", "Primitive commands answered, by command and outcome.");
        for (c, o, n) in t.outcomes() {
            out.sample("idem_command_outcomes_total", &[("command", c), ("outcome", o)], n as f64);
        }
        out.head(
            "idem_command_duration_seconds",
            "histogram",
            "Time from a batch going to the backend to its replies, per primitive command.",
        );
        for (c, h) in t.latencies() {
            for (i, n) in h.cumulative().iter().enumerate() {
                let le = LATENCY_US_BOUNDS.get(i).map_or("+Inf".to_string(), |b| secs(*b).to_string());
                out.sample("idem_command_duration_seconds_bucket", &[("command", c), ("le", &le)], *n as f64);
            }
            out.sample("idem_command_duration_seconds_sum", &[("command", c)], secs(h.sum_us));
            out.sample("idem_command_duration_seconds_count", &[("command", c)], h.count() as f64);
        }
    }

    if let Ok(n) = state.backend().dbsize().await {
        out.one("idem_records", "gauge", "Live records in the store, all primitives.", n as f64);
    }
    store_series(&mut out, &state.backend().info());

    // The series recorded through the `metrics` facade (`crate::metrics`),
    // when the process installed idem's exporter.
    idem_metrics::exporter::render(&mut out.0);
    out.0
}

/// The backend's INFO facts that are figures, as series. A backend that
/// does not report a field (external engines have no WAL) has no series.
fn store_series(out: &mut Out, info: &[(String, String)]) {
    let get = |k: &str| info.iter().find(|(f, _)| f == k).and_then(|(_, v)| v.parse::<f64>().ok());
    let mut records = Vec::new();
    for (k, v) in info {
        if let (Some(p), Ok(n)) = (k.strip_prefix("records_"), v.parse::<f64>()) {
            records.push((p, n));
        }
    }
    if !records.is_empty() {
        out.head("idem_live_records", "gauge", "Live records by primitive (embedded store).");
        for (p, n) in records {
            out.sample("idem_live_records", &[("primitive", p)], n);
        }
    }
    let plain: [(&str, &str, &str, &str, f64); 15] = [
        ("parked_waiters", "idem_parked_waiters", "gauge", "Callers parked with WAIT.", 1.0),
        ("storage_ok", "idem_storage_ok", "gauge", "0 once storage refused a write (READONLY).", 1.0),
        ("fence_next", "idem_fence_next", "gauge", "The next fence the store will grant.", 1.0),
        ("memory_used_bytes", "idem_store_memory_bytes", "gauge", "Estimated memory of the records.", 1.0),
        ("maxmemory_bytes", "idem_store_memory_max_bytes", "gauge", "The store's memory bound; 0 = none.", 1.0),
        ("recovery_ms", "idem_recovery_duration_seconds", "gauge", "Time the store took to open and recover.", 1e-3),
        ("log_records", "idem_wal_records_total", "counter", "Records appended to the write-ahead log.", 1.0),
        ("log_bytes", "idem_wal_bytes_total", "counter", "Bytes written to log segments.", 1.0),
        ("log_records_per_sync", "idem_wal_records_per_sync", "gauge", "Records per fdatasync since start.", 1.0),
        ("log_batch_records_max", "idem_wal_batch_records_max", "gauge", "Most records written in one batch.", 1.0),
        ("log_segments_started", "idem_wal_segments_started_total", "counter", "Log segments started.", 1.0),
        ("snapshots", "idem_snapshots_total", "counter", "Snapshots written since start.", 1.0),
        ("snapshot_ms_last", "idem_snapshot_duration_seconds_last", "gauge", "Duration of the last snapshot.", 1e-3),
        ("snapshot_bytes_last", "idem_snapshot_bytes_last", "gauge", "Size of the last snapshot file.", 1.0),
        ("snapshot_records_last", "idem_snapshot_records_last", "gauge", "Records in the last snapshot.", 1.0),
    ];
    for (field, name, kind, help, scale) in plain {
        if let Some(v) = get(field) {
            out.one(name, kind, help, v * scale);
        }
    }
    let buckets: Vec<(&str, f64)> = info
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("log_sync_us_bucket_")?, v.parse::<f64>().ok()?)))
        .collect();
    if let (false, Some(syncs), Some(sum_us)) = (buckets.is_empty(), get("log_syncs"), get("log_sync_us_total")) {
        let name = "idem_wal_sync_duration_seconds";
        out.head(name, "histogram", "fdatasync calls on log segments, by duration.");
        for (bound, n) in buckets {
            let le = if bound == "inf" {
                "+Inf".to_string()
            } else {
                (bound.parse::<f64>().unwrap_or(0.0) / 1e6).to_string()
            };
            out.sample(&format!("{name}_bucket"), &[("le", &le)], n);
        }
        out.sample(&format!("{name}_sum"), &[], sum_us / 1e6);
        out.sample(&format!("{name}_count"), &[], syncs);
    }
}

/// The process's resident memory, from /proc (Linux only).
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

/// The page size /proc/self/statm counts in: 4 KiB on the x86-64 and
/// aarch64 Linux kernels idem is built for.
const PAGE_BYTES: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_facts_become_series() {
        let info: Vec<(String, String)> = [
            ("records_idem", "3"),
            ("log_syncs", "2"),
            ("log_sync_us_total", "300"),
            ("log_sync_us_bucket_100", "1"),
            ("log_sync_us_bucket_inf", "2"),
            ("recovery_ms", "1500"),
            ("data_dir", "/x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut out = Out(String::new());
        store_series(&mut out, &info);
        let text = out.0;
        assert!(text.contains("idem_live_records{primitive=\"idem\"} 3\n"), "{text}");
        assert!(text.contains("idem_wal_sync_duration_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("idem_wal_sync_duration_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("idem_wal_sync_duration_seconds_count 2\n"), "{text}");
        assert!(text.contains("idem_recovery_duration_seconds 1.5\n"), "{text}");
        assert!(!text.contains("/x"));
    }
}
