//! The clients: every primitive, on hot keys (a few per primitive, renamed
//! every few seconds so each key's history stays short enough to search)
//! and cold ones (fresh random keys), plus a lock-protected
//! read-modify-write of a set where every access carries the lock's fence.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_check::history::{Call, Fault, Reply};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{Client, Outcome, Processes};
use crate::recorder::Recorder;
use crate::resource::Resources;

/// How long a hot key keeps its name.
const HOT_EPOCH: Duration = Duration::from_secs(2);
/// Hot keys per primitive per epoch.
const HOT_KEYS: u64 = 3;
/// Acknowledged keys remembered for the reads after a restart.
const RECENT_MAX: usize = 40;
/// A counter's bounds.
const COUNTER_MIN: i64 = 0;
const COUNTER_MAX: i64 = 20;
/// Slots per slot resource.
const SLOTS_SIZE: u32 = 8;

/// Counts the run reports.
#[derive(Default)]
pub struct Stats {
    /// Writes by a holder stalled past its lease that the resource refused
    /// (another holder had used a newer fence): fencing at work.
    pub stale_writes_refused: AtomicU64,
    /// Writes by a stalled holder that went through (nobody took over).
    pub stale_writes_accepted: AtomicU64,
    /// Holder stalls injected.
    pub client_pauses: AtomicU64,
    /// Fenced writes accepted.
    pub fenced_writes: AtomicU64,
}

/// Keys acknowledged recently, for the reads after a restart.
#[derive(Default)]
pub struct Recent {
    idem: VecDeque<String>,
    claims: VecDeque<String>,
    values: VecDeque<String>,
}

fn remember(q: &mut VecDeque<String>, k: &str) {
    if q.len() == RECENT_MAX {
        q.pop_front();
    }
    q.push_back(k.to_string());
}

/// What every client shares.
pub struct Shared {
    pub rec: Arc<Recorder>,
    pub ids: Arc<Processes>,
    pub url: String,
    pub prefix: String,
    pub start: Instant,
    pub stop: AtomicBool,
    pub resources: Resources,
    pub stats: Stats,
    pub recent: Mutex<Recent>,
    /// Set by the nemesis: the next lock holder stalls past its lease.
    pub stall_next_holder: AtomicBool,
    /// Every BUSY reply counts as "did not happen", as the contract says.
    pub busy_changes_nothing: bool,
    /// Elements each lock's set must hold: every acknowledged fenced write.
    pub acked_elements: Mutex<HashMap<String, Vec<String>>>,
    /// Holders refused while their own lease was live by the harness's
    /// clock, with when: a fence out of order or a double grant.
    pub live_holder_refusals: Mutex<Vec<(String, u64, u64)>>,
}

impl Shared {
    fn hot(&self, prim: &str, rng: &mut StdRng) -> String {
        let epoch = self.start.elapsed().as_secs() / HOT_EPOCH.as_secs();
        format!("{}:{prim}:h{epoch}:{}", self.prefix, rng.gen_range(0..HOT_KEYS))
    }
    fn key(&self, prim: &str, rng: &mut StdRng) -> String {
        if rng.gen_bool(0.7) {
            self.hot(prim, rng)
        } else {
            format!("{}:{prim}:c{}", self.prefix, rng.gen::<u32>())
        }
    }
}

/// One client: runs tasks until told to stop.
pub async fn run_client(shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Client::new(shared.url.clone(), shared.rec.clone(), shared.ids.clone(), shared.busy_changes_nothing);
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let task = rng.gen_range(0..100);
        let outcome = match task {
            0..=19 => idem(&shared, &mut c, &mut rng, n).await,
            20..=29 => claim(&shared, &mut c, &mut rng).await,
            30..=49 => lock_set(&shared, &mut c, &mut rng, n).await,
            50..=57 => token(&shared, &mut c, &mut rng).await,
            58..=71 => counter(&shared, &mut c, &mut rng, n).await,
            72..=83 => value(&shared, &mut c, &mut rng, n).await,
            84..=91 => fsm(&shared, &mut c, &mut rng).await,
            _ => slots(&shared, &mut c, &mut rng).await,
        };
        if outcome == Some(Outcome::Fail) {
            // The server is down: wait for it without flooding the history.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs a call; `None` from the task means it ended early on a non-reply.
macro_rules! reply {
    ($c:expr, $call:expr) => {
        match $c.call($call).await {
            Outcome::Ok(r) => r,
            other => return Some(other),
        }
    };
}

async fn idem(s: &Shared, c: &mut Client, rng: &mut StdRng, n: u64) -> Option<Outcome> {
    let key = s.key("idem", rng);
    let lease_ms = rng.gen_range(200..1500);
    let wait_ms = if rng.gen_bool(0.2) { 300 } else { 0 };
    match reply!(c, Call::IdemBegin { key: key.clone(), lease_ms, wait_ms }) {
        Reply::Started { fence, .. } => {
            sleep_ms(rng.gen_range(0..30)).await;
            let roll = rng.gen_range(0..10);
            if roll < 8 {
                let result = format!("r{}-{n}", c.process());
                if reply!(c, Call::IdemCommit { key: key.clone(), fence, result }) == Reply::Ok {
                    remember(&mut s.recent.lock().expect("recent").idem, &key);
                }
            } else if roll < 9 {
                reply!(c, Call::IdemAbort { key: key.clone(), fence });
            }
            // Otherwise the attempt is abandoned: its lease runs out.
        }
        Reply::Running { .. } => {
            reply!(c, Call::IdemGet { key });
        }
        _ => {}
    }
    None
}

async fn claim(s: &Shared, c: &mut Client, rng: &mut StdRng) -> Option<Outcome> {
    let key = s.key("claim", rng);
    let owner = format!("o{}", rng.gen_range(0..3));
    if reply!(c, Call::Claim { key: key.clone(), owner: owner.clone() }) == Reply::Claimed {
        if rng.gen_bool(0.3) {
            reply!(c, Call::Release { key: key.clone(), owner });
        } else {
            remember(&mut s.recent.lock().expect("recent").claims, &key);
        }
    }
    reply!(c, Call::Owner { key });
    None
}

async fn lock_set(s: &Shared, c: &mut Client, rng: &mut StdRng, n: u64) -> Option<Outcome> {
    let name = s.hot("lock", rng);
    let owner = format!("p{}-{n}", c.process());
    let lease_ms = rng.gen_range(300..800);
    let invoked = s.rec.now_ns();
    let reply = reply!(c, Call::Lock { name: name.clone(), owner: owner.clone(), lease_ms, wait_ms: 200 });
    let Reply::Acquired { fence } = reply else { return None };
    let lease_end_ns = invoked + lease_ms * 1_000_000;
    let Some(mut items) = s.resources.read(&name, fence) else {
        refused(s, &name, fence, lease_end_ns);
        return None;
    };
    let stalled = s.stall_next_holder.swap(false, Ordering::Relaxed);
    if stalled {
        // A holder paused past its lease (a GC pause, a stopped process):
        // others take the lock meanwhile, and its late write must be
        // refused by its fence.
        s.rec.fault(Fault::ClientPause, true);
        s.stats.client_pauses.fetch_add(1, Ordering::Relaxed);
        sleep_ms(lease_ms + 400).await;
        s.rec.fault(Fault::ClientPause, false);
        reply!(c, Call::Renew { name: name.clone(), owner: owner.clone(), lease_ms });
    } else {
        sleep_ms(rng.gen_range(0..20)).await;
    }
    let element = format!("{owner}:{fence}");
    items.push(element.clone());
    if s.resources.write(&name, fence, items) {
        s.stats.fenced_writes.fetch_add(1, Ordering::Relaxed);
        s.acked_elements.lock().expect("acked").entry(name.clone()).or_default().push(element);
        if stalled {
            s.stats.stale_writes_accepted.fetch_add(1, Ordering::Relaxed);
        }
    } else if stalled {
        s.stats.stale_writes_refused.fetch_add(1, Ordering::Relaxed);
    } else {
        refused(s, &name, fence, lease_end_ns);
    }
    if rng.gen_bool(0.8) {
        reply!(c, Call::Unlock { name, owner });
    }
    None
}

fn refused(s: &Shared, name: &str, fence: u64, lease_end_ns: u64) {
    let now = s.rec.now_ns();
    if now < lease_end_ns {
        s.live_holder_refusals.lock().expect("refusals").push((format!("{name} fence {fence}"), now, lease_end_ns));
    }
}

async fn token(s: &Shared, c: &mut Client, rng: &mut StdRng) -> Option<Outcome> {
    let scope = s.key("token", rng);
    let ttl_ms = rng.gen_range(100..1000);
    let Reply::Token { token } = reply!(c, Call::TokenNew { scope: scope.clone(), ttl_ms }) else { return None };
    if rng.gen_bool(0.2) {
        sleep_ms(ttl_ms + 50).await;
    }
    reply!(c, Call::TokenUse { scope: scope.clone(), token: token.clone() });
    if rng.gen_bool(0.3) {
        reply!(c, Call::TokenUse { scope, token });
    }
    None
}

async fn counter(s: &Shared, c: &mut Client, rng: &mut StdRng, n: u64) -> Option<Outcome> {
    let key = s.key("counter", rng);
    if rng.gen_bool(0.2) {
        reply!(c, Call::CounterGet { key });
        return None;
    }
    let mut delta = rng.gen_range(-3..=3);
    if delta == 0 {
        delta = 1;
    }
    let op = Some(format!("op{}-{n}", c.process()));
    let call = Call::CounterAdd { key, delta, min: COUNTER_MIN, max: COUNTER_MAX, op };
    if c.call(call.clone()).await == Outcome::Info {
        // Retry the same op id from a new process: it must apply once.
        for _ in 0..20 {
            match c.call(call.clone()).await {
                Outcome::Fail => sleep_ms(100).await,
                _ => break,
            }
        }
    }
    None
}

async fn value(s: &Shared, c: &mut Client, rng: &mut StdRng, n: u64) -> Option<Outcome> {
    let key = s.key("value", rng);
    let new = format!("v{}-{n}", c.process());
    let if_version = if rng.gen_bool(0.2) {
        None
    } else {
        match reply!(c, Call::ValueGet { key: key.clone() }) {
            Reply::Versioned { value: Some((_, v)) } => Some(v),
            _ => Some(0),
        }
    };
    if let Reply::ValueOk { .. } = reply!(c, Call::ValueSet { key: key.clone(), value: new, if_version }) {
        remember(&mut s.recent.lock().expect("recent").values, &key);
    }
    None
}

async fn fsm(s: &Shared, c: &mut Client, rng: &mut StdRng) -> Option<Outcome> {
    const STATES: [&str; 4] = ["none", "a", "b", "c"];
    let key = s.key("fsm", rng);
    let to = STATES[rng.gen_range(1..4)].to_string();
    let from: Vec<String> = STATES.iter().filter(|x| **x != to && rng.gen_bool(0.5)).map(|x| x.to_string()).collect();
    if from.is_empty() {
        reply!(c, Call::FsmGet { key });
    } else {
        reply!(c, Call::FsmMove { key, to, from });
    }
    None
}

async fn slots(s: &Shared, c: &mut Client, rng: &mut StdRng) -> Option<Outcome> {
    let resource = s.key("slots", rng);
    let holder = format!("h{}", rng.gen_range(0..3));
    let first = rng.gen_range(0..SLOTS_SIZE);
    let last = rng.gen_range(first..SLOTS_SIZE.min(first + 3));
    match rng.gen_range(0..4) {
        0 => reply!(c, Call::SlotsRelease { resource, first, last, holder }),
        1 => reply!(c, Call::SlotsGet { resource }),
        _ => reply!(c, Call::SlotsReserve { resource, first, last, holder, size: SLOTS_SIZE }),
    };
    None
}

/// After a restart: reads back recently acknowledged keys, so the history
/// shows whether they survived.
pub async fn verify_recent(s: Arc<Shared>) {
    let (idem, claims, values) = {
        let r = s.recent.lock().expect("recent");
        (r.idem.clone(), r.claims.clone(), r.values.clone())
    };
    let mut c = Client::new(s.url.clone(), s.rec.clone(), s.ids.clone(), s.busy_changes_nothing);
    for key in idem {
        if c.call(Call::IdemGet { key }).await == Outcome::Fail {
            return;
        }
    }
    for key in claims {
        if c.call(Call::Owner { key }).await == Outcome::Fail {
            return;
        }
    }
    for key in values {
        if c.call(Call::ValueGet { key }).await == Outcome::Fail {
            return;
        }
    }
}
