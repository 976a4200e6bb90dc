//! Scenario S2 at a small size, through the `idem-broker-s2` binary: consumer
//! processes crash or are SIGKILLed and restarted, and the effects are counted
//! in PostgreSQL. The big runs are documented in docs/brokers.md.

use std::collections::HashMap;
use std::process::Command;

/// Runs the scenario and returns its report line as a map.
fn run(args: &[&str]) -> HashMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_idem-broker-s2"))
        .arg("run")
        .args(args)
        .args(["--deadline-s", "60"])
        .output()
        .expect("run idem-broker-s2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "idem-broker-s2 failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("scenario=")).expect("a report line");
    line.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

fn num(report: &HashMap<String, String>, field: &str) -> u64 {
    report[field].parse().unwrap_or_else(|_| panic!("{field} in {report:?}"))
}

/// A process dies between its effect (an autocommit insert) and its record:
/// the adapter runs the order again (the documented gap); the inbox, whose
/// record is in the insert's transaction, does not. One handler per worker,
/// so the crash interrupts that one order's handler; but the adapter commits
/// a message after its handler slot is free, so the commit of the order
/// before it (or, on a slow machine, the one before that) can still be on its
/// way when the process dies, and that order runs again too.
fn crash_window(broker: &str) {
    let common = ["--broker", broker, "--messages", "40", "--dup-every", "4", "--workers", "2"];
    let common =
        [&common[..], &["--kill-every-ms", "0", "--rate", "0", "--concurrency", "1", "--crash-after-effect", "o-7"]]
            .concat();
    let adapter = run(&[&common[..], &["--variant", "adapter"]].concat());
    assert_eq!(num(&adapter, "restarts"), 1, "{adapter:?}");
    let dups = num(&adapter, "duplicate_effects");
    assert!((1..=3).contains(&dups), "the crashed order, plus at most the commits still on their way: {adapter:?}");
    assert_eq!(num(&adapter, "lost"), 0, "{adapter:?}");
    let inbox = run(&[&common[..], &["--variant", "inbox"]].concat());
    assert_eq!(num(&inbox, "restarts"), 1, "{inbox:?}");
    assert_eq!(num(&inbox, "duplicate_effects"), 0, "{inbox:?}");
    assert_eq!(num(&inbox, "lost"), 0, "{inbox:?}");
}

/// Workers SIGKILLed repeatedly while duplicates are published: the naive
/// consumer applies duplicates, the inbox applies every order exactly once.
fn kills(broker: &str) {
    let common = ["--broker", broker, "--messages", "150", "--dup-every", "5", "--workers", "2"];
    let common = [&common[..], &["--kill-every-ms", "250", "--rate", "300"]].concat();
    let naive = run(&[&common[..], &["--variant", "naive"]].concat());
    // At least the 30 published duplicates.
    assert!(num(&naive, "duplicate_effects") >= 30, "{naive:?}");
    let inbox = run(&[&common[..], &["--variant", "inbox"]].concat());
    assert!(num(&inbox, "kills") >= 1, "{inbox:?}");
    assert_eq!(num(&inbox, "duplicate_effects"), 0, "{inbox:?}");
    assert_eq!(num(&inbox, "lost"), 0, "{inbox:?}");
    assert_eq!(num(&inbox, "dead_letters"), 0, "{inbox:?}");
}

#[test]
fn jetstream_crash_between_effect_and_record() {
    crash_window("jetstream");
}

#[test]
fn rabbitmq_crash_between_effect_and_record() {
    crash_window("rabbitmq");
}

#[test]
fn jetstream_killed_workers() {
    kills("jetstream");
}

#[test]
fn rabbitmq_killed_workers() {
    kills("rabbitmq");
}
