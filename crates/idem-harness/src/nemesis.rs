//! Faults, injected one at a time at random moments, each recorded in the
//! history as a window.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use idem_check::history::Fault;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::disk::{idem_pid, LoopFs, SyncEio};
use crate::engines::{Engine, Store};
use crate::proxy::{Mode, Proxy};
use crate::server::Server;
use crate::wallclock::{WallClock, JUMPS_S};
use crate::workload::{verify_recent, Shared};

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Nemesis {
    /// SIGKILL the server and restart it, sometimes again during recovery.
    Kill,
    /// SIGSTOP the server, then SIGCONT; and stall a lock holder past its
    /// lease.
    Pause,
    /// Half the time restart the server into a shifted monotonic clock (a
    /// time namespace); the other half make its wall clock jump
    /// (libfaketime), with no restart.
    Clock,
    /// Only the wall-clock jumps of `clock`.
    Wallclock,
    /// The embedded store's disk fails: full, or every sync answers EIO;
    /// then idem is killed and restarted (recovery is by restart).
    Disk,
    /// The TCP link between idem and its external store fails: blackhole,
    /// half-open, reset or added latency (a fault proxy).
    Net,
    /// SIGKILL the external store's engine and restart it.
    Store,
    /// Not a fault but a broken idem: SIGKILL it and restart it on an empty
    /// data directory, as a server that acknowledged before its sync and
    /// reissues fences after a restart would behave. The checker must
    /// report it.
    Amnesia,
}

/// How many of each fault a run injected.
#[derive(Default, Debug, serde::Serialize)]
pub struct Injected {
    pub kills: AtomicU64,
    pub kills_during_recovery: AtomicU64,
    pub pauses: AtomicU64,
    pub clock_restarts: AtomicU64,
    pub store_kills: AtomicU64,
    pub wall_clock_jumps: AtomicU64,
    pub disk_full: AtomicU64,
    pub sync_eio: AtomicU64,
    /// Disk faults after which idem reported its log failed (INFO's
    /// `storage_failure`) within `STORAGE_FAILURE_WAIT`.
    pub storage_failures_seen: AtomicU64,
    /// Sync calls strace failed with EIO, over all `sync_eio` faults: one
    /// per fault when idem never retries a failed sync.
    pub sync_calls_failed: AtomicU64,
    pub net_blackholes: AtomicU64,
    pub net_half_opens: AtomicU64,
    pub net_resets: AtomicU64,
    pub net_latency: AtomicU64,
}

/// The quiet time between faults, ms.
const GAP_MS: std::ops::Range<u64> = 300..1500;
/// How long a server pause lasts, ms.
const PAUSE_MS: std::ops::Range<u64> = 200..2000;
/// Monotonic clock shifts for a restart, s: backwards (a reboot's clock
/// starts low) and far forwards.
const CLOCK_SHIFTS_S: [i64; 4] = [-600, -60, 3_600, 2_592_000];
/// How long a disk fault may take to fail idem's log before it is ended
/// anyway (a fault that no write met).
const STORAGE_FAILURE_WAIT: Duration = Duration::from_secs(10);
/// How long idem stays failed (answering READONLY) before its restart, ms.
/// Short: every READONLY is an unknown outcome (durability.md: the refused
/// write may have reached the disk), and a client refused at once calls
/// again, so a long hold floods the history with unknown ops that the
/// linearizability search must place.
const DISK_HOLD_MS: std::ops::Range<u64> = 0..100;
/// How long a blackhole or half-open link lasts, ms.
const NET_CUT_MS: std::ops::Range<u64> = 500..3000;
/// How long a reset link refuses new connections, ms.
const NET_RESET_MS: std::ops::Range<u64> = 100..1000;
/// How long added latency lasts, and how much is added per chunk, ms.
const NET_SLOW_MS: std::ops::Range<u64> = 1000..4000;
const NET_LATENCY_MS: std::ops::Range<u64> = 20..300;

/// What the run's nemeses need set up before idem starts: libfaketime's
/// control file, the loop-mounted data file system, the fault proxy.
/// Dropping it unmounts and stops them (idem must be down by then).
#[derive(Default)]
pub struct Rig {
    wall: Option<WallClock>,
    // Declared before the file system: dropped (detached) first.
    eio_log: Option<PathBuf>,
    disk: Option<LoopFs>,
    proxy: Option<Proxy>,
}

impl Rig {
    pub fn prepare(nemeses: &[Nemesis], store: Store, work: &Path, engine: Option<&Engine>) -> anyhow::Result<Rig> {
        let mut rig = Rig::default();
        if nemeses.iter().any(|n| matches!(n, Nemesis::Clock | Nemesis::Wallclock)) {
            rig.wall = Some(WallClock::new(work)?);
        }
        if nemeses.contains(&Nemesis::Disk) {
            if store != Store::Embedded {
                bail!("--nemesis disk needs --store embedded (the external engines own their disks)");
            }
            rig.disk = Some(LoopFs::mount(work)?);
            rig.eio_log = Some(work.join("strace.log"));
        }
        if nemeses.contains(&Nemesis::Net) {
            let engine = engine.context("--nemesis net needs an external store (postgres, mysql, redis)")?;
            rig.proxy = Some(Proxy::start(engine.addr())?);
        }
        Ok(rig)
    }

    /// The URL idem's `--store` takes: through the proxy when there is one.
    pub fn store_url(&self, engine: Option<&Engine>) -> Option<String> {
        let engine = engine?;
        Some(match &self.proxy {
            Some(p) => engine.url_via(p.port()),
            None => engine.url(),
        })
    }

    /// Where the embedded store's data goes.
    pub fn data_dir(&self, default: PathBuf) -> PathBuf {
        self.disk.as_ref().map_or(default, LoopFs::data_dir)
    }

    /// Environment idem starts with.
    pub fn env(&self) -> Vec<(String, String)> {
        self.wall.as_ref().map(WallClock::env).unwrap_or_default()
    }
}

/// Whether idem's INFO reports a failed log within `wait`.
fn storage_failed(url: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let failed = redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut con| {
                con.set_read_timeout(Some(Duration::from_secs(2)))?;
                redis::cmd("INFO").query::<String>(&mut con)
            })
            .is_ok_and(|info| info.contains("storage_failure"));
        if failed {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// What to inject, until when, from which seed.
pub struct Plan<'a> {
    pub nemeses: &'a [Nemesis],
    pub until: Instant,
    pub seed: u64,
}

/// Runs until the plan's end, then leaves the server running and unpaused.
pub fn run(
    server: &mut Server,
    mut engine: Option<&mut Engine>,
    rig: &Rig,
    shared: &Arc<Shared>,
    plan: Plan<'_>,
    runtime: &tokio::runtime::Handle,
    injected: &Injected,
) -> anyhow::Result<()> {
    let Plan { nemeses, until, seed } = plan;
    let mut rng = StdRng::seed_from_u64(seed);
    if nemeses.is_empty() {
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        return Ok(());
    }
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(rng.gen_range(GAP_MS)));
        if Instant::now() >= until {
            break;
        }
        match nemeses[rng.gen_range(0..nemeses.len())] {
            Nemesis::Kill => {
                shared.rec.fault(Fault::Kill, true);
                server.kill();
                injected.kills.fetch_add(1, Ordering::Relaxed);
                if rng.gen_bool(0.3) {
                    // Again while it recovers (or before it even listens).
                    server.spawn(None)?;
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
                    server.kill();
                    injected.kills.fetch_add(1, Ordering::Relaxed);
                    injected.kills_during_recovery.fetch_add(1, Ordering::Relaxed);
                }
                server.spawn(None)?;
                server.wait_ready()?;
                shared.rec.fault(Fault::Kill, false);
                runtime.spawn(verify_recent(shared.clone()));
            }
            Nemesis::Pause => {
                if rng.gen_bool(0.5) {
                    shared.rec.fault(Fault::Pause, true);
                    server.signal_stop(true);
                    std::thread::sleep(Duration::from_millis(rng.gen_range(PAUSE_MS)));
                    server.signal_stop(false);
                    shared.rec.fault(Fault::Pause, false);
                    injected.pauses.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.stall_next_holder.store(true, Ordering::Relaxed);
                }
            }
            n @ (Nemesis::Clock | Nemesis::Wallclock) if n == Nemesis::Wallclock || rng.gen_bool(0.5) => {
                // A point in the history, not a window: what the run
                // shows is that no lease depends on the wall clock, so no
                // overlap is excused for long.
                let wall = rig.wall.as_ref().expect("prepared for clock nemeses");
                shared.rec.fault(Fault::Clock, true);
                wall.set(JUMPS_S[rng.gen_range(0..JUMPS_S.len())])?;
                shared.rec.fault(Fault::Clock, false);
                injected.wall_clock_jumps.fetch_add(1, Ordering::Relaxed);
            }
            Nemesis::Clock | Nemesis::Wallclock => {
                let shift = CLOCK_SHIFTS_S[rng.gen_range(0..CLOCK_SHIFTS_S.len())];
                shared.rec.fault(Fault::Kill, true);
                shared.rec.fault(Fault::Clock, true);
                server.kill();
                server.spawn(Some(shift))?;
                server.wait_ready()?;
                shared.rec.fault(Fault::Clock, false);
                shared.rec.fault(Fault::Kill, false);
                injected.kills.fetch_add(1, Ordering::Relaxed);
                injected.clock_restarts.fetch_add(1, Ordering::Relaxed);
                runtime.spawn(verify_recent(shared.clone()));
            }
            Nemesis::Amnesia => {
                shared.rec.fault(Fault::Kill, true);
                server.kill();
                server.forget_data()?;
                server.spawn(None)?;
                server.wait_ready()?;
                shared.rec.fault(Fault::Kill, false);
                injected.kills.fetch_add(1, Ordering::Relaxed);
                runtime.spawn(verify_recent(shared.clone()));
            }
            Nemesis::Disk => {
                let fs = rig.disk.as_ref().expect("prepared for the disk nemesis");
                let full = rng.gen_bool(0.5);
                shared.rec.fault(Fault::Disk, true);
                let eio = if full {
                    fs.fill()?;
                    injected.disk_full.fetch_add(1, Ordering::Relaxed);
                    None
                } else {
                    let group = server.pid().context("idem is running")?;
                    let log = rig.eio_log.as_deref().expect("prepared with the file system");
                    injected.sync_eio.fetch_add(1, Ordering::Relaxed);
                    Some(SyncEio::attach(idem_pid(group)?, log)?)
                };
                if storage_failed(&server.url(), STORAGE_FAILURE_WAIT) {
                    injected.storage_failures_seen.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(rng.gen_range(DISK_HOLD_MS)));
                }
                shared.rec.fault(Fault::Kill, true);
                server.kill();
                if let Some(eio) = eio {
                    injected.sync_calls_failed.fetch_add(eio.finish()?, Ordering::Relaxed);
                }
                fs.free()?;
                server.spawn(None)?;
                server.wait_ready()?;
                shared.rec.fault(Fault::Kill, false);
                shared.rec.fault(Fault::Disk, false);
                injected.kills.fetch_add(1, Ordering::Relaxed);
                runtime.spawn(verify_recent(shared.clone()));
            }
            Nemesis::Net => {
                let proxy = rig.proxy.as_ref().expect("prepared for the net nemesis");
                let (mode, ms, count) = match rng.gen_range(0..4) {
                    0 => (Mode::Blackhole, rng.gen_range(NET_CUT_MS), &injected.net_blackholes),
                    1 => (Mode::HalfOpen, rng.gen_range(NET_CUT_MS), &injected.net_half_opens),
                    2 => (Mode::Reset, rng.gen_range(NET_RESET_MS), &injected.net_resets),
                    _ => (
                        Mode::Latency(Duration::from_millis(rng.gen_range(NET_LATENCY_MS))),
                        rng.gen_range(NET_SLOW_MS),
                        &injected.net_latency,
                    ),
                };
                shared.rec.fault(Fault::Net, true);
                proxy.set(mode);
                std::thread::sleep(Duration::from_millis(ms));
                proxy.set(Mode::Pass);
                shared.rec.fault(Fault::Net, false);
                count.fetch_add(1, Ordering::Relaxed);
            }
            Nemesis::Store => {
                if let Some(e) = engine.as_deref_mut() {
                    shared.rec.fault(Fault::Store, true);
                    e.crash_restart()?;
                    shared.rec.fault(Fault::Store, false);
                    injected.store_kills.fetch_add(1, Ordering::Relaxed);
                    runtime.spawn(verify_recent(shared.clone()));
                }
            }
        }
    }
    Ok(())
}
