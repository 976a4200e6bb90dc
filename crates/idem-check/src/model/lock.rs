//! LOCK, RENEW, UNLOCK, LOCK.INFO: a fenced mutex with leases (Hazelcast's
//! FencedMutex, extended with expiry). A new holder's fence exceeds every
//! fence granted on the lock before; the holder's re-LOCK keeps its fence.

use super::{bind_fence, Lease, Model, Timing};
use crate::history::{Call, Op, Reply};

/// The model of fenced locks.
#[derive(Clone, Copy, Debug, Default)]
pub struct LockModel {
    /// How lease ends are judged.
    pub timing: Timing,
}

/// Who holds the lock, under which fence (unknown when the LOCK's reply was
/// lost), until when.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Holder {
    owner: String,
    fence: Option<u64>,
    lease: Lease,
}

/// The holder (an ended lease stays until someone takes over) and the
/// highest fence granted on the lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockState {
    holder: Option<Holder>,
    fence_max: u64,
}

impl Model for LockModel {
    type State = LockState;

    fn init(&self) -> Self::State {
        LockState { holder: None, fence_max: 0 }
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        let t = self.timing;
        let live = s.holder.as_ref().filter(|h| h.lease.may_be_live(op, t));
        let may_be_free = s.holder.as_ref().is_none_or(|h| h.lease.may_be_over(op, t));
        let mut next = Vec::new();
        match &op.call {
            Call::Lock { owner, lease_ms, wait_ms, .. } => {
                let lease = if op.reply.is_none() && *wait_ms > 0 {
                    Lease::granted_to_unknown_waiter(op, *lease_ms)
                } else {
                    Lease::granted(op, *lease_ms)
                };
                // LOCK again by the holder of a live lease: same fence.
                if let Some(h) = live.filter(|h| &h.owner == owner) {
                    let fence = match &op.reply {
                        Some(Reply::Acquired { fence }) => bind_fence(h.fence, *fence),
                        None => Some(h.fence),
                        Some(_) => None,
                    };
                    if let Some(fence) = fence {
                        next.push(LockState {
                            holder: Some(Holder { owner: owner.clone(), fence, lease }),
                            fence_max: s.fence_max.max(fence.unwrap_or(0)),
                        });
                    }
                }
                // A new grant: a larger fence.
                if may_be_free {
                    match &op.reply {
                        Some(Reply::Acquired { fence }) if *fence > s.fence_max => next.push(LockState {
                            holder: Some(Holder { owner: owner.clone(), fence: Some(*fence), lease }),
                            fence_max: *fence,
                        }),
                        None => next.push(LockState {
                            holder: Some(Holder { owner: owner.clone(), fence: None, lease }),
                            fence_max: s.fence_max,
                        }),
                        _ => {}
                    }
                }
                if let Some(h) = live.filter(|h| &h.owner != owner) {
                    match &op.reply {
                        Some(Reply::Busy { holder }) if *holder == h.owner => next.push(s.clone()),
                        None => next.push(s.clone()),
                        _ => {}
                    }
                }
            }
            Call::Renew { owner, lease_ms, .. } => {
                if let Some(h) = live.filter(|h| &h.owner == owner) {
                    let fence = match &op.reply {
                        Some(Reply::Renewed { fence }) => bind_fence(h.fence, *fence),
                        None => Some(h.fence),
                        Some(_) => None,
                    };
                    if let Some(fence) = fence {
                        let holder = Holder { owner: owner.clone(), fence, lease: Lease::granted(op, *lease_ms) };
                        next.push(LockState { holder: Some(holder), fence_max: s.fence_max });
                    }
                }
                let mine = s.holder.as_ref().is_some_and(|h| &h.owner == owner);
                if (!mine || may_be_free) && matches!(op.reply, Some(Reply::Lost) | None) {
                    next.push(s.clone());
                }
            }
            Call::Unlock { owner, .. } => {
                if live.is_some_and(|h| &h.owner == owner) && matches!(op.reply, Some(Reply::Int { n: 1 }) | None) {
                    next.push(LockState { holder: None, fence_max: s.fence_max });
                }
                let mine = s.holder.as_ref().is_some_and(|h| &h.owner == owner);
                if (!mine || may_be_free) && matches!(op.reply, Some(Reply::Int { n: 0 }) | None) {
                    next.push(s.clone());
                }
            }
            Call::LockInfo { .. } => match &op.reply {
                None => next.push(s.clone()),
                Some(Reply::LockFree) if may_be_free => next.push(s.clone()),
                Some(Reply::LockHeld { owner, fence }) => {
                    if let Some(h) = live.filter(|h| &h.owner == owner) {
                        if let Some(f) = bind_fence(h.fence, *fence) {
                            let holder = Holder { owner: h.owner.clone(), fence: f, lease: h.lease };
                            next.push(LockState { holder: Some(holder), fence_max: s.fence_max.max(*fence) });
                        }
                    }
                }
                Some(_) => {}
            },
            _ => {}
        }
        next
    }
}
