//! Linear-time checks: no search, and each names the ops it blames.
//!
//! - fences: no fence granted twice, and a grant that begins after another
//!   ended carries a larger fence, across the whole run (restarts included);
//! - leases: no two holders' leases overlap on the recorder's clock (a
//!   holder counts its lease from its call's invocation, as a careful
//!   client must), unless a clock fault was active;
//! - counters: no reply outside the bounds, an op id applied once, and its
//!   replays give the value it produced;
//! - replays: one result per idempotency key, committed at most once;
//! - durability: after a restart, reads still see every acknowledged
//!   commit, claim and versioned value from before it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Call, Fault, History, Op, Reply};

/// The scope of the fence promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FenceScope {
    /// One server-wide sequence (the embedded store).
    #[default]
    Global,
    /// Per key at least (external stores, docs/backends.md).
    PerKey,
}

/// Options of the side checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SideOptions {
    /// The fence promise.
    pub fences: FenceScope,
    /// Leases are counted on the host's wall clock (the external engines),
    /// not on idem's monotonic clock (the embedded store): an overlap that
    /// the forward wall-clock steps seen ([`Fault::HostClock`]) between the
    /// earlier lease's request and the later grant's return account for is
    /// excused, because those steps ended that lease early by their size.
    pub wall_clock_leases: bool,
}

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// Which check.
    pub kind: &'static str,
    /// What happened, naming the ops (by index).
    pub detail: String,
}

/// The side checks' findings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SideReport {
    /// Broken promises.
    pub anomalies: Vec<Anomaly>,
    /// Lease overlaps while a clock fault was active, or (wall-clock
    /// leases) accounted for by seen forward steps of the wall clock:
    /// physics, not a bug.
    pub excused_overlaps: usize,
    /// Fence grants checked.
    pub grants: usize,
    /// Lease holdings checked.
    pub holdings: usize,
    /// Reads after a restart checked against earlier acknowledgements.
    pub durability_reads: usize,
}

/// Runs every side check.
pub fn check_side(history: &History, options: SideOptions) -> SideReport {
    let mut report = SideReport::default();
    fences(history, options.fences, &mut report);
    leases(history, options.wall_clock_leases, &mut report);
    counters(history, &mut report);
    replays(history, &mut report);
    durability(history, &mut report);
    report
}

fn anomaly(report: &mut SideReport, kind: &'static str, detail: String) {
    report.anomalies.push(Anomaly { kind, detail });
}

/// A fence grant: who got it (a re-LOCK by the same holder is the same
/// grant), when.
struct Grant {
    key: String,
    who: String,
    fence: u64,
    invoke_ns: u64,
    return_ns: u64,
    index: usize,
}

fn grants(history: &History) -> Vec<Grant> {
    let mut out = Vec::new();
    for op in history.ops() {
        let (Some(reply), Some(return_ns)) = (&op.reply, op.return_ns) else { continue };
        let (key, who, fence) = match (&op.call, reply) {
            (Call::IdemBegin { key, .. }, Reply::Started { fence, .. }) => {
                (format!("idem:{key}"), format!("op {}", op.index), *fence)
            }
            (Call::Lock { name, owner, .. }, Reply::Acquired { fence }) => {
                (format!("lock:{name}"), format!("owner {owner}"), *fence)
            }
            _ => continue,
        };
        out.push(Grant { key, who, fence, invoke_ns: op.invoke_ns, return_ns, index: op.index });
    }
    out
}

fn fences(history: &History, scope: FenceScope, report: &mut SideReport) {
    let all = grants(history);
    // No fence granted twice (to two different grants).
    let mut by_fence: HashMap<(String, u64), (String, String, usize)> = HashMap::new();
    let mut first: Vec<&Grant> = Vec::new();
    for g in &all {
        let scope_key = match scope {
            FenceScope::Global => String::new(),
            FenceScope::PerKey => g.key.clone(),
        };
        match by_fence.get(&(scope_key.clone(), g.fence)) {
            Some((key, who, index)) if *key == g.key && *who == g.who => {
                let _ = index;
            }
            Some((key, who, index)) => anomaly(
                report,
                "fence-reused",
                format!(
                    "fence {} granted to {} on {} (op {}) and to {} on {} (op {})",
                    g.fence, who, key, index, g.who, g.key, g.index
                ),
            ),
            None => {
                by_fence.insert((scope_key, g.fence), (g.key.clone(), g.who.clone(), g.index));
                first.push(g);
            }
        }
    }
    report.grants = first.len();
    // Real-time order: a grant invoked after another returned has a larger
    // fence. Sweep grants by invocation, with those returned so far.
    let mut by_return: Vec<&Grant> = first.clone();
    by_return.sort_by_key(|g| g.return_ns);
    let mut by_invoke = first;
    by_invoke.sort_by_key(|g| g.invoke_ns);
    let mut max_before: HashMap<String, (u64, usize)> = HashMap::new();
    let mut r = 0;
    for g in by_invoke {
        while r < by_return.len() && by_return[r].return_ns < g.invoke_ns {
            let done = by_return[r];
            let k = if scope == FenceScope::Global { String::new() } else { done.key.clone() };
            let e = max_before.entry(k).or_insert((0, usize::MAX));
            if done.fence > e.0 {
                *e = (done.fence, done.index);
            }
            r += 1;
        }
        let k = if scope == FenceScope::Global { String::new() } else { g.key.clone() };
        if let Some(&(fence, index)) = max_before.get(&k) {
            if g.fence <= fence {
                anomaly(
                    report,
                    "fence-not-increasing",
                    format!(
                        "op {} on {} got fence {} after op {} had returned fence {}",
                        g.index, g.key, g.fence, index, fence
                    ),
                );
            }
        }
    }
}

/// How early a lease may end by the harness's clock without breaking the
/// contract: idem counts leases in whole milliseconds of its clock (a grant
/// at 10.9 ms with a 100 ms lease ends at 110 ms), so a lease can end up to
/// one millisecond before `invoke + lease` measured in nanoseconds. Overlaps
/// shorter than this are the clock's resolution, not a double grant.
pub const LEASE_GRANULARITY_NS: u64 = 1_000_000;

/// A holder's belief: from its grant's return to its lease's end counted
/// from the invocation that set it, cut at its release's invocation.
struct Holding {
    who: String,
    start_ns: u64,
    end_ns: u64,
    /// The invocation that set `end_ns`: the engine counted the lease from
    /// a moment after it.
    lease_from_ns: u64,
    index: usize,
}

fn leases(history: &History, wall_clock_leases: bool, report: &mut SideReport) {
    let mut per_key: BTreeMap<String, Vec<Holding>> = BTreeMap::new();
    // Open holdings: (key, holder identity) -> position in per_key's list.
    let mut open: HashMap<(String, String), usize> = HashMap::new();
    for op in history.ops() {
        // A release ends the holder's belief when it is sent, whatever its
        // outcome: the holder stops relying on the lease then.
        let known = op.reply.as_ref().zip(op.return_ns);
        let lease_end = |lease_ms: u64| op.invoke_ns.saturating_add(lease_ms.saturating_mul(1_000_000));
        match (&op.call, known) {
            (Call::Lock { name, owner, lease_ms, .. }, Some((Reply::Acquired { fence }, return_ns))) => {
                let key = format!("lock:{name}");
                let who = format!("{owner}/{fence}");
                extend(&mut per_key, &mut open, key, who, (return_ns, op.invoke_ns), lease_end(*lease_ms), op.index);
            }
            (Call::Renew { name, owner, lease_ms }, Some((Reply::Renewed { fence }, return_ns))) => {
                let key = format!("lock:{name}");
                let who = format!("{owner}/{fence}");
                extend(&mut per_key, &mut open, key, who, (return_ns, op.invoke_ns), lease_end(*lease_ms), op.index);
            }
            (Call::Unlock { name, owner }, _) => {
                let key = format!("lock:{name}");
                let prefix = format!("{owner}/");
                for ((k, who), at) in open.iter() {
                    if *k == key && who.starts_with(&prefix) {
                        let h = &mut per_key.get_mut(k).expect("an open holding is listed")[*at];
                        h.end_ns = h.end_ns.min(op.invoke_ns);
                    }
                }
            }
            (Call::IdemBegin { key, lease_ms, .. }, Some((Reply::Started { fence, .. }, return_ns))) => {
                let k = format!("idem:{key}");
                extend(
                    &mut per_key,
                    &mut open,
                    k,
                    fence.to_string(),
                    (return_ns, op.invoke_ns),
                    lease_end(*lease_ms),
                    op.index,
                );
            }
            (Call::IdemCommit { key, fence, .. } | Call::IdemAbort { key, fence }, _) => {
                if let Some(at) = open.get(&(format!("idem:{key}"), fence.to_string())) {
                    let h = &mut per_key.get_mut(&format!("idem:{key}")).expect("listed")[*at];
                    h.end_ns = h.end_ns.min(op.invoke_ns);
                }
            }
            _ => {}
        }
    }
    for (key, mut hs) in per_key {
        report.holdings += hs.len();
        hs.retain(|h| h.start_ns < h.end_ns);
        hs.sort_by_key(|h| h.start_ns);
        let mut latest: Option<&Holding> = None;
        for h in &hs {
            if let Some(prev) = latest {
                if prev.who != h.who && h.start_ns + LEASE_GRANULARITY_NS < prev.end_ns {
                    // A forward step of the wall clock after the earlier
                    // lease was asked for and before the later grant
                    // returned ended that lease early by its size.
                    let overlap = prev.end_ns - h.start_ns;
                    let stepped = wall_clock_leases
                        && history.host_clock_forward_ns(prev.lease_from_ns, h.start_ns) + LEASE_GRANULARITY_NS
                            >= overlap;
                    if stepped || history.fault_during(&[Fault::Clock], h.start_ns, prev.end_ns) {
                        report.excused_overlaps += 1;
                    } else {
                        anomaly(
                            report,
                            "lease-overlap",
                            format!(
                                "{key}: {} (op {}) holds until {} ns while {} (op {}) holds from {} ns",
                                prev.who, prev.index, prev.end_ns, h.who, h.index, h.start_ns
                            ),
                        );
                    }
                }
            }
            if latest.is_none_or(|p| h.end_ns > p.end_ns) {
                latest = Some(h);
            }
        }
    }
}

/// Opens a holding for `who` from `at.0` (its grant's return) until
/// `end_ns`, or extends its open one; `at.1` is the invocation that asked
/// for the lease.
fn extend(
    per_key: &mut BTreeMap<String, Vec<Holding>>,
    open: &mut HashMap<(String, String), usize>,
    key: String,
    who: String,
    at: (u64, u64),
    end_ns: u64,
    index: usize,
) {
    let (start_ns, lease_from_ns) = at;
    let list = per_key.entry(key.clone()).or_default();
    match open.get(&(key.clone(), who.clone())) {
        Some(&at) if list[at].end_ns > start_ns => {
            let h = &mut list[at];
            if end_ns > h.end_ns {
                h.end_ns = end_ns;
                h.lease_from_ns = lease_from_ns;
            }
        }
        _ => {
            open.insert((key, who.clone()), list.len());
            list.push(Holding { who, start_ns, end_ns, lease_from_ns, index });
        }
    }
}

fn counters(history: &History, report: &mut SideReport) {
    let mut bounds: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut applied: HashMap<(&str, &str), (i64, usize)> = HashMap::new();
    let mut replays: Vec<(&str, &str, i64, usize)> = Vec::new();
    for op in history.ops() {
        let Call::CounterAdd { key, min, max, op: id, .. } = &op.call else { continue };
        let b = bounds.entry(key).or_insert((*min, *max));
        b.0 = b.0.max(*min);
        b.1 = b.1.min(*max);
        let Some(reply) = &op.reply else { continue };
        match (reply, id) {
            (Reply::CounterOk { value }, Some(id)) => {
                if let Some((v, first)) = applied.insert((key, id), (*value, op.index)) {
                    anomaly(
                        report,
                        "counter-op-applied-twice",
                        format!(
                            "{key}: op id {id} applied by op {first} (value {v}) and op {} (value {value})",
                            op.index
                        ),
                    );
                }
            }
            (Reply::Replayed { value }, Some(id)) => replays.push((key, id, *value, op.index)),
            _ => {}
        }
    }
    for op in history.ops() {
        let (key, value) = match (&op.call, &op.reply) {
            (
                Call::CounterAdd { key, .. },
                Some(Reply::CounterOk { value } | Reply::Refused { value } | Reply::Replayed { value }),
            ) => (key, *value),
            (Call::CounterGet { key }, Some(Reply::CounterValue { value })) => (key, *value),
            _ => continue,
        };
        if let Some(&(min, max)) = bounds.get(key.as_str()) {
            // The value of an untouched counter is 0 even when 0 is out of
            // bounds: only values an add produced must lie inside.
            if (value < min || value > max) && !(value == 0 && matches!(op.reply, Some(Reply::CounterValue { .. }))) {
                anomaly(
                    report,
                    "counter-out-of-bounds",
                    format!("{key}: op {} saw {value} outside [{min}, {max}]", op.index),
                );
            }
        }
    }
    for (key, id, value, index) in replays {
        match applied.get(&(key, id)) {
            Some((v, _)) if *v != value => anomaly(
                report,
                "counter-replay-differs",
                format!("{key}: op id {id} produced {v}, its replay (op {index}) says {value}"),
            ),
            _ => {}
        }
    }
}

fn replays(history: &History, report: &mut SideReport) {
    let mut results: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut commits: HashMap<&str, usize> = HashMap::new();
    for op in history.ops() {
        let (key, result) = match (&op.call, &op.reply) {
            (Call::IdemCommit { key, result, .. }, Some(Reply::Ok)) => {
                if let Some(first) = commits.insert(key, op.index) {
                    anomaly(
                        report,
                        "committed-twice",
                        format!("idem {key}: committed by op {first} and again by op {}", op.index),
                    );
                }
                (key, result)
            }
            (Call::IdemBegin { key, .. } | Call::IdemGet { key }, Some(Reply::Done { result })) => (key, result),
            _ => continue,
        };
        match results.get(key.as_str()) {
            Some((r, first)) if *r != result => anomaly(
                report,
                "replay-differs",
                format!("idem {key}: op {first} gives {r:?}, op {} gives {result:?}", op.index),
            ),
            Some(_) => {}
            None => {
                results.insert(key, (result, op.index));
            }
        }
    }
}

fn durability(history: &History, report: &mut SideReport) {
    // A kill of idem or of its external store: what was acknowledged
    // before must still be there after.
    let kills: Vec<u64> =
        history.faults().iter().filter(|f| matches!(f.fault, Fault::Kill | Fault::Store)).map(|f| f.start_ns).collect();
    if kills.is_empty() {
        return;
    }
    // The last kill that started after `t`, if any, is what a read after it
    // must survive; acks are compared with reads invoked after a kill that
    // began after the ack.
    let kill_between = |ack_ns: u64, read_ns: u64| kills.iter().any(|&k| k > ack_ns && k < read_ns);
    let mut commits: HashMap<&str, (&str, u64, usize)> = HashMap::new();
    // Claim: owner, when it returned, when it was invoked, which op.
    let mut claims: HashMap<&str, (&str, u64, u64, usize)> = HashMap::new();
    // Release: when it was invoked, when it returned (never: unknown).
    let mut releases: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    let mut versions: HashMap<&str, (u64, u64, usize)> = HashMap::new();
    for op in history.ops() {
        match (&op.call, &op.reply, op.return_ns) {
            (Call::IdemCommit { key, result, .. }, Some(Reply::Ok), Some(t)) => {
                commits.entry(key).or_insert((result, t, op.index));
            }
            (Call::Claim { key, owner }, Some(Reply::Claimed), Some(t)) => {
                claims.insert(key, (owner, t, op.invoke_ns, op.index));
            }
            (Call::Release { key, .. }, _, _) => {
                releases.entry(key).or_default().push((op.invoke_ns, op.return_ns.unwrap_or(u64::MAX)))
            }
            (Call::ValueSet { key, .. }, Some(Reply::ValueOk { version }), Some(t)) => {
                let e = versions.entry(key).or_insert((*version, t, op.index));
                if *version > e.0 {
                    *e = (*version, t, op.index);
                }
            }
            _ => {}
        }
    }
    for op in history.ops() {
        let Some(reply) = &op.reply else { continue };
        let Some(ret) = op.return_ns else { continue };
        let lost = match (&op.call, reply) {
            (Call::IdemGet { key } | Call::IdemBegin { key, .. }, r) => match commits.get(key.as_str()) {
                Some(&(result, t, index)) if kill_between(t, op.invoke_ns) => {
                    report.durability_reads += 1;
                    (!matches!(r, Reply::Done { result: got } if got == result)).then(|| {
                        format!("idem {key}: commit op {index} acknowledged, op {} after a restart saw {r:?}", op.index)
                    })
                }
                _ => None,
            },
            (Call::Owner { key }, Reply::Name { name }) => match claims.get(key.as_str()) {
                Some(&(owner, t, claim_invoke_ns, index)) if kill_between(t, op.invoke_ns) => {
                    // A release that may come after the claim (it had not
                    // returned when the claim was sent) and before the read.
                    let released = releases
                        .get(key.as_str())
                        .is_some_and(|r| r.iter().any(|&(i, done)| done > claim_invoke_ns && i < ret));
                    report.durability_reads += 1;
                    (!released && name.as_deref() != Some(owner)).then(|| {
                        format!(
                            "claim {key}: claim op {index} acknowledged, op {} after a restart saw {name:?}",
                            op.index
                        )
                    })
                }
                _ => None,
            },
            (Call::ValueGet { key }, Reply::Versioned { value }) => match versions.get(key.as_str()) {
                Some(&(version, t, index)) if kill_between(t, op.invoke_ns) => {
                    report.durability_reads += 1;
                    (value.as_ref().is_none_or(|(_, v)| *v < version)).then(|| {
                        format!(
                            "value {key}: version {version} acknowledged (op {index}), op {} after a restart saw {value:?}",
                            op.index
                        )
                    })
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(detail) = lost {
            anomaly(report, "acknowledged-write-lost", detail);
        }
    }
}

/// The op behind an index, for reports.
pub fn describe(op: &Op) -> String {
    format!("op {} (process {}): {:?} -> {:?}", op.index, op.process, op.call, op.reply)
}
