//! idem-harness: the real `idem` binary on a chosen store, concurrent
//! clients over every primitive, injected faults, a recorded JSONL history,
//! and its check by idem-check.
//!
//! ```text
//! idem-harness --store embedded|postgres|mysql|redis --nemesis kill,pause,clock,disk,net --time 60s
//! ```
//!
//! Exit status: 0 when the history passes every check, 1 when an anomaly
//! is found, 2 when the checker's budget ran out (unknown is never a pass).

mod client;
mod disk;
mod engines;
mod hostclock;
mod nemesis;
mod proxy;
mod recorder;
mod resource;
mod server;
mod wallclock;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use idem_check::history::History;
use idem_check::side::FenceScope;
use idem_check::{check_linearizable, check_side, CheckOptions, SideOptions, Verdict};

use crate::engines::{Engine, Store};
use crate::nemesis::{Injected, Nemesis};
use crate::recorder::Recorder;
use crate::server::{Launch, Server};
use crate::workload::{Shared, Stats};

#[derive(Parser, Debug)]
#[command(about = "Runs idem under faults, records the history and checks it.")]
struct Args {
    /// The store idem runs on; external stores run as private instances.
    #[arg(long, value_enum, default_value = "embedded")]
    store: Store,
    /// Faults to inject, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    nemesis: Vec<Nemesis>,
    /// How long the clients run, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    time: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Seed of the workload and the nemesis schedule (random by default).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the history, logs and report go [default: target/harness/<store>-<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The idem binary [default: `idem` next to this binary].
    #[arg(long, env = "IDEM_HARNESS_BIN")]
    idem_bin: Option<PathBuf>,
    /// The checker's budget in seconds; when it runs out the verdict is unknown.
    #[arg(long, default_value_t = 300)]
    budget_s: u64,
    /// Check an existing history file instead of running (with --store for
    /// the fence scope).
    #[arg(long)]
    recheck: Option<PathBuf>,
    /// Persistence of the private Redis (`none` shows what idem's promise
    /// rests on: a killed Redis loses acknowledged writes).
    #[arg(long, value_enum, default_value = "always")]
    redis_persistence: engines::RedisPersistence,
    /// Hold idem to the contract's letter: every BUSY reply changed nothing
    /// (by default a BUSY after a broken store connection is unknown).
    #[arg(long)]
    busy_changes_nothing: bool,
    /// Extra environment for idem, KEY=VALUE (repeatable).
    #[arg(long = "idem-env")]
    idem_env: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("not a duration: {s}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("unknown unit in {s} (ms, s, m, h)")),
    }
}

fn default_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let bin = dir.join("idem");
        if bin.is_file() {
            return Ok(bin);
        }
    }
    bail!("no idem binary next to {}: build it (cargo build -p idem) or pass --idem-bin", exe.display())
}

/// The run's figures, written as report.json.
#[derive(serde::Serialize)]
struct Report {
    store: String,
    nemeses: Vec<String>,
    seed: u64,
    seconds: u64,
    ops: usize,
    ops_unknown: usize,
    ops_failed: usize,
    injected: Injected,
    /// Steps of the host's wall clock seen during the run (not injected).
    host_clock: hostclock::Seen,
    client_pauses: u64,
    stale_writes_refused: u64,
    stale_writes_accepted: u64,
    fenced_writes: u64,
    linearizability: idem_check::LinearReport,
    side: idem_check::SideReport,
    resource_anomalies: Vec<String>,
    check_ms: u64,
    verdict: Verdict,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.recheck {
        return recheck(path, &args);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/harness").join(format!("{}-{seed}", format!("{:?}", args.store).to_lowercase()))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Absolute: engines change their working directory.
    let out = out.canonicalize()?;
    let bin = match &args.idem_bin {
        Some(b) => b.clone(),
        None => default_bin()?,
    };
    let work = tempfile_dir(&out)?;
    eprintln!(
        "idem-harness: store {:?}, nemeses {:?}, {:?}, seed {seed}, out {}",
        args.store,
        args.nemesis,
        args.time,
        out.display()
    );

    let mut engine = match args.store {
        Store::Embedded => None,
        store => Some(Engine::start(store, &work, args.redis_persistence)?),
    };
    let rig = nemesis::Rig::prepare(&args.nemesis, args.store, &work, engine.as_ref())?;
    let store_url = rig.store_url(engine.as_ref());
    if let Some(url) = &store_url {
        if matches!(args.store, Store::Postgres | Store::Mysql) {
            let st = std::process::Command::new(&bin).args(["migrate", "--store", url]).output()?;
            if !st.status.success() {
                bail!("idem migrate failed: {}", String::from_utf8_lossy(&st.stderr));
            }
        }
    }
    let mut env = rig.env();
    for kv in &args.idem_env {
        let (k, v) = kv.split_once('=').with_context(|| format!("--idem-env {kv}: expected KEY=VALUE"))?;
        env.push((k.to_string(), v.to_string()));
    }
    let launch = Launch { bin, store_url, data: rig.data_dir(work.join("idem-data")), logs: out.clone(), env };
    let mut server = Server::new(launch);
    server.spawn(None)?;
    server.wait_ready()?;

    let history_path = out.join("history.jsonl");
    let rec = Arc::new(Recorder::create(&history_path)?);
    let host_clock = hostclock::HostClockWatch::start(rec.clone())?;
    let shared = Arc::new(Shared {
        rec: rec.clone(),
        ids: Default::default(),
        url: server.url(),
        prefix: format!("h{seed:x}"),
        start: Instant::now(),
        stop: AtomicBool::new(false),
        resources: Default::default(),
        stats: Stats::default(),
        recent: Default::default(),
        stall_next_holder: AtomicBool::new(false),
        busy_changes_nothing: args.busy_changes_nothing,
        acked_elements: Mutex::new(Default::default()),
        live_holder_refusals: Mutex::new(Vec::new()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let clients: Vec<_> =
        (0..args.clients).map(|i| runtime.spawn(workload::run_client(shared.clone(), seed ^ (i + 1)))).collect();
    let injected = Injected::default();
    let until = Instant::now() + args.time;
    let nemesis_result = nemesis::run(
        &mut server,
        engine.as_mut(),
        &rig,
        &shared,
        nemesis::Plan { nemeses: &args.nemesis, until, seed },
        runtime.handle(),
        &injected,
    );
    shared.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for c in clients {
            let _ = c.await;
        }
    });
    // Final reads of what was acknowledged, after the last fault.
    runtime.block_on(workload::verify_recent(shared.clone()));
    let host_clock = host_clock.stop();
    rec.flush()?;
    drop(runtime);
    server.kill();
    drop(engine);
    drop(rig);
    nemesis_result?;

    let checked = Instant::now();
    let file = std::fs::File::open(&history_path)?;
    let history = History::from_jsonl(std::io::BufReader::new(file))?;
    let lin = check_linearizable(
        &history,
        CheckOptions { budget: Duration::from_secs(args.budget_s), ..CheckOptions::default() },
    );
    let fences = if args.store == Store::Redis { FenceScope::PerKey } else { FenceScope::Global };
    let mut side = check_side(&history, SideOptions { fences, wall_clock_leases: args.store != Store::Embedded });
    let check_ms = checked.elapsed().as_millis() as u64;

    // The protected sets: every acknowledged fenced write is still there.
    let mut resource_anomalies = Vec::new();
    let sets = shared.resources.all();
    for (name, elements) in shared.acked_elements.lock().expect("acked").iter() {
        let set = sets.get(name).cloned().unwrap_or_default();
        for e in elements {
            if !set.contains(e) {
                resource_anomalies.push(format!("lost update: {name} lost {e}"));
            }
        }
    }
    for (what, at, end) in shared.live_holder_refusals.lock().expect("refusals").iter() {
        let excused = history.fault_during(&[idem_check::history::Fault::Clock], *at, *end);
        if !excused {
            resource_anomalies.push(format!("{what}: refused at {at} ns while its lease ran until {end} ns"));
        } else {
            side.excused_overlaps += 1;
        }
    }
    let anomalies = lin.problems.iter().filter(|p| p.verdict == Verdict::Fail).count()
        + side.anomalies.len()
        + resource_anomalies.len();
    let verdict = if anomalies > 0 { Verdict::Fail } else { lin.verdict };
    let st = &shared.stats;
    let report = Report {
        store: format!("{:?}", args.store).to_lowercase(),
        nemeses: args.nemesis.iter().map(|n| format!("{n:?}").to_lowercase()).collect(),
        seed,
        seconds: args.time.as_secs(),
        ops: history.ops().len(),
        ops_unknown: lin.unknown_ops,
        ops_failed: history.failed(),
        injected,
        host_clock,
        client_pauses: st.client_pauses.load(Ordering::Relaxed),
        stale_writes_refused: st.stale_writes_refused.load(Ordering::Relaxed),
        stale_writes_accepted: st.stale_writes_accepted.load(Ordering::Relaxed),
        fenced_writes: st.fenced_writes.load(Ordering::Relaxed),
        linearizability: lin,
        side,
        resource_anomalies,
        check_ms,
        verdict,
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("report.json"), &json)?;
    println!("{json}");
    eprintln!(
        "idem-harness: {} ops ({} unknown), kills {}, pauses {}, client pauses {}, host clock steps {} (largest {} µs), excused overlaps {}, anomalies {anomalies}, check {} ms: {:?}",
        report.ops,
        report.ops_unknown,
        report.injected.kills.load(Ordering::Relaxed),
        report.injected.pauses.load(Ordering::Relaxed),
        report.client_pauses,
        report.host_clock.steps,
        report.host_clock.largest_us,
        report.side.excused_overlaps,
        check_ms,
        verdict
    );
    let _ = std::fs::remove_dir_all(&work);
    match verdict {
        Verdict::Pass => Ok(()),
        Verdict::Fail => std::process::exit(1),
        Verdict::Unknown => std::process::exit(2),
    }
}

/// A private working directory for data (removed at the end).
fn tempfile_dir(out: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = out.join("work");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Checks a recorded history again, printing both reports.
fn recheck(path: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let history = History::from_jsonl(std::io::BufReader::new(std::fs::File::open(path)?))?;
    let lin = check_linearizable(
        &history,
        CheckOptions { budget: Duration::from_secs(args.budget_s), ..CheckOptions::default() },
    );
    let fences = if args.store == Store::Redis { FenceScope::PerKey } else { FenceScope::Global };
    let side = check_side(&history, SideOptions { fences, wall_clock_leases: args.store != Store::Embedded });
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "linearizability": lin, "side": side }))?);
    eprintln!("idem-harness: checked {} ops in {} ms", history.ops().len(), started.elapsed().as_millis());
    let failed = lin.verdict == Verdict::Fail || !side.anomalies.is_empty();
    std::process::exit(if failed {
        1
    } else if lin.verdict == Verdict::Unknown {
        2
    } else {
        0
    })
}
