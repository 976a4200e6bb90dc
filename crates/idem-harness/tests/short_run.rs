//! A short run of the harness on every store: the real idem binary under
//! kills (also during recovery), server pauses, holder stalls, restarts
//! into a shifted monotonic clock and wall-clock jumps (embedded), and a
//! faulty link to PostgreSQL and MariaDB (blackhole, half-open, reset,
//! latency), with the history checked. About 25 s of load per store; the
//! long runs are in docs/reliability.md.

use std::path::PathBuf;
use std::process::Command;

fn idem_bin() -> PathBuf {
    // A binary named by the environment (a release build, say) is used as
    // is; otherwise the harness runs the workspace's debug binary, built
    // here (a no-op when the workspace was built already).
    if let Some(bin) = std::env::var_os("IDEM_HARNESS_BIN") {
        return PathBuf::from(bin);
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "idem", "--bin", "idem"])
        .status()
        .expect("cargo build -p idem");
    assert!(status.success(), "building idem failed");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_idem-harness"));
    let bin = exe.with_file_name("idem");
    assert!(bin.is_file(), "no idem binary at {}", bin.display());
    bin
}

fn run(store: &str, nemeses: &str, seconds: u64) -> serde_json::Value {
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new(env!("CARGO_BIN_EXE_idem-harness"))
        .args(["--store", store, "--nemesis", nemeses, "--time", &format!("{seconds}s"), "--clients", "6"])
        .arg("--idem-bin")
        .arg(idem_bin())
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run idem-harness");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).expect("a report"))
            .expect("report.json");
    if !status.success() || report["verdict"] != "pass" {
        // Keep the history for `idem-harness --recheck` instead of deleting it.
        let kept = out.keep();
        panic!(
            "{store}: the harness found anomalies or could not decide; history kept in {}:\n{report:#}",
            kept.display()
        );
    }
    assert!(report["ops"].as_u64().unwrap() > 500, "{store}: too few ops to mean anything: {report:#}");
    report
}

/// How many faults of the given kinds the run injected.
fn injected(report: &serde_json::Value, kinds: &[&str]) -> u64 {
    kinds.iter().map(|k| report["injected"][k].as_u64().unwrap_or_else(|| panic!("no count {k}: {report:#}"))).sum()
}

const NET: [&str; 4] = ["net_blackholes", "net_half_opens", "net_resets", "net_latency"];

#[test]
fn embedded_under_kills_pauses_and_clock_shifts() {
    let r = run("embedded", "kill,pause,clock", 30);
    assert!(injected(&r, &["kills", "wall_clock_jumps"]) > 0, "{r:#}");
    assert!(r["side"]["durability_reads"].as_u64().unwrap() > 0, "{r:#}");
}

#[test]
fn postgres_under_kills_pauses_and_link_faults() {
    let r = run("postgres", "kill,pause,net", 20);
    assert!(injected(&r, &[&["kills"][..], &NET[..]].concat()) > 0, "{r:#}");
}

#[test]
fn mysql_under_kills_pauses_and_link_faults() {
    let r = run("mysql", "kill,pause,net", 20);
    assert!(injected(&r, &[&["kills"][..], &NET[..]].concat()) > 0, "{r:#}");
}

// Out of the default suite for its cost (about 80 s, most of it the
// checker: every READONLY is an unknown outcome, so the search is wide and
// can end undecided). Its finding, reads showing writes refused with
// READONLY, is fixed and pinned by crates/idem-store/tests/engine_storage_failure.rs
// (docs/reliability.md). Run it with `--ignored`.
#[test]
#[ignore = "about 80 s; its finding is fixed and pinned by idem-store's engine_storage_failure test"]
fn embedded_under_disk_faults() {
    let r = run("embedded", "disk", 20);
    assert!(injected(&r, &["disk_full", "sync_eio"]) > 0, "{r:#}");
    // Every fault failed the log, and no failed sync was retried.
    assert_eq!(r["injected"]["storage_failures_seen"], injected(&r, &["disk_full", "sync_eio"]), "{r:#}");
    assert_eq!(r["injected"]["sync_calls_failed"], r["injected"]["sync_eio"], "{r:#}");
}

#[test]
fn redis_under_kills_and_pauses() {
    let r = run("redis", "kill,pause", 20);
    assert!(r["injected"]["kills"].as_u64().unwrap() > 0, "{r:#}");
}
