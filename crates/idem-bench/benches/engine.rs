//! Microbenchmarks of the engine's hot paths, without RESP, sockets or disk:
//! - `parse/*`: `Command::parse` of the benchmark's command lines;
//! - `machine/*`: `Machine::apply` of IDEM.BEGIN (new key, and the replay of
//!   a done key), IDEM.COMMIT, CLAIM and COUNTER.ADD;
//! - `store/*`: the memory-only `Store::execute_batch` (shard lock, apply,
//!   no log) with pipelines of 1 and 16 IDEM.BEGINs.
//!
//! Writes must meet fresh keys (a BEGIN on a running key is a read), so the
//! write benchmarks build their commands in chunks outside the timed region
//! and time only the applies (`iter_custom`). A machine is replaced after
//! `KEYS_PER_MACHINE` keys so its size stays in the range of the load
//! benchmark (up to ~1M records).
//!
//! Run: `cargo bench -p idem-bench --bench engine` (add `-- machine/` to filter).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use idem_bench::{args, begin, claim, commit, counter_add, key, poll_once};
use idem_core::machine::{Applied, Effects, Machine, SeqEnv};
use idem_core::{Command, Limits, Reply};
use idem_store::{Store, StoreConfig};

/// Commands built per untimed chunk.
const CHUNK: u64 = 16 * 1024;

/// Keys a machine takes before the benchmark starts a new one.
const KEYS_PER_MACHINE: u64 = 1 << 20;

/// Keys of the update-in-place benchmarks (COUNTER.ADD on existing counters).
const HOT_KEYS: u64 = 64 * 1024;

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let lines = [
        ("IDEM.BEGIN", "IDEM.BEGIN k000000000012345 LEASE 30000"),
        ("IDEM.COMMIT", "IDEM.COMMIT k000000000012345 1048577 ok:0123456789abcdef0123456789abc"),
        ("CLAIM", "CLAIM k000000000012345 owner1"),
        ("COUNTER.ADD", "COUNTER.ADD k000000000012345 1"),
        ("LOCK", "LOCK k000000000012345 owner1 LEASE 30000"),
    ];
    for (name, line) in lines {
        let a = args(line);
        Command::parse(&a, &limits).expect("benchmark lines parse");
        g.bench_function(name, |b| b.iter(|| Command::parse(black_box(&a), &limits)));
    }
    g.finish();
}

/// Applies `cmd` and returns its reply; clears the effects as the engine does.
fn apply(m: &mut Machine, now_ms: u64, cmd: &Command, env: &mut SeqEnv, effects: &mut Effects) -> Reply {
    let r = match m.apply(now_ms, cmd, None, env, effects) {
        Applied::Done(Ok(r)) => r,
        other => panic!("unexpected outcome {other:?} for {cmd:?}"),
    };
    effects.clear();
    r
}

/// Times `timed` over `iters` fresh keys, chunk by chunk. `prepare` builds a
/// chunk's commands for keys `first..first+n` on the current machine (untimed).
fn fresh_keys<P, T>(iters: u64, mut prepare: P, mut timed: T) -> Duration
where
    P: FnMut(&mut Machine, &mut SeqEnv, u64, u64) -> Vec<Command>,
    T: FnMut(&mut Machine, &mut SeqEnv, &Command),
{
    let mut total = Duration::ZERO;
    let mut env = SeqEnv::default();
    let mut m = Machine::new(Limits::default());
    let mut in_machine = 0u64;
    let mut done = 0u64;
    while done < iters {
        if in_machine >= KEYS_PER_MACHINE {
            m = Machine::new(Limits::default());
            in_machine = 0;
        }
        let n = CHUNK.min(iters - done);
        let cmds = prepare(&mut m, &mut env, in_machine, n);
        let started = Instant::now();
        for cmd in &cmds {
            timed(&mut m, &mut env, cmd);
        }
        total += started.elapsed();
        drop(cmds);
        in_machine += n;
        done += n;
    }
    total
}

fn machine(c: &mut Criterion) {
    let now_ms = 1_000;
    let mut g = c.benchmark_group("machine");
    g.throughput(Throughput::Elements(1));

    g.bench_function("idem_begin_new", |b| {
        b.iter_custom(|iters| {
            let mut effects = Effects::default();
            fresh_keys(
                iters,
                |_, _, first, n| (first..first + n).map(|i| begin(key(i))).collect(),
                |m, env, cmd| {
                    black_box(apply(m, now_ms, cmd, env, &mut effects));
                },
            )
        })
    });

    g.bench_function("idem_commit", |b| {
        b.iter_custom(|iters| {
            let mut effects = Effects::default();
            let mut setup_fx = Effects::default();
            fresh_keys(
                iters,
                |m, env, first, n| {
                    (first..first + n)
                        .map(|i| {
                            let k = key(i);
                            let fence = match apply(m, now_ms, &begin(k.clone()), env, &mut setup_fx) {
                                Reply::Array(v) => match v.get(1) {
                                    Some(Reply::Int(f)) => *f as u64,
                                    _ => panic!("BEGIN replied without a fence"),
                                },
                                r => panic!("BEGIN replied {r:?}"),
                            };
                            commit(k, fence)
                        })
                        .collect()
                },
                |m, env, cmd| {
                    black_box(apply(m, now_ms, cmd, env, &mut effects));
                },
            )
        })
    });

    // The dedup hit: BEGIN on a key that is done replays its result.
    g.bench_function("idem_begin_done", |b| {
        let mut env = SeqEnv::default();
        let mut effects = Effects::default();
        let mut m = Machine::new(Limits::default());
        let begins: Vec<Command> = (0..HOT_KEYS).map(|i| begin(key(i))).collect();
        for (i, cmd) in begins.iter().enumerate() {
            apply(&mut m, now_ms, cmd, &mut env, &mut effects);
            apply(&mut m, now_ms, &commit(key(i as u64), env.fence), &mut env, &mut effects);
        }
        let mut i = 0;
        b.iter(|| {
            let r = apply(&mut m, now_ms, &begins[i], &mut env, &mut effects);
            i = (i + 1) % begins.len();
            r
        })
    });

    g.bench_function("claim_new", |b| {
        b.iter_custom(|iters| {
            let mut effects = Effects::default();
            fresh_keys(
                iters,
                |_, _, first, n| (first..first + n).map(|i| claim(key(i))).collect(),
                |m, env, cmd| {
                    black_box(apply(m, now_ms, cmd, env, &mut effects));
                },
            )
        })
    });

    g.bench_function("counter_add", |b| {
        let mut env = SeqEnv::default();
        let mut effects = Effects::default();
        let mut m = Machine::new(Limits::default());
        let adds: Vec<Command> = (0..HOT_KEYS).map(|i| counter_add(key(i))).collect();
        let mut i = 0;
        b.iter(|| {
            let r = apply(&mut m, now_ms, &adds[i], &mut env, &mut effects);
            i = (i + 1) % adds.len();
            r
        })
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    for pipeline in [1u64, 16] {
        g.throughput(Throughput::Elements(pipeline));
        g.bench_function(format!("execute_batch_begin_p{pipeline}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut store: Arc<Store> = Store::open(StoreConfig::default()).expect("memory-only store opens");
                let (mut in_store, mut done) = (0u64, 0u64);
                while done < iters {
                    if in_store >= KEYS_PER_MACHINE {
                        store = Store::open(StoreConfig::default()).expect("memory-only store opens");
                        in_store = 0;
                    }
                    let n = (CHUNK / pipeline).min(iters - done);
                    let batches: Vec<Vec<Command>> = (0..n)
                        .map(|j| {
                            let first = in_store + j * pipeline;
                            (first..first + pipeline).map(|i| begin(key(i))).collect()
                        })
                        .collect();
                    let started = Instant::now();
                    for batch in batches {
                        let results = poll_once(idem_core::Backend::execute_batch(&*store, batch));
                        black_box(results);
                    }
                    total += started.elapsed();
                    in_store += n * pipeline;
                    done += n;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, machine, store);
criterion_main!(benches);
