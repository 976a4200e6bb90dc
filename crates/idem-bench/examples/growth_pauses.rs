//! The longest single command while a table grows: applies `N` commands on
//! new keys to one `Machine` and prints the slowest ones. Before the tables
//! grew incrementally (`idem-core/src/machine/grow.rs`), the command that
//! found a table full moved every entry into a table twice the size.
//!
//! ```text
//! cargo run --release -p idem-bench --example growth_pauses -- begin 2000000
//! ```
//!
//! Workloads: `begin` (IDEM.BEGIN), `claim` (CLAIM), `counter` (COUNTER.ADD).
//! Prints the time per command, and every command slower than 200 µs.

use std::time::{Duration, Instant};

use idem_bench::{begin, claim, counter_add, key};
use idem_core::machine::{Effects, Machine, SeqEnv};
use idem_core::{Command, Limits};

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "begin".into());
    let n: u64 = args.next().map_or(2_000_000, |s| s.parse().expect("N is a number"));
    let make: fn(u64) -> Command = match workload.as_str() {
        "begin" => |i| begin(key(i)),
        "claim" => |i| claim(key(i)),
        "counter" => |i| counter_add(key(i)),
        other => panic!("unknown workload {other}: begin, claim or counter"),
    };
    let cmds: Vec<Command> = (0..n).map(make).collect();
    let mut m = Machine::new(Limits::default());
    let mut env = SeqEnv::default();
    let mut effects = Effects::default();
    let mut slow = Vec::new();
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    for (i, cmd) in cmds.iter().enumerate() {
        let t = Instant::now();
        let _ = m.apply(1_000, cmd, None, &mut env, &mut effects);
        effects.clear();
        let took = t.elapsed();
        worst = worst.max(took);
        if took > Duration::from_micros(200) {
            slow.push((i, took));
        }
    }
    let total = started.elapsed();
    println!(
        "{workload}: {n} commands in {total:.2?}, {:.0} ns each; slowest {worst:.2?}",
        total.as_nanos() as f64 / n as f64
    );
    for (i, took) in slow {
        println!("  command {i} (table of {i} entries): {took:.2?}");
    }
}
