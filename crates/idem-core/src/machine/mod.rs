//! The state machine of one shard: command + time in, reply + effects out.
//! No sockets, files, threads or clocks: the caller supplies `now_ms` (the
//! engine's monotonic clock), fences and randomness through [`Env`], and
//! carries out the [`Effects`] (log the changes, deliver the woken replies).
//!
//! API CONTRACT (stable; the store and the server are written against it).

use bytes::Bytes;

use crate::backend::CmdResult;
use crate::change::Change;
use crate::command::Command;
use crate::limits::Limits;

/// Identifies a parked caller (a WAIT on IDEM.BEGIN or LOCK). Chosen by the
/// caller of [`Machine::apply`]; unique among live waiters of a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// What the machine needs from the world besides time.
pub trait Env {
    /// The next fence of the server-wide sequence: strictly greater than every
    /// fence returned before, across all shards and restarts.
    fn next_fence(&mut self) -> u64;
    /// 16 random bytes for a one-time token.
    fn random_token(&mut self) -> [u8; 16];
}

/// What a call made happen besides its own reply.
#[derive(Debug, Default)]
pub struct Effects {
    /// State changes, in the order they were made; the store logs them
    /// before any reply that depends on them is released.
    pub changes: Vec<Change>,
    /// Parked callers to answer now (served, timed out), in FIFO order.
    pub woken: Vec<(WaiterId, CmdResult)>,
}

impl Effects {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.changes.clear();
        self.woken.clear();
    }
}

/// The result of [`Machine::apply`].
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The command finished with this reply.
    Done(CmdResult),
    /// The caller is parked (WAIT); its reply will come through `Effects::woken`.
    Parked,
}

/// One shard's state.
#[derive(Debug)]
pub struct Machine {
    limits: Limits,
}

impl Machine {
    /// An empty shard.
    pub fn new(limits: Limits) -> Self {
        Machine { limits }
    }

    /// The limits this machine enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Applies one command at engine time `now_ms`. `waiter` must be `Some`
    /// when `cmd.wait_ms() > 0`; the machine then parks it when it would
    /// otherwise reply `running`/`busy`. CLAIM.ALL whose keys all live in this
    /// shard may be applied here; otherwise use [`claim_all`].
    pub fn apply(
        &mut self,
        now_ms: u64,
        cmd: &Command,
        waiter: Option<WaiterId>,
        env: &mut dyn Env,
        fx: &mut Effects,
    ) -> Applied {
        let _ = (now_ms, cmd, waiter, env, fx);
        todo!("machine")
    }

    /// Advances time: expired leases hand over to the first waiter, waits that
    /// passed their deadline are answered, expired records are reclaimed.
    pub fn tick(&mut self, now_ms: u64, env: &mut dyn Env, fx: &mut Effects) {
        let _ = (now_ms, env, fx);
        todo!("machine")
    }

    /// The earliest engine time at which `tick` has work to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        todo!("machine")
    }

    /// Forgets a parked waiter whose caller went away.
    pub fn cancel(&mut self, waiter: WaiterId) {
        let _ = waiter;
        todo!("machine")
    }

    /// Applies a logged change during recovery (no waiters exist then).
    pub fn replay(&mut self, change: &Change) {
        let _ = change;
        todo!("machine")
    }

    /// Calls `out` with changes that rebuild every live record at `now_ms`
    /// (for snapshots); replaying them into an empty machine gives this state.
    pub fn dump(&self, now_ms: u64, out: &mut dyn FnMut(Change)) {
        let _ = (now_ms, out);
        todo!("machine")
    }

    /// Live records held (all primitives).
    pub fn len(&self) -> usize {
        todo!("machine")
    }

    /// Whether the shard holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// CLAIM.ALL across shards: all or nothing. `shards[shard_of(key)]` owns each
/// key. Either every key is claimed by `owner` (reply `["claimed"]`) or none
/// changes and the reply lists every conflicting key and its owner.
pub fn claim_all(
    now_ms: u64,
    owner: &Bytes,
    keys: &[Bytes],
    shards: &mut [&mut Machine],
    shard_of: &dyn Fn(&[u8]) -> usize,
    fx: &mut Effects,
) -> CmdResult {
    let _ = (now_ms, owner, keys, shards, shard_of, fx);
    todo!("machine")
}
