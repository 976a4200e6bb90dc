//! The INFO sections that show the figures of `/metrics`: `outcomes`,
//! `duplicates`, `latency`, `records`, `wal` and `memory`.

use std::fmt::Write;

use super::render::resident_bytes;
use super::telemetry::LATENCY_US_BOUNDS;
use crate::state::ServerState;

/// The sections written here, in INFO's order.
pub(crate) const SECTIONS: [&str; 6] = ["duplicates", "outcomes", "latency", "records", "wal", "memory"];

/// Writes the body of `section` (one of [`SECTIONS`]) as `field:value` lines.
pub(crate) fn write_section(out: &mut String, section: &str, state: &ServerState) {
    // Writing to a String cannot fail.
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    let field = |s: &str| s.to_ascii_lowercase().replace('.', "_");
    let telemetry = state.observe().telemetry();
    match section {
        "duplicates" => {
            if let Some(t) = telemetry {
                let dups = t.duplicates();
                line("duplicates_absorbed", &dups.iter().map(|(_, n)| n).sum::<u64>());
                for (p, n) in dups {
                    line(&format!("duplicates_absorbed_{p}"), &n);
                }
            }
        }
        "outcomes" => {
            if let Some(t) = telemetry {
                for (c, o, n) in t.outcomes() {
                    line(&format!("outcome_{}_{o}", field(c)), &n);
                }
            }
        }
        "latency" => {
            if let Some(t) = telemetry {
                for (c, h) in t.latencies() {
                    let calls = h.count();
                    let quantile = |q: f64| match h.quantile_bound_us(&LATENCY_US_BOUNDS, q) {
                        u64::MAX => "inf".to_string(),
                        bound => bound.to_string(),
                    };
                    let value = format!(
                        "calls={calls},usec={},usec_per_call={:.2},p50_le_usec={},p99_le_usec={}",
                        h.sum_us,
                        h.sum_us as f64 / calls as f64,
                        quantile(0.5),
                        quantile(0.99)
                    );
                    line(&format!("latency_{}", field(c)), &value);
                }
            }
        }
        "records" | "wal" => {
            let wanted = |k: &str| {
                if section == "records" {
                    k.starts_with("records_") || k == "parked_waiters"
                } else {
                    (k.starts_with("log_") && !k.starts_with("log_sync_us_bucket_"))
                        || k.starts_with("snapshot")
                        || k == "recovery_ms"
                }
            };
            for (k, v) in state.backend().info() {
                if wanted(&k) {
                    line(&k, &v.replace(['\r', '\n'], " "));
                }
            }
        }
        _ => {
            if let Some(rss) = resident_bytes() {
                line("used_memory_rss", &rss);
            }
        }
    }
}
