//! Faults, injected one at a time at random moments, each recorded in the
//! history as a window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_check::history::Fault;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engines::Engine;
use crate::server::Server;
use crate::workload::{verify_recent, Shared};

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Nemesis {
    /// SIGKILL the server and restart it, sometimes again during recovery.
    Kill,
    /// SIGSTOP the server, then SIGCONT; and stall a lock holder past its
    /// lease.
    Pause,
    /// Restart the server into a shifted monotonic clock (a time namespace).
    Clock,
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
}

/// The quiet time between faults, ms.
const GAP_MS: std::ops::Range<u64> = 300..1500;
/// How long a server pause lasts, ms.
const PAUSE_MS: std::ops::Range<u64> = 200..2000;
/// Monotonic clock shifts for a restart, s: backwards (a reboot's clock
/// starts low) and far forwards.
const CLOCK_SHIFTS_S: [i64; 4] = [-600, -60, 3_600, 2_592_000];

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
            Nemesis::Clock => {
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
