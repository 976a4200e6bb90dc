//! Histories: what the clients asked, what they were told, and when.
//!
//! A history is a JSONL file of [`Event`]s. Each client *process* has at
//! most one call in flight: an `invoke` event carries the [`Call`], and the
//! next event of the same process completes it:
//!
//! - `ok`: a reply arrived ([`Reply`]; a `STALE` or `MISMATCH` error is a
//!   reply too, since it is defined by the contract);
//! - `fail`: the call certainly did not happen (it was never sent);
//! - `info`: the outcome is unknown (timeout, dropped connection, a
//!   `READONLY` or `BUSY` error, a call still open at the end). It may have
//!   taken effect at any time after its invocation, or never.
//!
//! A process whose call ended in `info` is never used again, as in Jepsen:
//! its connection's fate is unknown. `nemesis` events mark faults; their
//! `process` is ignored. Times are nanoseconds of the recorder's monotonic
//! clock, the one reference clock on a single host.

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

/// What an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A call was sent.
    Invoke,
    /// Its reply arrived.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Its outcome is unknown.
    Info,
    /// A fault started or ended.
    Nemesis,
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process (ignored for nemesis events).
    pub process: u64,
    /// What the event is.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Monotonic time of the recorder, ns.
    pub time_ns: u64,
    /// The call, on `invoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
    /// The reply, on `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    /// Why, on `fail` and `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fault, on `nemesis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nemesis: Option<Nemesis>,
}

impl Event {
    /// An `invoke` of `call`.
    pub fn invoke(process: u64, time_ns: u64, call: Call) -> Event {
        Event { process, kind: EventKind::Invoke, time_ns, call: Some(call), reply: None, error: None, nemesis: None }
    }
    /// The `ok` completion with `reply`.
    pub fn ok(process: u64, time_ns: u64, reply: Reply) -> Event {
        Event { process, kind: EventKind::Ok, time_ns, call: None, reply: Some(reply), error: None, nemesis: None }
    }
    /// A `fail` (did not happen) or `info` (unknown) completion.
    pub fn ended(process: u64, time_ns: u64, kind: EventKind, error: impl Into<String>) -> Event {
        assert!(matches!(kind, EventKind::Fail | EventKind::Info), "only fail and info carry an error");
        Event { process, kind, time_ns, call: None, reply: None, error: Some(error.into()), nemesis: None }
    }
    /// A fault starting (`active`) or ending.
    pub fn nemesis(time_ns: u64, fault: Fault, active: bool) -> Event {
        Event {
            process: 0,
            kind: EventKind::Nemesis,
            time_ns,
            call: None,
            reply: None,
            error: None,
            nemesis: Some(Nemesis { fault, active, step_ns: None, since_ns: None }),
        }
    }
    /// A step of the host's wall clock by `step_ns`, seen at `time_ns`,
    /// after the clocks last agreed at `since_ns`.
    pub fn host_clock_step(time_ns: u64, since_ns: u64, step_ns: i64) -> Event {
        let nemesis =
            Nemesis { fault: Fault::HostClock, active: true, step_ns: Some(step_ns), since_ns: Some(since_ns) };
        Event { nemesis: Some(nemesis), ..Event::nemesis(time_ns, Fault::HostClock, true) }
    }
}

/// A fault the harness injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The server was killed (active) until it answered again (end). Its
    /// engine clock resumes behind real time after a restart, so no upper
    /// bound on a lease's end holds across one.
    Kill,
    /// The server was stopped with SIGSTOP (active) until SIGCONT.
    Pause,
    /// A client held a lease while stalled past its end.
    ClientPause,
    /// The server's clock was moved (monotonic shift or wall-clock jump).
    Clock,
    /// The server's disk failed (EIO or full).
    Disk,
    /// The network between the server and its store failed.
    Net,
    /// The external store itself was killed or paused.
    Store,
    /// The host's wall clock stepped against the harness's monotonic clock
    /// (seen by the harness, not injected). The external engines count
    /// leases on their wall clock, so a step moves their lease ends against
    /// the harness's reference clock. One event, written when the step is
    /// seen ([`Event::host_clock_step`]), carries the step and the earliest
    /// time it can have happened; it needs no end event.
    HostClock,
}

/// A fault event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nemesis {
    /// Which fault.
    pub fault: Fault,
    /// Started (true) or ended (false).
    pub active: bool,
    /// [`Fault::HostClock`] only: the wall clock's step against the
    /// monotonic clock, ns (positive: forward, leases on it end early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ns: Option<i64>,
    /// [`Fault::HostClock`] only: the last time the clocks were seen
    /// agreeing, ns; the step happened after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<u64>,
}

/// A call of one of idem's commands (docs/commands.md), with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Call {
    IdemBegin { key: String, lease_ms: u64, wait_ms: u64 },
    IdemCommit { key: String, fence: u64, result: String },
    IdemAbort { key: String, fence: u64 },
    IdemGet { key: String },
    Claim { key: String, owner: String },
    Release { key: String, owner: String },
    Owner { key: String },
    Lock { name: String, owner: String, lease_ms: u64, wait_ms: u64 },
    Renew { name: String, owner: String, lease_ms: u64 },
    Unlock { name: String, owner: String },
    LockInfo { name: String },
    TokenNew { scope: String, ttl_ms: u64 },
    TokenUse { scope: String, token: String },
    CounterAdd { key: String, delta: i64, min: i64, max: i64, op: Option<String> },
    CounterGet { key: String },
    ValueGet { key: String },
    ValueSet { key: String, value: String, if_version: Option<u64> },
    FsmMove { key: String, to: String, from: Vec<String> },
    FsmGet { key: String },
    SlotsReserve { resource: String, first: u32, last: u32, holder: String, size: u32 },
    SlotsRelease { resource: String, first: u32, last: u32, holder: String },
    SlotsGet { resource: String },
}

/// A primitive: each has its own keyspace and its own model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Primitive {
    Idem,
    Claim,
    Lock,
    Token,
    Counter,
    Value,
    Fsm,
    Slots,
}

impl Call {
    /// The primitive and key this call touches, or `None` when the key is
    /// known only from a reply that never came (a `TOKEN.NEW` whose token
    /// nobody learnt, so nobody can use it).
    pub fn partition(&self, reply: Option<&Reply>) -> Option<(Primitive, String)> {
        use Call::*;
        let (p, k) = match self {
            IdemBegin { key, .. } | IdemCommit { key, .. } | IdemAbort { key, .. } | IdemGet { key } => {
                (Primitive::Idem, key.clone())
            }
            Claim { key, .. } | Release { key, .. } | Owner { key } => (Primitive::Claim, key.clone()),
            Lock { name, .. } | Renew { name, .. } | Unlock { name, .. } | LockInfo { name } => {
                (Primitive::Lock, name.clone())
            }
            TokenNew { scope, .. } => match reply {
                Some(Reply::Token { token }) => (Primitive::Token, format!("{scope}\n{token}")),
                _ => return None,
            },
            TokenUse { scope, token } => (Primitive::Token, format!("{scope}\n{token}")),
            CounterAdd { key, .. } | CounterGet { key } => (Primitive::Counter, key.clone()),
            ValueGet { key } | ValueSet { key, .. } => (Primitive::Value, key.clone()),
            FsmMove { key, .. } | FsmGet { key } => (Primitive::Fsm, key.clone()),
            SlotsReserve { resource, .. } | SlotsRelease { resource, .. } | SlotsGet { resource } => {
                (Primitive::Slots, resource.clone())
            }
        };
        Some((p, k))
    }
}

/// A reply, decoded strictly from the server's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Reply {
    /// IDEM.BEGIN: do the work.
    Started { fence: u64, attempt: u32 },
    /// IDEM.BEGIN / IDEM.GET: another attempt holds a live lease.
    Running { fence: u64 },
    /// IDEM.BEGIN / IDEM.GET: the stored result.
    Done { result: String },
    /// IDEM.GET: no record (or its lease ran out).
    Absent,
    /// `["ok"]` of IDEM.COMMIT and IDEM.ABORT.
    Ok,
    /// The `STALE` error of IDEM.COMMIT / IDEM.ABORT.
    Stale,
    /// CLAIM.
    Claimed,
    /// CLAIM: someone else owns it.
    Held { owner: String },
    /// An integer reply (RELEASE, UNLOCK, TOKEN.USE, SLOTS.RELEASE).
    Int { n: i64 },
    /// OWNER, FSM.GET.
    Name { name: Option<String> },
    /// LOCK.
    Acquired { fence: u64 },
    /// LOCK: someone else holds a live lease.
    Busy { holder: String },
    /// RENEW.
    Renewed { fence: u64 },
    /// RENEW: not the holder of a live lease.
    Lost,
    /// LOCK.INFO.
    LockFree,
    /// LOCK.INFO.
    LockHeld { owner: String, fence: u64 },
    /// TOKEN.NEW.
    Token { token: String },
    /// COUNTER.ADD applied.
    CounterOk { value: i64 },
    /// COUNTER.ADD refused (bounds).
    Refused { value: i64 },
    /// COUNTER.ADD with an op id already applied.
    Replayed { value: i64 },
    /// COUNTER.GET.
    CounterValue { value: i64 },
    /// VALUE.GET.
    Versioned { value: Option<(String, u64)> },
    /// VALUE.SET applied.
    ValueOk { version: u64 },
    /// VALUE.SET refused.
    Conflict { version: u64 },
    /// FSM.MOVE applied.
    Moved,
    /// FSM.MOVE: already in the target state.
    Already,
    /// FSM.MOVE refused.
    FsmRefused { current: Option<String> },
    /// SLOTS.RESERVE.
    Reserved,
    /// SLOTS.RESERVE refused: the slots held by others.
    SlotConflict { held: Vec<(u32, String)> },
    /// SLOTS.GET.
    Slots { holders: Vec<Option<String>> },
}

/// A call with its outcome: one entry of a history, paired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Position among the history's ops, in invocation order.
    pub index: usize,
    /// The client process.
    pub process: u64,
    /// What was asked.
    pub call: Call,
    /// What was answered; `None` when the outcome is unknown (`info`).
    pub reply: Option<Reply>,
    /// When it was sent, ns.
    pub invoke_ns: u64,
    /// When its reply arrived, ns; `None` when the outcome is unknown.
    pub return_ns: Option<u64>,
    /// Server restarts (kills) that began before the invocation.
    pub restarts_before_invoke: u32,
}

/// A fault, as an interval of the recorder's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// Which fault.
    pub fault: Fault,
    /// When it started, ns.
    pub start_ns: u64,
    /// When it ended, ns (`u64::MAX` if it never did).
    pub end_ns: u64,
    /// [`Fault::HostClock`]: the step, ns (0 for every other fault).
    pub step_ns: i64,
}

/// A paired history.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<Op>,
    faults: Vec<FaultWindow>,
    failed: usize,
}

/// A history that cannot be paired.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A line is not an event.
    #[error("line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Reading failed.
    #[error("reading the history: {0}")]
    Io(#[from] std::io::Error),
    /// The events do not pair.
    #[error("event {index} (process {process}): {reason}")]
    Malformed {
        /// 0-based event index.
        index: usize,
        /// Its process.
        process: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl History {
    /// Reads a JSONL history.
    pub fn from_jsonl(reader: impl BufRead) -> Result<History, HistoryError> {
        let mut events = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            events.push(serde_json::from_str(&line).map_err(|source| HistoryError::Parse { line: i + 1, source })?);
        }
        History::from_events(&events)
    }

    /// Pairs events into ops. Calls still open at the end are `info`.
    pub fn from_events(events: &[Event]) -> Result<History, HistoryError> {
        let mut open: HashMap<u64, (usize, u64, Call, u32)> = HashMap::new();
        let mut retired: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut done: Vec<(usize, Op)> = Vec::new();
        let mut active: HashMap<Fault, (u64, u32)> = HashMap::new();
        let mut faults = Vec::new();
        let mut restarts = 0u32;
        let mut failed = 0;
        let mut last_ns = 0u64;
        for (i, e) in events.iter().enumerate() {
            let bad = |reason| HistoryError::Malformed { index: i, process: e.process, reason };
            if e.time_ns < last_ns {
                return Err(bad("time goes backwards"));
            }
            last_ns = e.time_ns;
            match e.kind {
                EventKind::Nemesis => {
                    let n = e.nemesis.ok_or_else(|| bad("a nemesis event without its fault"))?;
                    if n.fault == Fault::HostClock {
                        // A point, whole in one event: the step happened
                        // between `since_ns` and this event.
                        let step_ns = n.step_ns.ok_or_else(|| bad("a host clock step without its size"))?;
                        let since_ns = n.since_ns.unwrap_or(e.time_ns).min(e.time_ns);
                        faults.push(FaultWindow { fault: n.fault, start_ns: since_ns, end_ns: e.time_ns, step_ns });
                        continue;
                    }
                    if n.active {
                        if n.fault == Fault::Kill {
                            restarts += 1;
                        }
                        // Faults of one kind may overlap (two stalled
                        // holders): one window from the first start to the
                        // last end.
                        active.entry(n.fault).or_insert((e.time_ns, 0)).1 += 1;
                    } else {
                        let (start_ns, depth) =
                            active.get_mut(&n.fault).ok_or_else(|| bad("a fault ended that never started"))?;
                        *depth -= 1;
                        if *depth == 0 {
                            faults.push(FaultWindow {
                                fault: n.fault,
                                start_ns: *start_ns,
                                end_ns: e.time_ns,
                                step_ns: 0,
                            });
                            active.remove(&n.fault);
                        }
                    }
                }
                EventKind::Invoke => {
                    let call = e.call.clone().ok_or_else(|| bad("an invoke without its call"))?;
                    if retired.contains(&e.process) {
                        return Err(bad("a process is reused after an unknown outcome"));
                    }
                    if open.insert(e.process, (i, e.time_ns, call, restarts)).is_some() {
                        return Err(bad("a process invokes while a call is open"));
                    }
                }
                EventKind::Ok | EventKind::Fail | EventKind::Info => {
                    let (at, invoke_ns, call, restarts_before_invoke) =
                        open.remove(&e.process).ok_or_else(|| bad("a completion without an open call"))?;
                    let (reply, return_ns) = match e.kind {
                        EventKind::Ok => {
                            (Some(e.reply.clone().ok_or_else(|| bad("an ok without its reply"))?), Some(e.time_ns))
                        }
                        EventKind::Fail => {
                            failed += 1;
                            continue;
                        }
                        _ => {
                            retired.insert(e.process);
                            (None, None)
                        }
                    };
                    let op =
                        Op { index: 0, process: e.process, call, reply, invoke_ns, return_ns, restarts_before_invoke };
                    done.push((at, op));
                }
            }
        }
        for (process, (at, invoke_ns, call, restarts_before_invoke)) in open {
            done.push((
                at,
                Op { index: 0, process, call, reply: None, invoke_ns, return_ns: None, restarts_before_invoke },
            ));
        }
        for (fault, (start_ns, _)) in active {
            faults.push(FaultWindow { fault, start_ns, end_ns: u64::MAX, step_ns: 0 });
        }
        done.sort_by_key(|(at, _)| *at);
        let ops = done
            .into_iter()
            .enumerate()
            .map(|(index, (_, mut op))| {
                op.index = index;
                op
            })
            .collect();
        faults.sort_by_key(|f| f.start_ns);
        Ok(History { ops, faults, failed })
    }

    /// Ops in invocation order (`fail`s excluded: they did not happen).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    /// The faults, by start.
    pub fn faults(&self) -> &[FaultWindow] {
        &self.faults
    }
    /// How many calls certainly did not happen.
    pub fn failed(&self) -> usize {
        self.failed
    }
    /// The forward steps of the host's wall clock that may have happened
    /// between `from_ns` and `to_ns`, summed, ns (backward steps lengthen
    /// wall-clock leases, so they do not count).
    pub fn host_clock_forward_ns(&self, from_ns: u64, to_ns: u64) -> u64 {
        self.faults
            .iter()
            .filter(|f| f.fault == Fault::HostClock && f.step_ns > 0 && f.start_ns <= to_ns && f.end_ns >= from_ns)
            .map(|f| f.step_ns.unsigned_abs())
            .sum()
    }

    /// Whether a fault of one of `kinds` overlaps `[from_ns, to_ns]`.
    pub fn fault_during(&self, kinds: &[Fault], from_ns: u64, to_ns: u64) -> bool {
        self.faults.iter().any(|f| kinds.contains(&f.fault) && f.start_ns <= to_ns && f.end_ns >= from_ns)
    }
}
