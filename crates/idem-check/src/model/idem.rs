//! IDEM.BEGIN, IDEM.COMMIT, IDEM.ABORT, IDEM.GET: a record that is absent,
//! running under a fenced lease, or done with a result replayed forever
//! (within KEEP, longer than any run).

use super::{bind_fence, Lease, Model, Timing};
use crate::history::{Call, Op, Reply};

/// The model of idempotency keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdemModel {
    /// How lease ends are judged.
    pub timing: Timing,
}

/// A record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// No record (never begun, or aborted).
    Absent,
    /// An attempt runs under `fence` (unknown when its BEGIN's reply was
    /// lost) until its lease ends; an ended one is kept for its attempt
    /// count.
    Running { fence: Option<u64>, attempt: u32, lease: Lease },
    /// Committed.
    Done { result: String },
}

/// A record and the highest fence granted on its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdemState {
    record: Record,
    fence_max: u64,
}

impl IdemModel {
    /// The states a new attempt leads to from `s`, checking its reply.
    fn start(s: &IdemState, op: &Op, attempt: u32, lease_ms: u64) -> Option<IdemState> {
        let parked = matches!(op.call, Call::IdemBegin { wait_ms, .. } if wait_ms > 0);
        let lease = if op.reply.is_none() && parked {
            Lease::granted_to_unknown_waiter(op, lease_ms)
        } else {
            Lease::granted(op, lease_ms)
        };
        match &op.reply {
            Some(Reply::Started { fence, attempt: a }) if *fence > s.fence_max && *a == attempt => {
                Some(IdemState { record: Record::Running { fence: Some(*fence), attempt, lease }, fence_max: *fence })
            }
            None => Some(IdemState { record: Record::Running { fence: None, attempt, lease }, fence_max: s.fence_max }),
            _ => None,
        }
    }

    /// COMMIT or ABORT under `fence`: `done` is the record it leaves when
    /// it holds the live lease.
    fn finish(&self, s: &IdemState, op: &Op, fence: u64, done: Record) -> Vec<IdemState> {
        let (holds, over) = match &s.record {
            Record::Running { fence: Some(f), lease, .. } if *f == fence => {
                (lease.may_be_live(op, self.timing), lease.may_be_over(op, self.timing))
            }
            _ => (false, true),
        };
        let mut next = Vec::new();
        if holds && matches!(op.reply, Some(Reply::Ok) | None) {
            next.push(IdemState { record: done, fence_max: s.fence_max });
        }
        if over && matches!(op.reply, Some(Reply::Stale) | None) {
            next.push(s.clone());
        }
        next
    }
}

impl Model for IdemModel {
    type State = IdemState;

    fn init(&self) -> Self::State {
        IdemState { record: Record::Absent, fence_max: 0 }
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        let t = self.timing;
        match &op.call {
            Call::IdemBegin { lease_ms, .. } => match &s.record {
                Record::Absent => Self::start(s, op, 1, *lease_ms).into_iter().collect(),
                Record::Done { result } => match &op.reply {
                    None => vec![s.clone()],
                    Some(Reply::Done { result: r }) if r == result => vec![s.clone()],
                    Some(_) => vec![],
                },
                Record::Running { fence, attempt, lease } => {
                    let mut next = Vec::new();
                    if lease.may_be_live(op, t) {
                        match &op.reply {
                            None => next.push(s.clone()),
                            Some(Reply::Running { fence: seen }) => {
                                if let Some(f) = bind_fence(*fence, *seen) {
                                    let mut n = s.clone();
                                    n.record = Record::Running { fence: f, attempt: *attempt, lease: *lease };
                                    next.push(n);
                                }
                            }
                            Some(_) => {}
                        }
                    }
                    if lease.may_be_over(op, t) {
                        next.extend(Self::start(s, op, attempt.saturating_add(1), *lease_ms));
                    }
                    next
                }
            },
            Call::IdemCommit { fence, result, .. } => {
                self.finish(s, op, *fence, Record::Done { result: result.clone() })
            }
            Call::IdemAbort { fence, .. } => self.finish(s, op, *fence, Record::Absent),
            Call::IdemGet { .. } => {
                let Some(reply) = &op.reply else { return vec![s.clone()] };
                match (&s.record, reply) {
                    (Record::Absent, Reply::Absent) => vec![s.clone()],
                    (Record::Done { result }, Reply::Done { result: r }) if r == result => vec![s.clone()],
                    (Record::Running { lease, .. }, Reply::Absent) if lease.may_be_over(op, t) => vec![s.clone()],
                    (Record::Running { fence, attempt, lease }, Reply::Running { fence: seen })
                        if lease.may_be_live(op, t) =>
                    {
                        bind_fence(*fence, *seen)
                            .map(|f| IdemState {
                                record: Record::Running { fence: f, attempt: *attempt, lease: *lease },
                                fence_max: s.fence_max,
                            })
                            .into_iter()
                            .collect()
                    }
                    _ => vec![],
                }
            }
            _ => vec![],
        }
    }
}
