//! A deterministic driver for instruction counts of `Machine::apply`, to run
//! under callgrind (the criterion benches are too noisy on a shared box):
//!
//! ```text
//! cargo build --release -p idem-bench --example machine_ir
//! valgrind --tool=callgrind --toggle-collect='*timed_applies*' \
//!     target/release/examples/machine_ir begin_new 100000
//! ```
//!
//! Only `timed_applies` is counted, so Ir / N is the cost of one command.
//! Workloads: `begin_new`, `commit`, `begin_done`, `claim_new`, `lock_new`,
//! `lock_again`, `counter_new`, `counter_add`.

use std::hint::black_box;

use idem_bench::{begin, claim, commit, counter_add, key, lock};
use idem_core::machine::{Applied, Effects, Machine, SeqEnv};
use idem_core::{Command, Limits};

const NOW_MS: u64 = 1_000;

fn apply(m: &mut Machine, cmd: &Command, env: &mut SeqEnv, effects: &mut Effects) {
    match m.apply(NOW_MS, cmd, None, env, effects) {
        Applied::Done(Ok(r)) => {
            black_box(r);
        }
        other => panic!("unexpected outcome {other:?} for {cmd:?}"),
    }
    effects.clear();
}

/// The measured region: applies every command once.
#[inline(never)]
fn timed_applies(m: &mut Machine, cmds: &[Command], env: &mut SeqEnv, effects: &mut Effects) {
    for cmd in cmds {
        apply(m, cmd, env, effects);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "begin_new".into());
    let n: u64 = args.next().map_or(100_000, |s| s.parse().expect("N is a number"));
    let mut m = Machine::new(Limits::default());
    let mut env = SeqEnv::default();
    let mut effects = Effects::default();
    let cmds: Vec<Command> = match workload.as_str() {
        "begin_new" => (0..n).map(|i| begin(key(i))).collect(),
        "commit" => (0..n)
            .map(|i| {
                apply(&mut m, &begin(key(i)), &mut env, &mut effects);
                commit(key(i), env.fence)
            })
            .collect(),
        "begin_done" => (0..n)
            .map(|i| {
                apply(&mut m, &begin(key(i)), &mut env, &mut effects);
                apply(&mut m, &commit(key(i), env.fence), &mut env, &mut effects);
                begin(key(i))
            })
            .collect(),
        "claim_new" => (0..n).map(|i| claim(key(i))).collect(),
        "lock_new" => (0..n).map(|i| lock(key(i), 3_600_000)).collect(),
        // The holder locks again with another lease: the deadline moves.
        "lock_again" => (0..n)
            .map(|i| {
                apply(&mut m, &lock(key(i), 3_600_000), &mut env, &mut effects);
                lock(key(i), 3_600_001)
            })
            .collect(),
        "counter_new" => (0..n).map(|i| counter_add(key(i))).collect(),
        "counter_add" => (0..n)
            .map(|i| {
                apply(&mut m, &counter_add(key(i)), &mut env, &mut effects);
                counter_add(key(i))
            })
            .collect(),
        other => panic!("unknown workload {other}"),
    };
    timed_applies(&mut m, &cmds, &mut env, &mut effects);
    println!("{workload} {n}: {} records", m.len());
}
