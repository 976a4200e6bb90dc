//! `idem-scenario s2 --broker B [--kill]` through the binary: the consumer
//! processes are `idem-scenario s2-worker` children of the scenario, and the counts
//! come from the PostgreSQL effects table. Without kills every count is
//! exact and checked exactly; the runs with kills (tens of seconds) are
//! `#[ignore]`d, their figures are in docs/scenarios.md.

use std::collections::HashMap;
use std::process::Command;

/// Runs the scenario; returns its lines as maps, keyed by variant (the
/// summary under "summary").
fn scenario(args: &[&str]) -> HashMap<String, HashMap<String, String>> {
    let out =
        Command::new(env!("CARGO_BIN_EXE_idem-scenario")).arg("s2").args(args).output().expect("run idem-scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "idem-scenario failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = HashMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("scenario=s2 ")) {
        println!("{line}");
        let fields: HashMap<String, String> =
            line.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        let variant = fields.get("variant").cloned().unwrap_or_else(|| "summary".into());
        lines.insert(variant, fields);
    }
    lines
}

fn num(lines: &HashMap<String, HashMap<String, String>>, variant: &str, field: &str) -> u64 {
    let line = &lines[variant];
    line[field].parse().unwrap_or_else(|_| panic!("{field} in {line:?}"))
}

/// 100 orders, every fifth published twice (20 duplicates), no kills: the
/// naive consumers apply each duplicate, the adapter and the inbox none.
#[test]
fn s2_on_rabbitmq_counts_the_published_duplicates_per_variant() {
    let lines = scenario(&["--broker", "rabbitmq", "--size", "100"]);
    assert_eq!(lines.len(), 4, "three variants and the summary: {lines:?}");
    for v in ["naive", "adapter", "inbox"] {
        assert_eq!(lines[v]["broker"], "rabbitmq");
        assert_eq!(num(&lines, v, "published"), 120, "{v}");
        assert_eq!(num(&lines, v, "kills"), 0, "{v}");
        assert_eq!(num(&lines, v, "lost"), 0, "{v}");
    }
    assert_eq!(num(&lines, "naive", "duplicate_effects"), 20);
    assert_eq!(num(&lines, "adapter", "duplicate_effects"), 0);
    assert_eq!(num(&lines, "inbox", "duplicate_effects"), 0);
    assert_eq!(num(&lines, "summary", "naive_anomalies"), 20);
    assert_eq!(num(&lines, "summary", "idem_anomalies"), 0);
}

/// Consumers SIGKILLed every 300 ms while 1,000 orders are published: the
/// inbox is exact; the adapter loses nothing and its only duplicates are
/// orders whose worker died between the insert and the commit.
fn killed(broker: &str) {
    let lines = scenario(&["--broker", broker, "--kill", "--size", "1000"]);
    for v in ["naive", "adapter", "inbox"] {
        assert!(num(&lines, v, "kills") > 0, "{v}: {:?}", lines[v]);
        assert_eq!(num(&lines, v, "lost"), 0, "{v}: {:?}", lines[v]);
    }
    assert!(num(&lines, "naive", "duplicate_effects") >= 200, "{:?}", lines["naive"]);
    assert!(num(&lines, "adapter", "duplicate_effects") < 200, "{:?}", lines["adapter"]);
    assert_eq!(num(&lines, "inbox", "duplicate_effects"), 0, "{:?}", lines["inbox"]);
}

#[test]
#[ignore = "tens of seconds: run with --ignored; figures in docs/scenarios.md"]
fn s2_on_jetstream_with_killed_consumers() {
    killed("jetstream");
}

#[test]
#[ignore = "tens of seconds: run with --ignored; figures in docs/scenarios.md"]
fn s2_on_rabbitmq_with_killed_consumers() {
    killed("rabbitmq");
}
