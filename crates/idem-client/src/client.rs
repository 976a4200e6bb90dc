//! [`Client`]: one typed call per command of docs/commands.md.

use std::sync::Arc;

use bytes::Bytes;
use idem_core::command::{FSM_NONE, IDEM_LEASE_MS_DEFAULT, KEEP_MS_DEFAULT};
use idem_core::{Command, Reply};

use crate::config::Config;
use crate::error::Error;
use crate::pool::Pool;
use crate::remote::RemoteBackend;
use crate::replies::{
    bytes_or_nil, flag, int, ok_reply, protocol, renew_reply, Begin, Claim, ClaimAll, CounterAdd, FsmMove, Held,
    IdemState, LockInfo, LockReply, Parts, Renew, Reserve, SlotHeld, ValueSet, Versioned,
};
use crate::wire;

/// Options of `IDEM.BEGIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeginOptions {
    fingerprint: Option<Bytes>,
    lease_ms: u64,
    wait_ms: u64,
}

impl Default for BeginOptions {
    fn default() -> Self {
        BeginOptions { fingerprint: None, lease_ms: IDEM_LEASE_MS_DEFAULT, wait_ms: 0 }
    }
}

impl BeginOptions {
    /// The defaults: no fingerprint, a 30 s lease, no wait.
    pub fn new() -> Self {
        Self::default()
    }
    /// A fingerprint of the request (a hash of its body): the same key with
    /// another fingerprint is refused with [`Error::Mismatch`].
    pub fn fingerprint(mut self, fp: impl AsRef<[u8]>) -> Self {
        self.fingerprint = Some(Bytes::copy_from_slice(fp.as_ref()));
        self
    }
    /// How long the attempt may run before another caller may take over.
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.lease_ms = ms;
        self
    }
    /// How long to wait, when another attempt is running, for it to end.
    pub fn wait_ms(mut self, ms: u64) -> Self {
        self.wait_ms = ms;
        self
    }
}

/// Options of `COUNTER.ADD`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterOptions {
    min: Option<i64>,
    max: Option<i64>,
    op: Option<(Bytes, u64)>,
}

impl CounterOptions {
    /// No bounds, no op id.
    pub fn new() -> Self {
        Self::default()
    }
    /// Refuse an add that would leave the value below `n`.
    pub fn min(mut self, n: i64) -> Self {
        self.min = Some(n);
        self
    }
    /// Refuse an add that would leave the value above `n`.
    pub fn max(mut self, n: i64) -> Self {
        self.max = Some(n);
        self
    }
    /// Apply at most once per `id` within 24 h (a retry gets
    /// [`CounterAdd::Replayed`]).
    pub fn op(self, id: impl AsRef<[u8]>) -> Self {
        self.op_keep(id, KEEP_MS_DEFAULT)
    }
    /// Apply at most once per `id` within `keep_ms`.
    pub fn op_keep(mut self, id: impl AsRef<[u8]>, keep_ms: u64) -> Self {
        self.op = Some((Bytes::copy_from_slice(id.as_ref()), keep_ms));
        self
    }
}

fn b(x: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(x.as_ref())
}

/// An idem client: a bounded pool of connections to one server, and one
/// typed method per command. Cheap to clone (clones share the pool).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_client::Error> {
/// # let server = idem_client::testing::TestServer::start().await;
/// # let url = server.url();
/// use idem_client::{Claim, Client, Config};
///
/// let client = Client::connect(Config::new(url).pool_size(8)).await?;
/// assert_eq!(client.claim("email:ada@example.com", "user-1", None).await?, Claim::Claimed);
/// assert!(matches!(client.claim("email:ada@example.com", "user-2", None).await?, Claim::Held { .. }));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
}

impl Client {
    /// A client for `config`; no connection is opened until the first call.
    pub fn new(config: Config) -> Result<Client, Error> {
        Ok(Client { pool: Arc::new(Pool::new(config)?) })
    }

    /// A client for `config`, checked with a `PING`.
    pub async fn connect(config: Config) -> Result<Client, Error> {
        let c = Client::new(config)?;
        c.ping().await?;
        Ok(c)
    }

    /// A [`RemoteBackend`] sharing this client's pool.
    pub fn backend(&self) -> RemoteBackend {
        RemoteBackend::from_pool(self.pool.clone())
    }

    /// `PING`: the server answers.
    pub async fn ping(&self) -> Result<(), Error> {
        match self.pool.send_raw(redis::cmd("PING"), "PING").await? {
            redis::Value::SimpleString(s) if s == "PONG" => Ok(()),
            redis::Value::Okay => Ok(()),
            other => Err(protocol("PING", format!("expected PONG, got {other:?}"))),
        }
    }

    /// Sends one command and checks its reply against the contract.
    pub(crate) async fn call(&self, cmd: Command) -> Result<Reply, Error> {
        let mut values = self.pool.send(std::slice::from_ref(&cmd)).await?;
        let v = values.pop().ok_or_else(|| protocol(cmd.name(), "no reply".into()))?;
        wire::decode(&cmd, v)
    }

    // ---- idempotency keys ----

    /// `IDEM.BEGIN`. A fingerprint mismatch is [`Error::Mismatch`].
    pub async fn begin(&self, key: impl AsRef<[u8]>, opts: &BeginOptions) -> Result<Begin, Error> {
        let cmd = Command::IdemBegin {
            key: b(key),
            fingerprint: opts.fingerprint.clone(),
            lease_ms: opts.lease_ms,
            wait_ms: opts.wait_ms,
        };
        Begin::from_reply(self.call(cmd).await?)
    }

    /// `IDEM.COMMIT` with the default KEEP (24 h). A fence that is no longer
    /// current is [`Error::Stale`].
    pub async fn commit(&self, key: impl AsRef<[u8]>, fence: u64, result: impl AsRef<[u8]>) -> Result<(), Error> {
        self.commit_keep(key, fence, result, KEEP_MS_DEFAULT).await
    }

    /// `IDEM.COMMIT ... KEEP keep_ms`.
    pub async fn commit_keep(
        &self,
        key: impl AsRef<[u8]>,
        fence: u64,
        result: impl AsRef<[u8]>,
        keep_ms: u64,
    ) -> Result<(), Error> {
        let cmd = Command::IdemCommit { key: b(key), fence, result: b(result), keep_ms };
        self.ok("IDEM.COMMIT", cmd).await
    }

    /// `IDEM.ABORT`: the record is removed, the next BEGIN starts afresh.
    pub async fn abort(&self, key: impl AsRef<[u8]>, fence: u64) -> Result<(), Error> {
        self.ok("IDEM.ABORT", Command::IdemAbort { key: b(key), fence }).await
    }

    /// `IDEM.RENEW key fence LEASE ms`: the attempt's lease now ends
    /// `lease_ms` from now; returns its fence. [`Error::Stale`] when `fence`
    /// no longer holds the key (its lease ran out, another attempt took
    /// over, or it was committed): stop the work.
    pub async fn idem_renew(&self, key: impl AsRef<[u8]>, fence: u64, lease_ms: u64) -> Result<u64, Error> {
        renew_reply(self.call(Command::IdemRenew { key: b(key), fence, lease_ms }).await?, fence)
    }

    async fn ok(&self, name: &'static str, cmd: Command) -> Result<(), Error> {
        ok_reply(name, self.call(cmd).await?)
    }

    /// `IDEM.GET`.
    pub async fn idem_get(&self, key: impl AsRef<[u8]>) -> Result<IdemState, Error> {
        let mut p = Parts::new("IDEM.GET", self.call(Command::IdemGet { key: b(key) }).await?)?;
        let r = match p.word() {
            "absent" => IdemState::Absent,
            "running" => IdemState::Running { fence: p.uint()?, left_ms: p.uint()? },
            "done" => IdemState::Done(p.bytes()?),
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    /// `IDEM.DEL`: whether a record was removed.
    pub async fn idem_del(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        flag("IDEM.DEL", self.call(Command::IdemDel { key: b(key) }).await?)
    }

    // ---- unique claims ----

    /// `CLAIM key owner [TTL ms]`.
    pub async fn claim(
        &self,
        key: impl AsRef<[u8]>,
        owner: impl AsRef<[u8]>,
        ttl_ms: Option<u64>,
    ) -> Result<Claim, Error> {
        let mut p = Parts::new("CLAIM", self.call(Command::Claim { key: b(key), owner: b(owner), ttl_ms }).await?)?;
        let r = match p.word() {
            "claimed" => Claim::Claimed,
            "held" => Claim::Held { owner: p.bytes()? },
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    /// `CLAIM.ALL owner key...`: all or nothing.
    pub async fn claim_all<K: AsRef<[u8]>>(&self, owner: impl AsRef<[u8]>, keys: &[K]) -> Result<ClaimAll, Error> {
        let cmd = Command::ClaimAll { owner: b(owner), keys: keys.iter().map(b).collect() };
        let mut p = Parts::new("CLAIM.ALL", self.call(cmd).await?)?;
        match p.word() {
            "claimed" => p.end(ClaimAll::Claimed),
            "held" => {
                let mut held = Vec::new();
                while p.has_more() {
                    held.push(Held { key: p.bytes()?, owner: p.bytes()? });
                }
                Ok(ClaimAll::Held(held))
            }
            _ => p.unexpected(),
        }
    }

    /// `RELEASE key owner`: whether the owner's claim was removed.
    pub async fn release(&self, key: impl AsRef<[u8]>, owner: impl AsRef<[u8]>) -> Result<bool, Error> {
        flag("RELEASE", self.call(Command::Release { key: b(key), owner: b(owner) }).await?)
    }

    /// `OWNER key`.
    pub async fn owner(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        bytes_or_nil("OWNER", self.call(Command::Owner { key: b(key) }).await?)
    }

    // ---- leases (locks) ----

    /// `LOCK name owner LEASE ms [WAIT ms]`. [`crate::Lock`] wraps this with
    /// a watchdog and release on drop.
    pub async fn lock(
        &self,
        name: impl AsRef<[u8]>,
        owner: impl AsRef<[u8]>,
        lease_ms: u64,
        wait_ms: u64,
    ) -> Result<LockReply, Error> {
        let cmd = Command::Lock { name: b(name), owner: b(owner), lease_ms, wait_ms };
        let mut p = Parts::new("LOCK", self.call(cmd).await?)?;
        let r = match p.word() {
            "acquired" => LockReply::Acquired { fence: p.uint()? },
            "busy" => LockReply::Busy { holder: p.bytes()?, left_ms: p.uint()? },
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    /// `RENEW name owner LEASE ms`.
    pub async fn renew(&self, name: impl AsRef<[u8]>, owner: impl AsRef<[u8]>, lease_ms: u64) -> Result<Renew, Error> {
        let cmd = Command::Renew { name: b(name), owner: b(owner), lease_ms };
        let mut p = Parts::new("RENEW", self.call(cmd).await?)?;
        let r = match p.word() {
            "renewed" => Renew::Renewed { fence: p.uint()? },
            "lost" => Renew::Lost,
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    /// `UNLOCK name owner`: whether the owner held the lock.
    pub async fn unlock(&self, name: impl AsRef<[u8]>, owner: impl AsRef<[u8]>) -> Result<bool, Error> {
        flag("UNLOCK", self.call(Command::Unlock { name: b(name), owner: b(owner) }).await?)
    }

    /// `LOCK.INFO name`.
    pub async fn lock_info(&self, name: impl AsRef<[u8]>) -> Result<LockInfo, Error> {
        let mut p = Parts::new("LOCK.INFO", self.call(Command::LockInfo { name: b(name) }).await?)?;
        let r = match p.word() {
            "free" => LockInfo::Free,
            "held" => LockInfo::Held { owner: p.bytes()?, fence: p.uint()?, left_ms: p.uint()?, waiters: p.uint()? },
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    // ---- one-time tokens ----

    /// `TOKEN.NEW scope TTL ms`: a token of 32 lowercase hex characters.
    pub async fn token_new(&self, scope: impl AsRef<[u8]>, ttl_ms: u64) -> Result<String, Error> {
        match self.call(Command::TokenNew { scope: b(scope), ttl_ms }).await? {
            Reply::Bulk(t) if t.len() == 32 && t.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) => {
                Ok(String::from_utf8(t.to_vec()).expect("hex digits are ASCII"))
            }
            other => Err(protocol("TOKEN.NEW", format!("expected 32 hex characters, got {other:?}"))),
        }
    }

    /// `TOKEN.USE scope token`: true once for a valid token, then false.
    pub async fn token_use(&self, scope: impl AsRef<[u8]>, token: impl AsRef<[u8]>) -> Result<bool, Error> {
        flag("TOKEN.USE", self.call(Command::TokenUse { scope: b(scope), token: b(token) }).await?)
    }

    // ---- bounded counters ----

    /// `COUNTER.ADD key delta [MIN n] [MAX n] [OP id [KEEP ms]]`.
    pub async fn counter_add(
        &self,
        key: impl AsRef<[u8]>,
        delta: i64,
        opts: &CounterOptions,
    ) -> Result<CounterAdd, Error> {
        let (op, keep_ms) = match &opts.op {
            Some((id, keep)) => (Some(id.clone()), *keep),
            None => (None, KEEP_MS_DEFAULT),
        };
        let cmd = Command::CounterAdd { key: b(key), delta, min: opts.min, max: opts.max, op, keep_ms };
        let mut p = Parts::new("COUNTER.ADD", self.call(cmd).await?)?;
        let r = match p.word() {
            "ok" => CounterAdd::Applied(p.int()?),
            "refused" => CounterAdd::Refused(p.int()?),
            "replayed" => CounterAdd::Replayed(p.int()?),
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    /// `COUNTER.GET key` (0 when absent).
    pub async fn counter_get(&self, key: impl AsRef<[u8]>) -> Result<i64, Error> {
        int("COUNTER.GET", self.call(Command::CounterGet { key: b(key) }).await?)
    }

    // ---- versioned values ----

    /// `VALUE.GET key`.
    pub async fn value_get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>, Error> {
        match self.call(Command::ValueGet { key: b(key) }).await? {
            Reply::Nil => Ok(None),
            Reply::Array(v) => match <[Reply; 2]>::try_from(v) {
                Ok([Reply::Bulk(value), Reply::Int(version)]) if version > 0 => {
                    Ok(Some(Versioned { value, version: version as u64 }))
                }
                other => Err(protocol("VALUE.GET", format!("expected [value, version], got {other:?}"))),
            },
            other => Err(protocol("VALUE.GET", format!("expected [value, version] or nil, got {other:?}"))),
        }
    }

    /// `VALUE.SET key value [IFVERSION v]` (`Some(0)`: only if absent).
    pub async fn value_set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        if_version: Option<u64>,
    ) -> Result<ValueSet, Error> {
        let mut p =
            Parts::new("VALUE.SET", self.call(Command::ValueSet { key: b(key), value: b(value), if_version }).await?)?;
        let r = match p.word() {
            "ok" => ValueSet::Stored { version: p.uint()? },
            "conflict" => ValueSet::Conflict { version: p.uint()? },
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    // ---- state machines ----

    /// `FSM.MOVE key to FROM state...`; `"none"` among `from` stands for an
    /// absent key.
    pub async fn fsm_move<S: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        to: impl AsRef<[u8]>,
        from: &[S],
    ) -> Result<FsmMove, Error> {
        let cmd = Command::FsmMove { key: b(key), to: b(to), from: from.iter().map(b).collect() };
        let mut p = Parts::new("FSM.MOVE", self.call(cmd).await?)?;
        let r = match p.word() {
            "moved" => FsmMove::Moved(p.bytes()?),
            "already" => FsmMove::Already(p.bytes()?),
            "refused" => {
                let s = p.bytes()?;
                FsmMove::Refused { current: (!s.eq_ignore_ascii_case(FSM_NONE)).then_some(s) }
            }
            _ => return p.unexpected(),
        };
        p.end(r)
    }

    /// `FSM.GET key`.
    pub async fn fsm_get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        bytes_or_nil("FSM.GET", self.call(Command::FsmGet { key: b(key) }).await?)
    }

    // ---- slot reservations ----

    /// `SLOTS.RESERVE resource first last holder [SIZE n]`: all slots or none.
    pub async fn slots_reserve(
        &self,
        resource: impl AsRef<[u8]>,
        first: u32,
        last: u32,
        holder: impl AsRef<[u8]>,
        size: Option<u32>,
    ) -> Result<Reserve, Error> {
        let cmd = Command::SlotsReserve { resource: b(resource), first, last, holder: b(holder), size };
        let mut p = Parts::new("SLOTS.RESERVE", self.call(cmd).await?)?;
        match p.word() {
            "reserved" => p.end(Reserve::Reserved),
            "conflict" => {
                let mut held = Vec::new();
                while p.has_more() {
                    let slot = p.uint()?;
                    let slot = u32::try_from(slot)
                        .map_err(|_| protocol("SLOTS.RESERVE", format!("slot {slot} is out of range")))?;
                    held.push(SlotHeld { slot, holder: p.bytes()? });
                }
                Ok(Reserve::Conflict(held))
            }
            _ => p.unexpected(),
        }
    }

    /// `SLOTS.RELEASE resource first last holder`: how many slots were freed.
    pub async fn slots_release(
        &self,
        resource: impl AsRef<[u8]>,
        first: u32,
        last: u32,
        holder: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        let cmd = Command::SlotsRelease { resource: b(resource), first, last, holder: b(holder) };
        let n = int("SLOTS.RELEASE", self.call(cmd).await?)?;
        u64::try_from(n).map_err(|_| protocol("SLOTS.RELEASE", format!("negative count {n}")))
    }

    /// `SLOTS.GET resource`: one entry per slot, `None` for a free one
    /// (empty when the resource holds no slot).
    pub async fn slots_get(&self, resource: impl AsRef<[u8]>) -> Result<Vec<Option<Bytes>>, Error> {
        match self.call(Command::SlotsGet { resource: b(resource) }).await? {
            Reply::Array(v) => v.into_iter().map(|r| bytes_or_nil("SLOTS.GET", r)).collect(),
            other => Err(protocol("SLOTS.GET", format!("expected an array, got {other:?}"))),
        }
    }
}
