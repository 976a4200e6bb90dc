//! Sequential models of idem's primitives (docs/commands.md), one per
//! primitive, written from the contract and not from the implementation.
//!
//! A model says which replies an op may get in a state, and the states that
//! follow. A model may be nondeterministic: a lease whose end falls inside an
//! op's interval may count as live or as ended, and an op with an unknown
//! outcome leads to every state one of its possible replies would. An empty
//! list of next states means the reply is impossible.
//!
//! Time enters only through leases ([`Lease`]): the server grants a lease at
//! some instant inside the granting op's interval, so its end lies between
//! `invoke + lease` and `return + lease` on the recorder's clock. After a
//! server restart the engine clock resumes behind real time (docs/durability.md),
//! so only the lower bound survives a restart.

mod claim;
mod counter;
mod fsm;
mod idem;
mod lock;
mod slots;
mod token;
mod value;

pub use claim::ClaimModel;
pub use counter::CounterModel;
pub use fsm::FsmModel;
pub use idem::IdemModel;
pub use lock::LockModel;
pub use slots::SlotsModel;
pub use token::TokenModel;
pub use value::ValueModel;

use std::hash::Hash;

use crate::history::Op;

/// A sequential specification.
pub trait Model {
    /// A state of one key.
    type State: Clone + Eq + Hash + std::fmt::Debug;
    /// The state of a key nobody touched.
    fn init(&self) -> Self::State;
    /// The states `op` may leave behind from `s`; empty when its reply is
    /// impossible there. An op with an unknown outcome yields every state
    /// one of its possible replies leads to.
    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State>;
}

/// How exactly lease ends are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Tolerance on both bounds of a lease's end, ns: the server counts
    /// whole milliseconds, so it may round a lease's start down by up to
    /// one.
    pub slack_ns: u64,
}

/// The default tolerance: the server's millisecond rounding, plus margin.
pub const LEASE_SLACK_NS_DEFAULT: u64 = 2_000_000;

impl Default for Timing {
    fn default() -> Self {
        Timing { slack_ns: LEASE_SLACK_NS_DEFAULT }
    }
}

/// Bounds on when a lease ends, on the recorder's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// It cannot end before this.
    earliest_end_ns: u64,
    /// It must have ended by this, unless the server restarted since.
    latest_end_ns: u64,
    /// Server restarts before the grant.
    restarts: u32,
}

impl Lease {
    /// The lease `op` was granted for `lease_ms`.
    pub fn granted(op: &Op, lease_ms: u64) -> Lease {
        let lease_ns = lease_ms.saturating_mul(1_000_000);
        Lease {
            earliest_end_ns: op.invoke_ns.saturating_add(lease_ns),
            latest_end_ns: op.return_ns.map_or(u64::MAX, |r| r.saturating_add(lease_ns)),
            restarts: op.restarts_before_invoke,
        }
    }

    /// The lease of a parked `WAIT` call whose outcome is unknown: it may
    /// end at any time. A store hands a freed key to a parked waiter, and
    /// when the waiter's caller went away (its reply lost, its poll failed)
    /// the store gives back a grant it never picked up (backends-redis.md,
    /// *WAIT (IDEM.BEGIN and LOCK)*), with no `UNLOCK` in the history: nobody learnt that
    /// fence, so nobody can use it.
    pub fn granted_to_unknown_waiter(op: &Op, lease_ms: u64) -> Lease {
        Lease { earliest_end_ns: op.invoke_ns, ..Lease::granted(op, lease_ms) }
    }

    /// Whether the lease may have ended at some instant of `op`'s interval.
    pub fn may_be_over(&self, op: &Op, t: Timing) -> bool {
        op.return_ns.is_none_or(|r| r.saturating_add(t.slack_ns) >= self.earliest_end_ns)
    }

    /// Whether the lease may still run at some instant of `op`'s interval.
    pub fn may_be_live(&self, op: &Op, t: Timing) -> bool {
        op.restarts_before_invoke > self.restarts || op.invoke_ns < self.latest_end_ns.saturating_add(t.slack_ns)
    }
}

/// A fence a model may not know yet (granted to a call whose reply was
/// lost) and learns from the first reply that shows it.
pub(crate) fn bind_fence(known: Option<u64>, seen: u64) -> Option<Option<u64>> {
    match known {
        None => Some(Some(seen)),
        Some(f) if f == seen => Some(Some(f)),
        Some(_) => None,
    }
}
