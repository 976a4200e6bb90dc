//! Per-key linearizability: partition the history by primitive and key
//! (every primitive is per key, and linearizability is local), then search
//! each key's ops against its primitive's model.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::history::{History, Op, Primitive};
use crate::model::{
    ClaimModel, CounterModel, FsmModel, IdemModel, LockModel, Model, SlotsModel, Timing, TokenModel, ValueModel,
};
use crate::wgl::{search, Outcome};

/// What the search may spend, and how it judges time.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Wall-clock budget for the whole history. Keys not decided when it
    /// runs out are `Unknown`.
    pub budget: Duration,
    /// How lease ends are judged.
    pub timing: Timing,
}

/// The default budget of a whole check.
pub const BUDGET_DEFAULT: Duration = Duration::from_secs(120);

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { budget: BUDGET_DEFAULT, timing: Timing::default() }
    }
}

/// A verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every key is linearizable.
    Pass,
    /// The budget ran out before every key was decided, and none failed.
    Unknown,
    /// Some key is not linearizable.
    Fail,
}

/// A key that is not linearizable, or not decided.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyResult {
    /// Its primitive.
    pub primitive: Primitive,
    /// Its key.
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Ops on it.
    pub ops: usize,
    /// For a failure: the op the longest partial linearisation could not
    /// get past, and how many ops that linearisation placed.
    pub detail: Option<String>,
}

/// The whole check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinearReport {
    /// The worst verdict over all keys.
    pub verdict: Verdict,
    /// Keys checked.
    pub keys: usize,
    /// Ops checked (those with a known or unknown outcome).
    pub ops: usize,
    /// Ops whose outcome is unknown.
    pub unknown_ops: usize,
    /// Keys that failed or were not decided.
    pub problems: Vec<KeyResult>,
    /// Time the search took.
    pub elapsed_ms: u64,
}

/// Checks every key of `history`.
pub fn check_linearizable(history: &History, options: CheckOptions) -> LinearReport {
    let started = Instant::now();
    let deadline = started + options.budget;
    let mut parts: BTreeMap<(Primitive, String), Vec<Op>> = BTreeMap::new();
    let mut ops = 0;
    let mut unknown_ops = 0;
    for op in history.ops() {
        if let Some(part) = op.call.partition(op.reply.as_ref()) {
            ops += 1;
            unknown_ops += usize::from(op.reply.is_none());
            parts.entry(part).or_default().push(op.clone());
        }
    }
    let keys = parts.len();
    let t = options.timing;
    let mut problems = Vec::new();
    for ((primitive, key), ops) in parts {
        let outcome = match primitive {
            Primitive::Idem => run(&IdemModel { timing: t }, &ops, deadline, options.budget),
            Primitive::Claim => run(&ClaimModel, &ops, deadline, options.budget),
            Primitive::Lock => run(&LockModel { timing: t }, &ops, deadline, options.budget),
            Primitive::Token => run(&TokenModel { timing: t }, &ops, deadline, options.budget),
            Primitive::Counter => run(&CounterModel, &ops, deadline, options.budget),
            Primitive::Value => run(&ValueModel, &ops, deadline, options.budget),
            Primitive::Fsm => run(&FsmModel, &ops, deadline, options.budget),
            Primitive::Slots => run(&SlotsModel, &ops, deadline, options.budget),
        };
        let (verdict, detail) = match outcome {
            Outcome::Linearizable => continue,
            Outcome::Unknown => (Verdict::Unknown, None),
            Outcome::Violation { stuck, placed } => {
                let op = ops.get(stuck);
                (
                    Verdict::Fail,
                    Some(match op {
                        Some(op) => format!(
                            "after {placed} ops, no order admits op {} (process {}): {:?} -> {:?}",
                            op.index, op.process, op.call, op.reply
                        ),
                        None => format!("after {placed} ops"),
                    }),
                )
            }
        };
        problems.push(KeyResult { primitive, key, verdict, ops: ops.len(), detail });
    }
    let verdict = problems.iter().map(|p| p.verdict).max().unwrap_or(Verdict::Pass);
    LinearReport { verdict, keys, ops, unknown_ops, problems, elapsed_ms: started.elapsed().as_millis() as u64 }
}

/// No single key may take more than this share of the whole budget, so one
/// hard key leaves time for the others (it is reported unknown).
const KEY_BUDGET_SHARE: u32 = 10;

fn run<M: Model>(model: &M, ops: &[Op], deadline: Instant, budget: Duration) -> Outcome {
    let now = Instant::now();
    if now >= deadline {
        return Outcome::Unknown;
    }
    search(model, ops, deadline.min(now + budget / KEY_BUDGET_SHARE))
}
