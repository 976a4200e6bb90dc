//! Differential conformance: random command sequences, with time steps, run
//! through a backend and through the core [`Machine`] (the oracle: the pure
//! semantics of docs/commands.md), replies compared one by one.
//!
//! - **Time.** The backend reads a [`TestClock`] that the runner moves
//!   (every engine has one, docs/backends.md "A clock for tests"); the
//!   Machine is applied at the same millisecond. Durations are drawn from a
//!   few values and steps from `1`, `lease - 1`, `lease` and the 24 h grace,
//!   so leases, TTLs and KEEPs are hit at `deadline - 1` and `deadline + 0`.
//! - **What is left out.** WAIT (a parked caller's reply depends on polling
//!   and wake-up order, which the fixed cases and the race tests check), and
//!   commands whose arguments are invalid (the fixed case `errors_limits`).
//! - **Normalisation** (what may legitimately differ between engines, and
//!   nothing else):
//!   - fences: a backend's fences come from its own sequence (a database
//!     sequence, a per-key counter seeded from the clock), and the contract
//!     only asks that a key's fences grow, so a reply's fence is replaced, on
//!     each side apart, by its order of first appearance among the fences of
//!     its key (`f1`, `f2`, ...). A fence seen again must map to the same
//!     name on both sides, and every new fence of a key must be greater than
//!     all the key's earlier fences on that side (checked, not assumed);
//!   - tokens: TOKEN.NEW returns random bytes, so the reply is replaced by
//!     its order of issue (`tok1`, ...), after checking it is 32 lowercase
//!     hex characters; TOKEN.USE sends each side its own token;
//!   - a status word may arrive as a word or a bulk string (the same bytes on
//!     the wire); errors are compared by code, not message.
//! - **Inputs that name a fence or a token** (COMMIT, ABORT, RENEW,
//!   TOKEN.USE) are generated symbolically ("the key's latest fence", "its
//!   earlier one", "a fence never issued") and resolved per side.
//!
//! A failure prints the seed, the sequence index, every step with both
//! sides' replies, and the command to run that seed again
//! (`IDEM_DIFF_SEED`). Sequences are not shrunk; they are short (see
//! [`STEPS_DEFAULT`]) so the printed history reads directly.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use idem_core::machine::{Applied, Effects, Machine, SeqEnv};
use idem_core::{Backend, CmdResult, Limits, Reply, TestClock};

use crate::Ctx;

/// Sequences run per backend when `IDEM_DIFF_SEQUENCES` is not set: few, so
/// the suite stays fast; `scripts/diff-conformance.sh` runs many more.
pub const SEQUENCES_DEFAULT: usize = 12;
/// Steps (commands and time steps) per sequence when `IDEM_DIFF_STEPS` is not set.
pub const STEPS_DEFAULT: usize = 60;
/// The lease, TTL and KEEP values drawn (ms). Two values, so that steps of
/// one land exactly on or one short of the other's deadlines.
pub const DURATIONS_MS: [u64; 2] = [1_000, 2_000];
/// The time steps drawn (ms): `d - 1`, `1` and `d` reach every
/// `deadline - 1` and `deadline + 0` of [`DURATIONS_MS`]; the last is the
/// 24 h grace after which an expired running record is forgotten.
pub const TIME_STEPS_MS: [u64; 5] = [1, 999, 1_000, 2_000, idem_core::limits::RUNNING_RETAIN_MS];
/// A fence no engine issues in a test (above any sequence value and any
/// microsecond clock of this century, below i64::MAX): "a fence never issued".
const FENCE_NEVER: u64 = 9_000_000_000_000_000_000;

/// A backend under test and the clock it reads.
#[derive(Clone)]
pub struct DiffTarget {
    /// The backend, built on `clock`.
    pub backend: Arc<dyn Backend>,
    /// The clock the backend reads; the runner moves it.
    pub clock: TestClock,
    /// Called with the new time after every move of `clock`, for engines
    /// whose clock lives outside this process (a private Redis server).
    pub on_time: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

/// How many sequences to run, from `IDEM_DIFF_SEQUENCES` (else [`SEQUENCES_DEFAULT`]).
pub fn sequences_from_env() -> usize {
    env_usize("IDEM_DIFF_SEQUENCES", SEQUENCES_DEFAULT)
}

/// Steps per sequence, from `IDEM_DIFF_STEPS` (else [`STEPS_DEFAULT`]).
pub fn steps_from_env() -> usize {
    env_usize("IDEM_DIFF_STEPS", STEPS_DEFAULT)
}

/// The first seed when `IDEM_DIFF_SEED` is not set: fixed, so that the
/// suite runs the same sequences every time; scripts/diff-conformance.sh
/// draws fresh seeds.
pub const SEED_DEFAULT: u64 = 23;

/// The first seed, from `IDEM_DIFF_SEED` (a number, or `random` for a fresh
/// one, printed), else [`SEED_DEFAULT`].
pub fn seed_from_env() -> u64 {
    match std::env::var("IDEM_DIFF_SEED").as_deref() {
        Ok("random") => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
        Ok(s) => {
            s.trim().parse().unwrap_or_else(|_| panic!("IDEM_DIFF_SEED={s}: expected an unsigned integer or 'random'"))
        }
        Err(_) => SEED_DEFAULT,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("{name}={s}: expected an unsigned integer")),
        Err(_) => default,
    }
}

/// Runs `sequences` random sequences of `steps` steps each against
/// `target`, sequence `i` from seed `seed + i`; panics at the first
/// divergence with the whole history of its sequence.
pub async fn run(target: &DiffTarget, seed: u64, sequences: usize, steps: usize) {
    println!(
        "differential on {}: {sequences} sequences of {steps} steps from seed {seed} \
         (IDEM_DIFF_SEED={seed} IDEM_DIFF_SEQUENCES={sequences} to repeat)",
        target.backend.name()
    );
    for i in 0..sequences as u64 {
        let s = seed.wrapping_add(i);
        if let Err(history) = run_one(target, s, steps).await {
            panic!(
                "differential divergence on {} (seed {s}; run again with IDEM_DIFF_SEED={s} IDEM_DIFF_SEQUENCES=1 \
                 IDEM_DIFF_STEPS={steps}):\n{history}",
                target.backend.name()
            );
        }
    }
}

/// SplitMix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn duration(&mut self) -> String {
        DURATIONS_MS[self.below(DURATIONS_MS.len())].to_string()
    }
}

/// One argument of a generated command, resolved per side.
#[derive(Clone, Debug)]
enum Arg {
    Lit(String),
    /// A fence of an idempotency key: its latest, its one before, or never issued.
    Fence {
        key: String,
        which: FenceRef,
    },
    /// A token of a scope: its latest, its first, or never issued.
    Token {
        scope: String,
        latest: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum FenceRef {
    Latest,
    Earlier,
    Never,
}

#[derive(Clone, Debug)]
enum Step {
    Cmd(Vec<Arg>),
    Time(u64),
}

fn lit(s: &str) -> Arg {
    Arg::Lit(s.to_string())
}

/// The next step of a sequence. Keys are few, so commands meet each other's
/// records; every key carries the sequence's hash tag (CLAIM.ALL's keys
/// then share a Redis Cluster slot).
fn gen_step(rng: &mut Rng, ctx: &Ctx) -> Step {
    if rng.chance(18) {
        let i = rng.below(TIME_STEPS_MS.len());
        // The 24 h step is rarer than the others.
        let i = if i == TIME_STEPS_MS.len() - 1 && !rng.chance(30) { 0 } else { i };
        return Step::Time(TIME_STEPS_MS[i]);
    }
    let k = |rng: &mut Rng, p: &str| Arg::Lit(ctx.tagged(&format!("{p}{}", rng.below(2))));
    let owner = |rng: &mut Rng| lit(rng.pick(&["a", "b"]));
    let mut v: Vec<Arg> = Vec::new();
    match rng.below(26) {
        0..=3 => {
            v.extend([lit("IDEM.BEGIN"), k(rng, "i")]);
            if rng.chance(40) {
                v.extend([lit("FP"), lit(rng.pick(&["x", "y"]))]);
            }
            if rng.chance(85) {
                v.extend([lit("LEASE"), lit(&rng.duration())]);
            }
        }
        4..=6 => {
            let key = k(rng, "i");
            let Arg::Lit(name) = &key else { unreachable!() };
            let which = [FenceRef::Latest, FenceRef::Latest, FenceRef::Earlier, FenceRef::Never][rng.below(4)];
            let fence = Arg::Fence { key: name.clone(), which };
            match rng.below(3) {
                0 => {
                    v.extend([lit("IDEM.COMMIT"), key, fence, lit(rng.pick(&["r1", "r2", ""]))]);
                    if rng.chance(70) {
                        v.extend([lit("KEEP"), lit(&rng.duration())]);
                    }
                }
                1 => v.extend([lit("IDEM.ABORT"), key, fence]),
                _ => v.extend([lit("IDEM.RENEW"), key, fence, lit("LEASE"), lit(&rng.duration())]),
            }
        }
        7 => v.extend([lit("IDEM.GET"), k(rng, "i")]),
        8 => v.extend([lit("IDEM.DEL"), k(rng, "i")]),
        9..=10 => {
            v.extend([lit("CLAIM"), k(rng, "c"), owner(rng)]);
            if rng.chance(60) {
                v.extend([lit("TTL"), lit(&rng.duration())]);
            }
        }
        11 => v.extend([lit("CLAIM.ALL"), owner(rng), k(rng, "c"), k(rng, "c")]),
        12 => v.extend([lit("RELEASE"), k(rng, "c"), owner(rng)]),
        13 => v.extend([lit("OWNER"), k(rng, "c")]),
        14..=15 => v.extend([lit("LOCK"), k(rng, "l"), owner(rng), lit("LEASE"), lit(&rng.duration())]),
        16 => v.extend([lit("RENEW"), k(rng, "l"), owner(rng), lit("LEASE"), lit(&rng.duration())]),
        17 => v.extend([lit("UNLOCK"), k(rng, "l"), owner(rng)]),
        18 => v.extend([lit("LOCK.INFO"), k(rng, "l")]),
        19 => v.extend([lit("TOKEN.NEW"), lit(&ctx.tagged("s")), lit("TTL"), lit(&rng.duration())]),
        20 => {
            let scope = ctx.tagged("s");
            let token = if rng.chance(15) {
                lit("00000000000000000000000000000000")
            } else {
                Arg::Token { scope: scope.clone(), latest: rng.chance(70) }
            };
            v.extend([lit("TOKEN.USE"), lit(&scope), token]);
        }
        21 => {
            v.extend([lit("COUNTER.ADD"), k(rng, "n"), lit(rng.pick(&["1", "-1", "5"]))]);
            if rng.chance(40) {
                v.extend([lit("MIN"), lit("0"), lit("MAX"), lit("6")]);
            }
            if rng.chance(50) {
                v.extend([lit("OP"), lit(rng.pick(&["o1", "o2"]))]);
                if rng.chance(70) {
                    v.extend([lit("KEEP"), lit(&rng.duration())]);
                }
            }
        }
        22 => {
            v.extend([lit("VALUE.SET"), k(rng, "v"), lit(rng.pick(&["p", "q"]))]);
            if rng.chance(50) {
                v.extend([lit("IFVERSION"), lit(rng.pick(&["0", "1", "2"]))]);
            }
        }
        23 => v.extend([
            lit("FSM.MOVE"),
            k(rng, "f"),
            lit(rng.pick(&["a", "b"])),
            lit("FROM"),
            lit(rng.pick(&["none", "a", "b"])),
        ]),
        24 => {
            let first = rng.below(3);
            let last = first + rng.below(2);
            let op = if rng.chance(65) { "SLOTS.RESERVE" } else { "SLOTS.RELEASE" };
            v.extend([lit(op), k(rng, "r"), lit(&first.to_string()), lit(&last.to_string()), owner(rng)]);
            if op == "SLOTS.RESERVE" && rng.chance(30) {
                v.extend([lit("SIZE"), lit("4")]);
            }
        }
        _ => {
            let read = ["COUNTER.GET", "VALUE.GET", "FSM.GET", "SLOTS.GET"][rng.below(4)];
            let p = match read {
                "COUNTER.GET" => "n",
                "VALUE.GET" => "v",
                "FSM.GET" => "f",
                _ => "r",
            };
            v.extend([lit(read), k(rng, p)]);
        }
    }
    Step::Cmd(v)
}

/// What one side (the Machine or the backend) has seen in a sequence: the
/// fences and tokens it was given, for resolving symbolic arguments and
/// naming its replies' fences and tokens.
#[derive(Default)]
struct Side {
    /// Fences of each idempotency key from `started` replies, in order.
    idem_fences: HashMap<String, Vec<u64>>,
    /// (key, fence) -> its name's number (order of first appearance among
    /// the key's fences).
    fence_names: HashMap<(String, u64), usize>,
    /// The highest fence seen per key (idempotency key or lock name).
    fence_max: HashMap<String, u64>,
    /// Tokens issued per scope, in order.
    tokens: HashMap<String, Vec<Bytes>>,
    /// Token -> its name's number.
    token_names: HashMap<Bytes, usize>,
}

impl Side {
    fn resolve(&self, args: &[Arg]) -> Vec<Bytes> {
        args.iter()
            .map(|a| match a {
                Arg::Lit(s) => Bytes::copy_from_slice(s.as_bytes()),
                Arg::Fence { key, which } => {
                    let fences = self.idem_fences.get(key).map(Vec::as_slice).unwrap_or(&[]);
                    let f = match (which, fences) {
                        (FenceRef::Never, _) | (_, []) => FENCE_NEVER,
                        (FenceRef::Latest, [.., last]) => *last,
                        (FenceRef::Earlier, [.., before, _]) => *before,
                        (FenceRef::Earlier, [only]) => *only,
                    };
                    Bytes::from(f.to_string())
                }
                Arg::Token { scope, latest } => {
                    let tokens = self.tokens.get(scope).map(Vec::as_slice).unwrap_or(&[]);
                    let t = if *latest { tokens.last() } else { tokens.first() };
                    t.cloned().unwrap_or_else(|| Bytes::from_static(b"ffffffffffffffffffffffffffffffff"))
                }
            })
            .collect()
    }

    /// The fence `f` of `key` as a name; checks that a fence new to this
    /// side is above every earlier fence of the key.
    fn name_fence(&mut self, key: &str, f: u64) -> Result<String, String> {
        if let Some(n) = self.fence_names.get(&(key.to_string(), f)) {
            return Ok(format!("f{n}"));
        }
        let max = self.fence_max.entry(key.to_string()).or_insert(0);
        if f <= *max {
            return Err(format!("fence {f} of {key} does not grow: an earlier fence of the key was {max}"));
        }
        *max = f;
        let n = self.fence_names.keys().filter(|(k, _)| k == key).count() + 1;
        self.fence_names.insert((key.to_string(), f), n);
        Ok(format!("f{n}"))
    }

    /// The reply in the normalised form both sides are compared in.
    fn normalise(&mut self, args: &[Bytes], r: &CmdResult) -> Result<String, String> {
        let reply = match r {
            Err(e) => return Ok(format!("error {}", e.code.as_str())),
            Ok(r) => r,
        };
        let cmd = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let key = args.get(1).map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        if cmd == "TOKEN.NEW" {
            let Reply::Bulk(t) = reply else { return Err(format!("TOKEN.NEW replied {}", crate::show(reply))) };
            let hex = t.len() == 32 && t.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
            if !hex {
                return Err(format!("TOKEN.NEW replied {t:?}: not 32 lowercase hex characters"));
            }
            self.tokens.entry(key).or_default().push(t.clone());
            let n = self.token_names.len() + 1;
            self.token_names.insert(t.clone(), n);
            return Ok(format!("tok{n}"));
        }
        let mut items: Vec<String> = match reply {
            Reply::Array(v) => v.iter().map(plain).collect(),
            other => return Ok(plain(other)),
        };
        let word = items.first().cloned().unwrap_or_default();
        let fence_at = match (cmd.as_str(), word.as_str()) {
            ("IDEM.BEGIN" | "IDEM.GET", "started" | "running") | ("IDEM.RENEW", "renewed") => Some(1),
            ("LOCK", "acquired") | ("RENEW", "renewed") => Some(1),
            ("LOCK.INFO", "held") => Some(2),
            _ => None,
        };
        if let Some(i) = fence_at {
            let f: u64 = items
                .get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{cmd} replied {}: no fence at {i}", crate::show(reply)))?;
            if cmd == "IDEM.BEGIN" && word == "started" {
                self.idem_fences.entry(key.clone()).or_default().push(f);
            }
            items[i] = self.name_fence(&key, f)?;
        }
        Ok(format!("[{}]", items.join(" ")))
    }
}

/// A reply element as text: a word and a bulk string with the same bytes
/// read the same (they are the same on the wire).
fn plain(r: &Reply) -> String {
    match r {
        Reply::Word(w) => (*w).to_string(),
        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Int(i) => i.to_string(),
        Reply::Nil => "nil".into(),
        Reply::Array(v) => format!("[{}]", v.iter().map(plain).collect::<Vec<_>>().join(" ")),
    }
}

/// One sequence; `Err` holds the printed history up to the divergence.
async fn run_one(target: &DiffTarget, seed: u64, steps: usize) -> Result<(), String> {
    let mut rng = Rng(seed);
    let ctx = Ctx::new();
    let mut machine = Machine::new(Limits::default());
    let mut env = SeqEnv::default();
    let mut effects = Effects::default();
    let (mut model, mut real) = (Side::default(), Side::default());
    let mut history = String::new();
    let start = target.clock.now_ms();
    for n in 0..steps {
        match gen_step(&mut rng, &ctx) {
            Step::Time(ms) => {
                let now = target.clock.advance(ms);
                if let Some(f) = &target.on_time {
                    f(now);
                }
                machine.tick(now, &mut env, &mut effects);
                effects.clear();
                let _ = writeln!(history, "{n:3} +{ms} ms (t = {})", now - start);
            }
            Step::Cmd(args) => {
                let now = target.clock.now_ms();
                let (m_args, b_args) = (model.resolve(&args), real.resolve(&args));
                let m_cmd = crate::parse_bytes(&m_args);
                let b_reply = crate::exec_bytes(&*target.backend, &b_args).await;
                let m_reply = match m_cmd {
                    Err(e) => Err(e),
                    Ok(cmd) => match machine.apply(now, &cmd, None, &mut env, &mut effects) {
                        Applied::Done(r) => r,
                        Applied::Parked => {
                            return Err(format!("{history}the Machine parked {} (no WAIT)", show_args(&m_args)))
                        }
                    },
                };
                effects.clear();
                let m = model.normalise(&m_args, &m_reply);
                let b = real.normalise(&b_args, &b_reply);
                let _ = writeln!(
                    history,
                    "{n:3} {}\n      machine: {}\n      {}: {}",
                    show_args(&b_args),
                    raw(&m_reply),
                    target.backend.name(),
                    raw(&b_reply)
                );
                match (m, b) {
                    (Ok(m), Ok(b)) if m == b => {}
                    (Ok(m), Ok(b)) => {
                        return Err(format!(
                            "{history}DIVERGED at step {n}: machine {m}, {} {b}",
                            target.backend.name()
                        ))
                    }
                    (Err(e), _) => return Err(format!("{history}the Machine's reply is malformed: {e}")),
                    (_, Err(e)) => return Err(format!("{history}{}: {e}", target.backend.name())),
                }
            }
        }
    }
    Ok(())
}

fn show_args(args: &[Bytes]) -> String {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
}

fn raw(r: &CmdResult) -> String {
    match r {
        Ok(r) => crate::show(r),
        Err(e) => format!("error {}", e),
    }
}
