//! The Redis and Redis Cluster backend (see `docs/backends-redis.md`).
//!
//! Each command runs as one Lua script (EVALSHA, loaded on first use), so it
//! is atomic on the Redis server; time is the server's (`TIME` inside the
//! script), never the client's. Every Redis key a command touches shares one
//! hash tag derived from the idem key ([`keys`]), so on Redis Cluster each
//! script runs on one slot. CLAIM.ALL touches several idem keys: on a cluster
//! they must share a hash tag (`{user:1}:email`, `{user:1}:phone`), otherwise
//! the command is refused with `ERR`.
//!
//! WAIT (IDEM.BEGIN and LOCK) is a poll: the caller enqueues itself in a
//! per-key FIFO queue in Redis and polls with capped backoff
//! ([`POLL_BACKOFF_MAX`]); a parked caller holds no connection (the
//! connection is multiplexed) and no thread, only a timer.

mod keys;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use idem_core::command::SLOTS_SIZE_DEFAULT;
use idem_core::{Backend, BoxFuture, CmdError, CmdResult, Command, ErrorCode, Limits, Reply};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Script, Value};

use idem_core::outcome::{
    Begin, Claimed, ClaimedAll, Counted, CounterStatus, Ended, IdemGot, IdemRenewed, LockInfo, LockRenewed, Locked,
    MoveStatus, Moved, Reserved, ValueSetStatus, ValueWritten,
};
use idem_core::BackendError;
use keys::{rkey, RKey};

/// The first pause between two polls of a parked WAIT.
pub const POLL_BACKOFF_MIN: Duration = Duration::from_millis(2);
/// The longest pause between two polls of a parked WAIT: the worst added
/// latency between a key being freed and a parked caller noticing.
pub const POLL_BACKOFF_MAX: Duration = Duration::from_millis(50);

/// How long a key's fence counter outlives the record (or lock) it serves,
/// so that a key deleted and made again continues from its last fence
/// rather than from the clock.
pub const FENCE_GRACE: Duration = Duration::from_secs(600);
/// A parked waiter that has not polled for this long is taken for gone by
/// the scripts (its caller died without cancelling).
pub const WAITER_STALE: Duration = Duration::from_secs(2);
/// A waiter queue outlives its last waiter's deadline by this much.
pub const QUEUE_GRACE: Duration = Duration::from_secs(60);
// A live waiter polls at least every POLL_BACKOFF_MAX, well within the time
// after which the scripts drop it as gone.
const _: () = assert!(POLL_BACKOFF_MAX.as_millis() * 4 <= WAITER_STALE.as_millis());

/// The constants only the Lua scripts use, as (placeholder, value), written
/// in by [`script_text`] after idem-core's [`idem_core::limits::ENGINE_CONSTANTS`].
const SCRIPT_CONSTANTS: &[(&str, Duration)] =
    &[("@FENCE_GRACE_MS@", FENCE_GRACE), ("@WAITER_STALE_MS@", WAITER_STALE), ("@QUEUE_GRACE_MS@", QUEUE_GRACE)];

/// A script's text with every constant written in from Rust.
fn script_text(text: &str) -> String {
    let mut out = idem_core::limits::with_engine_constants(text);
    for (name, value) in SCRIPT_CONSTANTS {
        out = out.replace(name, &value.as_millis().to_string());
    }
    out
}

const PRELUDE: &str = include_str!("lua/prelude.lua");
/// The idempotency record's encoding for the `idem` script (`begin_fast`
/// writes and reads the same layout inline).
const RECORD: &str = include_str!("lua/record.lua");
const BEGIN_FAST: &str = include_str!("lua/begin_fast.lua");

/// The scripts, one per primitive family, each prefixed with the shared prelude.
struct Scripts {
    idem: Script,
    /// IDEM.BEGIN without WAIT on Redis 7+: TIME and one SET, or `slow`.
    begin_fast: Script,
    lock: Script,
    claim: Script,
    counter: Script,
    value: Script,
    fsm: Script,
    slots: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&script_text(&format!("{PRELUDE}\n{body}")));
        Scripts {
            idem: s(&format!("{RECORD}\n{}", include_str!("lua/idem.lua"))),
            begin_fast: Script::new(&script_text(BEGIN_FAST)),
            lock: s(include_str!("lua/lock.lua")),
            claim: s(include_str!("lua/claim.lua")),
            counter: s(include_str!("lua/counter.lua")),
            value: s(include_str!("lua/value.lua")),
            fsm: s(include_str!("lua/fsm.lua")),
            slots: s(include_str!("lua/slots.lua")),
        }
    }
}

/// A connection handle; both kinds multiplex many requests over few sockets.
enum Conn {
    /// Boxed: a client with TLS support is several times a cluster handle's size.
    Single(Box<Single>),
    Cluster(ClusterConnection),
}

/// One multiplexed connection to a single Redis, replaced by a fresh one
/// after it breaks. (The workspace builds `redis` without its
/// `connection-manager` feature; this is the part of it idem needs.)
///
/// A request that fails on a connection after it was handed to it is not
/// retried, because its script may have run before the connection broke: its
/// caller gets `UNKNOWN` ([`Failure::Sent`]). The connection is then dropped,
/// and the next request opens a fresh one before it sends anything; if that
/// fails, nothing was sent and the caller gets `BUSY` ([`Failure::NotSent`]).
struct Single {
    client: redis::Client,
    /// `None` after the connection broke, until a request opens a new one.
    /// A plain lock: a request only clones the handle out of it.
    settings: RedisSettings,
    conn: std::sync::RwLock<Option<MultiplexedConnection>>,
    /// Held while a fresh connection is opened, so one request opens it.
    reconnect: tokio::sync::Mutex<()>,
}

/// The longest a connection may take to open (at start, and for a request
/// after the last connection broke, which is then answered `BUSY`: nothing
/// sent), unless the URL's `connect_timeout_ms` says otherwise.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// The URL setting that bounds opening a connection ([`RedisSettings::connect_timeout`]).
pub const CONNECT_TIMEOUT_PARAM: &str = "connect_timeout_ms";
/// The URL setting that bounds waiting for an answer ([`RedisSettings::response_timeout`]).
pub const RESPONSE_TIMEOUT_PARAM: &str = "response_timeout_ms";
/// Longest `connect_timeout_ms` and `response_timeout_ms` accepted: 10 minutes.
pub const TIMEOUT_MS_MAX: u64 = 600_000;

/// The connection settings a Redis store URL may carry
/// (`redis://host:6379/?connect_timeout_ms=500&response_timeout_ms=5000`).
/// They are taken out of the URL before the redis crate parses it. There is
/// no pool size: a backend sends every request over one multiplexed
/// connection (per node on a cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `connect_timeout_ms`, 1..=[`TIMEOUT_MS_MAX`].
    pub connect_timeout: Duration,
    /// `response_timeout_ms`, 1..=[`TIMEOUT_MS_MAX`]: the longest a sent
    /// request waits for Redis's answer before it is answered `UNKNOWN`
    /// (the script may have run) and its connection replaced. None by
    /// default: a request then waits while its connection lives (a broken
    /// connection ends it at once), because the per-request timer costs
    /// about a tenth of Redis's request rate (docs/benchmarks-backends.md).
    pub response_timeout: Option<Duration>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings { connect_timeout: CONNECT_TIMEOUT_DEFAULT, response_timeout: None }
    }
}

impl RedisSettings {
    /// Takes the settings out of `url`: (the URL without them, the settings,
    /// defaults for the absent ones). The error names the setting and its bounds.
    pub fn take_from(url: &str) -> Result<(String, RedisSettings), BackendError> {
        let ms = |name: &str, v: &str| {
            idem_core::store_url::whole_number(name, v, TIMEOUT_MS_MAX).map(Duration::from_millis).map_err(engine_error)
        };
        let mut settings = RedisSettings::default();
        let (url, connect) = idem_core::store_url::take_param(url, CONNECT_TIMEOUT_PARAM);
        let (url, response) = idem_core::store_url::take_param(&url, RESPONSE_TIMEOUT_PARAM);
        if let Some(v) = connect {
            settings.connect_timeout = ms(CONNECT_TIMEOUT_PARAM, &v)?;
        }
        if let Some(v) = response {
            settings.response_timeout = Some(ms(RESPONSE_TIMEOUT_PARAM, &v)?);
        }
        // Whatever else the query holds is refused, so that a misspelt
        // setting does not leave its default in force unseen; `tls_ca` is
        // read later, and only a `rediss://` URL may carry it.
        let tls = url.starts_with("rediss://");
        if let Some(name) = idem_core::store_url::param_names(&url).find(|n| !(tls && *n == TLS_CA_PARAM)) {
            return Err(engine_error(if name == TLS_CA_PARAM {
                format!("{TLS_CA_PARAM} needs a rediss:// URL (Redis Cluster has no TLS)")
            } else {
                format!(
                    "unknown setting '{name}' in the Redis store URL; the settings are {CONNECT_TIMEOUT_PARAM}, \
                     {RESPONSE_TIMEOUT_PARAM} and {TLS_CA_PARAM} (rediss:// only)"
                )
            }));
        }
        Ok((url, settings))
    }

    fn connection_config(&self) -> redis::AsyncConnectionConfig {
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(self.connect_timeout);
        match self.response_timeout {
            Some(t) => config.set_response_timeout(t),
            None => config,
        }
    }
}

/// Why a request to Redis failed.
enum Failure {
    /// Nothing was sent: no connection could be opened.
    NotSent(redis::RedisError),
    /// The request was handed to a connection: a Redis error reply, or a
    /// broken connection (then the script may have run).
    Sent(redis::RedisError),
}

impl Single {
    fn new(client: redis::Client, settings: RedisSettings, conn: MultiplexedConnection) -> Self {
        Single { client, settings, conn: std::sync::RwLock::new(Some(conn)), reconnect: tokio::sync::Mutex::new(()) }
    }

    /// A new connection, within the connect timeout.
    async fn open(
        client: &redis::Client,
        settings: &RedisSettings,
    ) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = settings.connection_config();
        tokio::time::timeout(settings.connect_timeout, client.get_multiplexed_async_connection_with_config(&config))
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, conn: Option<MultiplexedConnection>) {
        *self.conn.write().unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
    }

    /// The connection, opened first if the last one broke. An error means
    /// nothing was sent.
    async fn get(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        // Boxed: opening a connection is rare, and its state is many times a
        // request's, which every request's future would otherwise carry.
        Box::pin(self.reopen()).await
    }

    async fn reopen(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let _opening = self.reconnect.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let fresh = Self::open(&self.client, &self.settings).await?;
        self.set(Some(fresh.clone()));
        Ok(fresh)
    }

    /// Drops the connection after an error that broke it.
    fn check(&self, e: &redis::RedisError) {
        if broke(e) {
            self.set(None);
        }
    }

    async fn send<F, Fut>(&self, send: F) -> Result<Value, Failure>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<Value>>,
    {
        let conn = self.get().await.map_err(Failure::NotSent)?;
        let r = send(conn).await;
        if let Err(e) = &r {
            self.check(e);
        }
        r.map_err(Failure::Sent)
    }
}

/// Whether `e` means the connection broke (or a reply never came): the
/// request's outcome is then unknown.
fn broke(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout()
}

impl Conn {
    /// Runs `script` with `keys` and `args` (see [`Conn::eval`]).
    async fn script(&self, script: &Script, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Result<Value, Failure> {
        let size_bytes = keys.iter().chain(args).map(Vec::len).sum();
        let mut cmd = evalsha(script, keys.len(), keys.len() + args.len(), size_bytes);
        for k in keys {
            cmd.arg(k.as_slice());
        }
        for a in args {
            cmd.arg(a.as_slice());
        }
        self.eval(script, &cmd).await
    }

    /// Runs `cmd`, an EVALSHA of `script` built by [`evalsha`]. A server
    /// that does not have the script (it restarted, or its scripts were
    /// flushed) refuses it without running anything: load it and send the
    /// EVALSHA again, as the redis crate's script invocation does.
    async fn eval(&self, script: &Script, cmd: &redis::Cmd) -> Result<Value, Failure> {
        match self.cmd(cmd).await {
            // Boxed: rare, and kept out of every script call's future.
            Err(Failure::Sent(e)) if e.kind() == redis::ErrorKind::NoScriptError => {
                Box::pin(self.load_and_eval(script, cmd)).await
            }
            r => r,
        }
    }

    async fn load_and_eval(&self, script: &Script, cmd: &redis::Cmd) -> Result<Value, Failure> {
        let loaded = match self {
            Conn::Single(s) => s.send(|mut c| async move { script.load_async(&mut c).await.map(|_| Value::Nil) }).await,
            Conn::Cluster(c) => script.load_async(&mut c.clone()).await.map(|_| Value::Nil).map_err(cluster_failure),
        };
        // The EVALSHA was refused unrun: a failed load leaves nothing done either.
        loaded.map_err(|f| Failure::NotSent(f.into_error()))?;
        self.cmd(cmd).await
    }

    async fn cmd(&self, cmd: &redis::Cmd) -> Result<Value, Failure> {
        match self {
            // The connection's own call, without the boxed future of `query_async`.
            Conn::Single(s) => {
                s.send(|mut c| async move { c.send_packed_command(cmd).await.and_then(Value::extract_error) }).await
            }
            // The cluster client reconnects by itself; a refused connection
            // sent nothing, anything else was sent.
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await.map_err(cluster_failure),
        }
    }
}

/// An EVALSHA of `script` for `nkeys` keys, with room for `args_count`
/// keys and arguments of `size_bytes` in all; the caller adds them, keys first.
fn evalsha(script: &Script, nkeys: usize, args_count: usize, size_bytes: usize) -> redis::Cmd {
    debug_assert!(nkeys <= args_count, "the keys are among the arguments");
    // "EVALSHA", the 40-digit hash and the key count come first.
    const HEAD_BYTES: usize = 7 + 40 + 4;
    let mut cmd = redis::Cmd::with_capacity(3 + args_count, HEAD_BYTES + size_bytes);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(nkeys);
    cmd
}

fn cluster_failure(e: redis::RedisError) -> Failure {
    if e.is_connection_refusal() {
        Failure::NotSent(e)
    } else {
        Failure::Sent(e)
    }
}

/// The Redis / Redis Cluster backend.
pub struct RedisBackend {
    conn: Arc<Conn>,
    cluster: bool,
    scripts: Scripts,
    limits: Limits,
    /// The server has `SET … NX GET` (Redis 7.0 on): CLAIM runs natively
    /// and needs the script only for a re-claim by the holder.
    set_nx_get: bool,
}

/// The first Redis version whose `SET` takes `NX` and `GET` together.
const SET_NX_GET_SINCE_MAJOR: u32 = 7;

fn engine_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Engine { engine: "redis", message: e.to_string() }
}

/// The query parameter of a `rediss://` URL that names a PEM file of CA
/// certificates to trust instead of the system's roots.
pub const TLS_CA_PARAM: &str = "tls_ca";

/// A client for `url`. `rediss://` is TLS: the server's certificate is
/// checked against the system's roots, or against the CA certificates in
/// the file named by `?tls_ca=/path/ca.pem` (read here and removed from the
/// URL before the redis crate parses it). `rediss://…/#insecure` skips the
/// check, as in the redis crate; never use it beyond a test.
pub fn open_client(url: &str) -> Result<redis::Client, BackendError> {
    if !url.starts_with("rediss://") {
        return redis::Client::open(url).map_err(engine_error);
    }
    let (base, ca) = idem_core::store_url::take_param(url, TLS_CA_PARAM);
    match ca {
        None => redis::Client::open(base).map_err(engine_error),
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| engine_error(format!("{TLS_CA_PARAM} {path}: {e}")))?;
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            redis::Client::build_with_tls(base, certs).map_err(engine_error)
        }
    }
}

impl RedisBackend {
    /// Connects to a single Redis at `redis://…` (one multiplexed
    /// connection, replaced after it breaks), or over TLS at `rediss://…`
    /// (see [`open_client`]).
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let (url, settings) = RedisSettings::take_from(url)?;
        let client = open_client(&url)?;
        let conn = Single::open(&client, &settings).await.map_err(engine_error)?;
        let backend = RedisBackend {
            conn: Arc::new(Conn::Single(Box::new(Single::new(client, settings, conn)))),
            cluster: false,
            scripts: Scripts::new(),
            limits: Limits::default(),
            set_nx_get: false,
        };
        backend.check_version().await
    }

    /// Connects to a Redis Cluster at `redis-cluster://host:port,host:port,…`
    /// (any reachable subset of the nodes; the rest are discovered).
    pub async fn connect_cluster(url: &str) -> Result<Self, BackendError> {
        let (url, settings) = RedisSettings::take_from(url)?;
        let rest = url
            .strip_prefix("redis-cluster://")
            .ok_or_else(|| engine_error(format!("'{url}' is not a redis-cluster:// URL")))?;
        let nodes: Vec<String> =
            rest.split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| format!("redis://{n}")).collect();
        if nodes.is_empty() {
            return Err(engine_error(format!("'{url}' names no node")));
        }
        let mut builder = redis::cluster::ClusterClient::builder(nodes).connection_timeout(settings.connect_timeout);
        if let Some(t) = settings.response_timeout {
            builder = builder.response_timeout(t);
        }
        let client = builder.build().map_err(engine_error)?;
        let conn = client.get_async_connection().await.map_err(engine_error)?;
        let backend = RedisBackend {
            conn: Arc::new(Conn::Cluster(conn)),
            cluster: true,
            scripts: Scripts::new(),
            limits: Limits::default(),
            set_nx_get: false,
        };
        backend.check_version().await
    }

    /// Uses `limits` (only `waiters_per_key_max` matters here; the parser
    /// enforces the rest) instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The scripts call TIME before writing, which needs effects replication:
    /// the default from Redis 5 on and the only mode of Redis 7. Refuse older
    /// servers; use `SET … NX GET` where the server has it.
    async fn check_version(mut self) -> Result<Self, BackendError> {
        let v = self.conn.cmd(redis::cmd("INFO").arg("server")).await.map_err(|f| engine_error(f.into_error()))?;
        let text = match v {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            Value::SimpleString(s) => s,
            // A cluster answers with one reply per node; any node is representative.
            Value::Map(m) => m.into_iter().next().map(|(_, v)| format!("{v:?}")).unwrap_or_default(),
            other => format!("{other:?}"),
        };
        let major = text
            .split("redis_version:")
            .nth(1)
            .and_then(|s| s.split('.').next())
            .and_then(|s| s.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok());
        match major {
            Some(m) if m < 5 => Err(engine_error(format!("Redis {m}.x is too old: idem needs Redis 5 or newer"))),
            m => {
                // An unreadable version keeps the script path, which every
                // supported server runs.
                self.set_nx_get = m.is_some_and(|m| m >= SET_NX_GET_SINCE_MAJOR);
                Ok(self)
            }
        }
    }

    async fn run(&self, cmd: Command) -> CmdResult {
        match cmd {
            Command::IdemBegin { key, fingerprint, lease_ms, wait_ms } => {
                self.idem_begin(&key, fingerprint.as_ref(), lease_ms, wait_ms).await
            }
            Command::IdemCommit { key, fence, result, keep_ms } => {
                let args = vec![b"commit".to_vec(), num(fence), result.to_vec(), num(keep_ms)];
                let v = self.idem_script(&key, args).await?;
                to_reply(v, &IDEM_COMMIT_ABORT)
            }
            Command::IdemAbort { key, fence } => {
                let v = self.idem_script(&key, vec![b"abort".to_vec(), num(fence)]).await?;
                to_reply(v, &IDEM_COMMIT_ABORT)
            }
            Command::IdemRenew { key, fence, lease_ms } => {
                let v = self.idem_script(&key, vec![b"renew".to_vec(), num(fence), num(lease_ms)]).await?;
                to_reply(v, &IDEM_RENEW)
            }
            Command::IdemGet { key } => to_reply(self.idem_script(&key, vec![b"get".to_vec()]).await?, &IDEM_GET),
            Command::IdemDel { key } => to_reply(self.idem_script(&key, vec![b"del".to_vec()]).await?, &COUNT),
            Command::Claim { key, owner, ttl_ms } => self.claim(&key, &owner, ttl_ms).await,
            Command::ClaimAll { owner, keys } => self.claim_all(&owner, &keys).await,
            Command::Release { key, owner } => {
                let args = vec![b"release".to_vec(), owner.to_vec()];
                let v = self.script(&self.scripts.claim, vec![rkey("claim", &key, None)], args).await?;
                to_reply(v, &COUNT)
            }
            Command::Owner { key } => {
                let v = self.cmd(redis::cmd("GET").arg(rkey("claim", &key, None))).await?;
                to_reply(v, &PLAIN_GET)
            }
            Command::Lock { name, owner, lease_ms, wait_ms } => self.lock(&name, &owner, lease_ms, wait_ms).await,
            Command::Renew { name, owner, lease_ms } => {
                let v = self.lock_script(&name, vec![b"renew".to_vec(), owner.to_vec(), num(lease_ms)]).await?;
                to_reply(v, &RENEW)
            }
            Command::Unlock { name, owner } => {
                to_reply(self.lock_script(&name, vec![b"unlock".to_vec(), owner.to_vec()]).await?, &COUNT)
            }
            Command::LockInfo { name } => to_reply(self.lock_script(&name, vec![b"info".to_vec()]).await?, &LOCK_INFO),
            Command::TokenNew { scope, ttl_ms } => {
                let token = new_token();
                let k = rkey("token", &scope, Some(token.as_bytes()));
                let set = redis::cmd("SET").arg(k).arg("1").arg("PX").arg(px(ttl_ms)).arg("NX").clone();
                match self.cmd(&set).await? {
                    Value::Okay => Ok(Reply::Bulk(Bytes::from(token))),
                    Value::SimpleString(s) if s == "OK" => Ok(Reply::Bulk(Bytes::from(token))),
                    // 128 random bits do not collide; a nil here means the
                    // RNG is broken. Nothing was written: BUSY.
                    Value::Nil => Err(CmdError::busy("redis: token not stored (a 128-bit token collided)")),
                    other => Err(unexpected(&other)),
                }
            }
            Command::TokenUse { scope, token } => {
                let v = self.cmd(redis::cmd("DEL").arg(rkey("token", &scope, Some(&token)))).await?;
                to_reply(v, &COUNT)
            }
            Command::CounterAdd { key, delta, min, max, op, keep_ms } => {
                let keys = vec![rkey("counter", &key, None), rkey("counter-op", &key, op.as_deref())];
                let opt = |v: Option<i64>| v.map(|v| v.to_string().into_bytes()).unwrap_or_default();
                let args =
                    vec![delta.to_string().into_bytes(), opt(min), opt(max), flag(op.is_some()), num(px(keep_ms))];
                let v = self.script(&self.scripts.counter, keys, args).await?;
                to_reply(v, &COUNTER_ADD)
            }
            Command::CounterGet { key } => {
                let v = self.cmd(redis::cmd("GET").arg(rkey("counter", &key, None))).await?;
                match v {
                    Value::Nil => Ok(Reply::Int(0)),
                    Value::BulkString(b) => Ok(Reply::Int(parse_i64(&b)?)),
                    other => Err(unexpected(&other)),
                }
            }
            Command::ValueGet { key } => {
                let v = self.cmd(redis::cmd("HMGET").arg(rkey("value", &key, None)).arg("v").arg("ver")).await?;
                match v {
                    Value::Array(items) => match items.as_slice() {
                        [Value::Nil, _] | [_, Value::Nil] => Ok(Reply::Nil),
                        [Value::BulkString(v), Value::BulkString(ver)] => {
                            Ok(Reply::Array(vec![Reply::Bulk(Bytes::copy_from_slice(v)), Reply::Int(parse_i64(ver)?)]))
                        }
                        _ => Err(unexpected(&Value::Array(items))),
                    },
                    other => Err(unexpected(&other)),
                }
            }
            Command::ValueSet { key, value, if_version } => {
                let args = vec![value.to_vec(), if_version.map(num).unwrap_or_default()];
                let v = self.script(&self.scripts.value, vec![rkey("value", &key, None)], args).await?;
                to_reply(v, &VALUE_SET)
            }
            Command::FsmMove { key, to, from } => {
                let mut args = vec![to.to_vec()];
                args.extend(from.iter().map(|s| s.to_vec()));
                to_reply(self.script(&self.scripts.fsm, vec![rkey("fsm", &key, None)], args).await?, &FSM_MOVE)
            }
            Command::FsmGet { key } => {
                to_reply(self.cmd(redis::cmd("GET").arg(rkey("fsm", &key, None))).await?, &PLAIN_GET)
            }
            Command::SlotsReserve { resource, first, last, holder, size } => {
                let args = vec![
                    b"reserve".to_vec(),
                    num(first),
                    num(last),
                    holder.to_vec(),
                    size.map(num).unwrap_or_default(),
                    num(SLOTS_SIZE_DEFAULT),
                ];
                let v = self.script(&self.scripts.slots, vec![rkey("slots", &resource, None)], args).await?;
                to_reply(v, &SLOTS_RESERVE)
            }
            Command::SlotsRelease { resource, first, last, holder } => {
                let args = vec![b"release".to_vec(), num(first), num(last), holder.to_vec()];
                to_reply(self.script(&self.scripts.slots, vec![rkey("slots", &resource, None)], args).await?, &COUNT)
            }
            Command::SlotsGet { resource } => {
                let v = self
                    .script(&self.scripts.slots, vec![rkey("slots", &resource, None)], vec![b"get".to_vec()])
                    .await?;
                match v {
                    Value::Array(items) => {
                        Ok(Reply::Array(items.into_iter().map(bulk_or_nil).collect::<Result<_, _>>()?))
                    }
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    async fn script(&self, script: &Script, keys: Vec<Vec<u8>>, args: Vec<Vec<u8>>) -> Result<Value, CmdError> {
        self.conn.script(script, &keys, &args).await.map_err(redis_error)
    }

    async fn cmd(&self, cmd: &redis::Cmd) -> Result<Value, CmdError> {
        self.conn.cmd(cmd).await.map_err(redis_error)
    }

    fn idem_keys(key: &[u8]) -> Vec<Vec<u8>> {
        vec![
            rkey("idem", key, None),
            rkey("idem-fence", key, None),
            rkey("idem-q", key, None),
            rkey("idem-w", key, None),
        ]
    }

    async fn idem_script(&self, key: &[u8], args: Vec<Vec<u8>>) -> Result<Value, CmdError> {
        self.script(&self.scripts.idem, Self::idem_keys(key), args).await
    }

    fn lock_keys(name: &[u8]) -> Vec<Vec<u8>> {
        vec![
            rkey("lock", name, None),
            rkey("lock-fence", name, None),
            rkey("lock-q", name, None),
            rkey("lock-w", name, None),
        ]
    }

    async fn lock_script(&self, name: &[u8], args: Vec<Vec<u8>>) -> Result<Value, CmdError> {
        self.script(&self.scripts.lock, Self::lock_keys(name), args).await
    }

    async fn idem_begin(&self, key: &[u8], fp: Option<&Bytes>, lease_ms: u64, wait_ms: u64) -> CmdResult {
        if wait_ms == 0 && self.set_nx_get {
            let v = self.begin_fast(key, fp, lease_ms).await?;
            if !is_word(&v, b"slow") {
                return to_reply(v, &IDEM_BEGIN);
            }
        }
        // Boxed: the idem script's path (and a WAIT's parking) holds far more
        // state than the fast path, whose future would otherwise carry it.
        Box::pin(self.idem_begin_script(key, fp, lease_ms, wait_ms)).await
    }

    /// The small script, which decides an absent key and a live record; it
    /// answers `slow`, having written nothing, for the rest.
    async fn begin_fast(&self, key: &[u8], fp: Option<&Bytes>, lease_ms: u64) -> Result<Value, CmdError> {
        let script = &self.scripts.begin_fast;
        let rk = RKey::new("idem", key, None);
        // The lease's digits besides the key and the fingerprint, which is
        // sent only when the request has one.
        const FIXED_BYTES: usize = 20;
        let mut cmd = evalsha(script, 1, 3, FIXED_BYTES + rk.len_bytes_max() + fp.map_or(0, |f| f.len()));
        cmd.arg(rk).arg(lease_ms);
        if let Some(fp) = fp {
            cmd.arg(fp.as_ref());
        }
        self.conn.eval(script, &cmd).await.map_err(redis_error)
    }

    /// IDEM.BEGIN by the idem script: WAIT, and what the fast path leaves.
    async fn idem_begin_script(&self, key: &[u8], fp: Option<&Bytes>, lease_ms: u64, wait_ms: u64) -> CmdResult {
        let fixed = (flag(fp.is_some()), fp.map(|f| f.to_vec()).unwrap_or_default(), num(lease_ms));
        let waiter = (wait_ms > 0).then(new_waiter_id);
        let max = num(self.limits.waiters_per_key_max as u64);
        let cancel = waiter.as_ref().map(|w| CancelOnDrop {
            conn: self.conn.clone(),
            script: self.scripts.idem.clone(),
            keys: Self::idem_keys(key),
            args: vec![b"cancel".to_vec(), w.clone().into_bytes()],
        });
        self.park(wait_ms, cancel, |mode, left_ms| {
            let args = vec![
                b"begin".to_vec(),
                fixed.0.clone(),
                fixed.1.clone(),
                fixed.2.clone(),
                flag(waiter.is_some()),
                waiter.clone().unwrap_or_default().into_bytes(),
                mode.as_bytes().to_vec(),
                num(left_ms),
                max.clone(),
                flag(self.set_nx_get),
            ];
            async move { self.idem_script(key, args).await }
        })
        .await
        .and_then(|v| to_reply(v, &IDEM_BEGIN))
    }

    async fn lock(&self, name: &[u8], owner: &[u8], lease_ms: u64, wait_ms: u64) -> CmdResult {
        let waiter = (wait_ms > 0).then(new_waiter_id);
        let max = num(self.limits.waiters_per_key_max as u64);
        let cancel = waiter.as_ref().map(|w| CancelOnDrop {
            conn: self.conn.clone(),
            script: self.scripts.lock.clone(),
            keys: Self::lock_keys(name),
            args: vec![b"cancel".to_vec(), w.clone().into_bytes()],
        });
        self.park(wait_ms, cancel, |mode, left_ms| {
            let args = vec![
                b"lock".to_vec(),
                owner.to_vec(),
                num(lease_ms),
                flag(waiter.is_some()),
                waiter.clone().unwrap_or_default().into_bytes(),
                mode.as_bytes().to_vec(),
                num(left_ms),
                max.clone(),
            ];
            async move { self.lock_script(name, args).await }
        })
        .await
        .and_then(|v| to_reply(v, &LOCK))
    }

    /// Runs `call(mode, wait_left_ms)` until it answers something other than
    /// `wait`: first with mode `first`, then `poll` with capped exponential
    /// backoff, and a last `leave` once the WAIT has passed (the script then
    /// dequeues the caller and answers `running`/`busy`, or hands it a grant
    /// made meanwhile). Between polls the caller holds only a timer.
    ///
    /// If the caller goes away while parked (the future is dropped), `cancel`
    /// runs in the background: it dequeues the waiter and gives back a grant
    /// that was made for it but not yet picked up.
    async fn park<F, Fut>(&self, wait_ms: u64, mut cancel: Option<CancelOnDrop>, call: F) -> Result<Value, CmdError>
    where
        F: Fn(&'static str, u64) -> Fut,
        Fut: std::future::Future<Output = Result<Value, CmdError>>,
    {
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        let mut backoff = POLL_BACKOFF_MIN;
        let mut mode = "first";
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let left_ms = left.as_millis() as u64;
            if mode != "first" && left_ms == 0 {
                mode = "leave";
            }
            // On an error the waiter may still be queued: returning drops
            // `cancel` armed, which dequeues it, best effort. Until it has,
            // a script that frees the key may grant it to the waiter, so
            // once queued (any call after the first) a failed poll leaves
            // the command's outcome unknown, even if the poll itself was
            // never sent.
            let v = match call(mode, left_ms.max(1)).await {
                Ok(v) => v,
                Err(e) if mode != "first" && e.code == ErrorCode::Busy => {
                    return Err(CmdError::unknown(format!(
                        "redis: this WAIT was queued and a later poll failed ({e}); it may have been granted"
                    )));
                }
                Err(e) => return Err(e),
            };
            if mode == "leave" || !is_word(&v, b"wait") {
                // Answered: nothing to cancel (a final answer dequeued the waiter).
                if let Some(c) = cancel.as_mut() {
                    c.disarm();
                }
                return Ok(v);
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(POLL_BACKOFF_MAX);
            mode = "poll";
        }
    }

    /// CLAIM. On Redis 7 and later, one native `SET k owner NX GET [PX ttl]`
    /// decides a fresh key (nil: set, `claimed`) and another holder (its
    /// owner comes back: nothing written, `held`); only a re-claim by the
    /// holder itself, whose TTL must then change to the latest CLAIM's, runs
    /// the script, which re-reads the key and decides atomically.
    async fn claim(&self, key: &[u8], owner: &Bytes, ttl_ms: Option<u64>) -> CmdResult {
        if self.set_nx_get {
            // Sized up front, the key written in place: "SET", "NX", "GET",
            // "PX" and a TTL's digits besides the key and the owner.
            const FIXED_BYTES: usize = 3 + 2 + 3 + 2 + 20;
            let rk = RKey::new("claim", key, None);
            let mut set = redis::Cmd::with_capacity(7, FIXED_BYTES + rk.len_bytes_max() + owner.len());
            set.arg("SET").arg(rk).arg(owner.as_ref()).arg("NX").arg("GET");
            if let Some(ttl) = ttl_ms {
                set.arg("PX").arg(px(ttl));
            }
            match self.cmd(&set).await? {
                Value::Nil => return Ok(Claimed::Claimed.into_reply()),
                Value::BulkString(cur) if cur != owner.as_ref() => {
                    return Ok(Claimed::Held { owner: Bytes::from(cur) }.into_reply());
                }
                Value::BulkString(_) => {}
                other => return Err(unexpected(&other)),
            }
        }
        let args = vec![b"claim".to_vec(), owner.to_vec(), ttl_ms.map(|t| num(px(t))).unwrap_or_default()];
        to_reply(self.script(&self.scripts.claim, vec![rkey("claim", key, None)], args).await?, &CLAIM)
    }

    async fn claim_all(&self, owner: &Bytes, keys: &[Bytes]) -> CmdResult {
        let rkeys: Vec<Vec<u8>> = keys.iter().map(|k| rkey("claim", k, None)).collect();
        if self.cluster {
            let slot = keys::cluster_slot(&rkeys[0]);
            if rkeys.iter().any(|k| keys::cluster_slot(k) != slot) {
                return Err(CmdError::syntax(
                    "CLAIM.ALL on Redis Cluster needs every key in one hash slot: give the keys a common hash tag, \
                     e.g. {user:1}:email and {user:1}:phone",
                ));
            }
        }
        let mut args = vec![b"all".to_vec(), owner.to_vec()];
        args.extend(keys.iter().map(|k| k.to_vec()));
        to_reply(self.script(&self.scripts.claim, rkeys, args).await?, &CLAIM_ALL)
    }
}

/// Dequeues a parked waiter whose caller went away (see [`RedisBackend::park`]).
struct CancelOnDrop {
    conn: Arc<Conn>,
    script: Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.keys.clear();
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        // Drop cannot await: run the cancel on the runtime, best effort. If
        // it cannot run, the waiter is dropped after WAITER_STALE without
        // a poll and an unused grant ends with its lease.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (conn, script) = (self.conn.clone(), self.script.clone());
            let (keys, args) = (std::mem::take(&mut self.keys), std::mem::take(&mut self.args));
            rt.spawn(async move {
                let _ = conn.script(&script, &keys, &args).await;
            });
        }
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        if self.cluster {
            "redis-cluster"
        } else {
            "redis"
        }
    }

    fn execute(&self, cmd: Command) -> BoxFuture<'_, CmdResult> {
        // One command: one boxed future of its own (no batch around it), and
        // for the hot ones without the state of every other command's.
        match cmd {
            Command::Claim { key, owner, ttl_ms } => Box::pin(async move { self.claim(&key, &owner, ttl_ms).await }),
            Command::IdemBegin { key, fingerprint, lease_ms, wait_ms } => {
                Box::pin(async move { self.idem_begin(&key, fingerprint.as_ref(), lease_ms, wait_ms).await })
            }
            cmd => Box::pin(self.run(cmd)),
        }
    }

    fn execute_batch(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<CmdResult>> {
        Box::pin(async move {
            // In order, one at a time: each command must see the effects of
            // the ones before it, and a parked WAIT delays the rest.
            let mut out = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                out.push(self.run(cmd).await);
            }
            out
        })
    }

    fn dbsize(&self) -> BoxFuture<'_, Result<u64, CmdError>> {
        Box::pin(async move {
            // Approximate: every key of the Redis database (on a cluster, the
            // sum over the masters), including idem's fence counters and
            // waiter queues and any key that is not idem's.
            match self.cmd(&redis::cmd("DBSIZE")).await? {
                Value::Int(n) => Ok(n.max(0) as u64),
                other => Err(unexpected(&other)),
            }
        })
    }

    fn inspect_idem<'a>(
        &'a self,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<idem_core::machine::IdemView>, CmdError>> {
        use idem_core::machine::{IdemView, StoredIdem, WaitersScope};
        Box::pin(async move {
            let v = self.idem_script(key, vec![b"inspect".to_vec()]).await?;
            let Value::Array(items) = &v else { return Err(unexpected(&v)) };
            let [Value::BulkString(st), Value::BulkString(fence), Value::Int(att), Value::Int(left), Value::Int(len), Value::Int(queued)] =
                items.as_slice()
            else {
                return Err(unexpected(&v));
            };
            let running = match st.as_slice() {
                b"" => None,
                b"r" => Some(true),
                b"d" => Some(false),
                _ => return Err(unexpected(&v)),
            };
            let stored = match running {
                Some(running) => Some(StoredIdem {
                    running,
                    fence: u64::try_from(parse_i64(fence)?).map_err(|_| unexpected(&v))?,
                    attempt: u32::try_from(*att).map_err(|_| unexpected(&v))?,
                    left_ms: *left,
                    result_bytes: u64::try_from(*len).map_err(|_| unexpected(&v))?,
                }),
                None => None,
            };
            // The queue lives in Redis: every server's parked callers.
            let waiters = u64::try_from(*queued).map_err(|_| unexpected(&v))?;
            Ok(Some(IdemView::of_stored(stored, waiters, WaitersScope::Store)))
        })
    }

    fn info(&self) -> Vec<(String, String)> {
        vec![
            ("backend".into(), self.name().into()),
            ("wait_poll_backoff_max_ms".into(), POLL_BACKOFF_MAX.as_millis().to_string()),
        ]
    }
}

/// The `PX` that makes Redis drop a key at `ms` after now, the contract's
/// deadline: Redis keeps a key through its deadline millisecond (it expires
/// it once now > set + PX), so one less. A 1 ms TTL or KEEP cannot be
/// shortened (PX 0 is refused): it lasts until the end of the next
/// millisecond (docs/backends-redis.md).
fn px(ms: u64) -> u64 {
    ms.saturating_sub(1).max(1)
}

fn num(n: impl Into<u64>) -> Vec<u8> {
    n.into().to_string().into_bytes()
}

fn flag(b: bool) -> Vec<u8> {
    if b { b"1" } else { b"0" }.to_vec()
}

/// A random waiter id (only needs to be unique among one key's waiters).
fn new_waiter_id() -> String {
    use rand::Rng;
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// A one-time token: 128 random bits as 32 lower-case hex digits (URL-safe).
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_word(v: &Value, w: &[u8]) -> bool {
    matches!(v, Value::Array(items) if matches!(items.first(), Some(Value::BulkString(b)) if b == w))
}

/// A script reply the contract does not allow: the script ran, and idem
/// cannot tell what it did (`UNKNOWN`, never a plausible reply).
fn unexpected(v: &Value) -> CmdError {
    idem_core::outcome::unexpected("redis", format!("reply {v:?}"))
}

fn unexpected_word(what: &str, word: &[u8]) -> CmdError {
    idem_core::outcome::unexpected("redis", format!("{what} {:?}", String::from_utf8_lossy(word)))
}

fn parse_i64(b: &[u8]) -> Result<i64, CmdError> {
    std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
        idem_core::outcome::unexpected("redis", format!("not an integer: {:?}", String::from_utf8_lossy(b)))
    })
}

impl Failure {
    fn into_error(self) -> redis::RedisError {
        match self {
            Failure::NotSent(e) | Failure::Sent(e) => e,
        }
    }
}

/// The reply for a failed request: `UNKNOWN` when the connection broke after
/// the request was handed to it (its script may have run: docs/commands.md),
/// `BUSY` when nothing was sent or Redis answered with an error.
fn redis_error(f: Failure) -> CmdError {
    match f {
        Failure::NotSent(e) => CmdError::busy(format!("redis unreachable, nothing sent: {e}")),
        // Redis answers LOADING, before running anything, while it replays
        // its data set after a start: say that nothing ran, as above, so a
        // client knows the command did not take effect.
        Failure::Sent(e) if e.kind() == redis::ErrorKind::BusyLoadingError => {
            CmdError::busy(format!("redis is loading its data set, nothing ran: {e}"))
        }
        Failure::Sent(e) if broke(&e) => CmdError::unknown(format!(
            "redis: the connection broke after the command was sent ({e}); it may have taken effect"
        )),
        Failure::Sent(e) if e.kind() == redis::ErrorKind::CrossSlot => {
            CmdError::syntax(format!("redis: keys of one command must share a hash tag on Redis Cluster ({e})"))
        }
        Failure::Sent(e) => CmdError::busy(format!("redis: {e}")),
    }
}

/// What one command may answer (docs: every backend decodes strictly): the
/// closed set of its status words, each with its reply's [`Form`], and the
/// non-array answer it gives instead, if any. Besides these, every script may
/// answer an error, `"!", CODE, message`. Anything else is `UNKNOWN`, never a
/// plausible reply: a word of another command's, a wrong length, a wrong type.
/// (`wait` and `slow` are consumed before the reply is decoded: `park`,
/// `idem_begin`; no spec has them.)
struct Spec {
    words: &'static [(&'static str, Form)],
    bare: Bare,
    /// Builds the command's typed outcome from a reply whose shape `words`
    /// checked (the word, then the elements after it) and encodes it with
    /// that outcome's one encoder (`idem_core::outcome`).
    typed: Typed,
}

/// See [`Spec::typed`].
type Typed = fn(&'static str, Vec<Reply>) -> CmdResult;

/// A status word's reply.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// Exactly `len` elements, the word included; the positions `ints` are
    /// integers (scripts send numbers as decimal strings, because Lua
    /// numbers round past 2^53), every other one a bulk string.
    Fixed { len: usize, ints: &'static [usize] },
    /// The word, then one or more pairs of bulk strings; with `ints_first`,
    /// every pair's first element is an integer instead.
    Pairs { ints_first: bool },
}

impl Form {
    fn fits(self, len: usize) -> bool {
        match self {
            Form::Fixed { len: n, .. } => len == n,
            Form::Pairs { .. } => len >= 3 && len % 2 == 1,
        }
    }

    fn is_int(self, i: usize) -> bool {
        match self {
            Form::Fixed { ints, .. } => ints.contains(&i),
            Form::Pairs { ints_first } => ints_first && i % 2 == 1,
        }
    }
}

/// The non-array answer a command may give instead of a status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bare {
    None,
    Int,
    /// A plain `GET`'s.
    BulkOrNil,
}

const fn fixed(word: &'static str, len: usize, ints: &'static [usize]) -> (&'static str, Form) {
    (word, Form::Fixed { len, ints })
}

/// IDEM.BEGIN (idem.lua `begin`, begin_fast.lua): fence and attempt, fence
/// and lease time left, or the result.
const IDEM_BEGIN: Spec = Spec {
    words: &[fixed("started", 3, &[1, 2]), fixed("running", 3, &[1, 2]), fixed("done", 2, &[])],
    bare: Bare::None,
    typed: begin_outcome,
};
/// IDEM.COMMIT, IDEM.ABORT (idem.lua `commit`, `abort`; else STALE).
const IDEM_COMMIT_ABORT: Spec = Spec { words: &[fixed("ok", 1, &[])], bare: Bare::None, typed: ended };
/// IDEM.RENEW (idem.lua `renew`; else STALE): the fence.
const IDEM_RENEW: Spec = Spec { words: &[fixed("renewed", 2, &[1])], bare: Bare::None, typed: idem_renewed };
/// IDEM.GET (idem.lua `get`).
const IDEM_GET: Spec = Spec {
    words: &[fixed("absent", 1, &[]), fixed("done", 2, &[]), fixed("running", 3, &[1, 2])],
    bare: Bare::None,
    typed: idem_got,
};
/// IDEM.DEL, RELEASE, UNLOCK, SLOTS.RELEASE (their scripts) and TOKEN.USE
/// (`DEL`): a count.
const COUNT: Spec = Spec { words: &[], bare: Bare::Int, typed: no_words };
/// OWNER, FSM.GET: a plain `GET`.
const PLAIN_GET: Spec = Spec { words: &[], bare: Bare::BulkOrNil, typed: no_words };
/// CLAIM (claim.lua `claim`): the other holder.
const CLAIM: Spec =
    Spec { words: &[fixed("claimed", 1, &[]), fixed("held", 2, &[])], bare: Bare::None, typed: claimed };
/// CLAIM.ALL (claim.lua `all`): `key, owner` pairs.
const CLAIM_ALL: Spec = Spec {
    words: &[fixed("claimed", 1, &[]), ("held", Form::Pairs { ints_first: false })],
    bare: Bare::None,
    typed: claimed_all,
};
/// LOCK (lock.lua `lock`): the fence, or the holder and its lease time left.
const LOCK: Spec =
    Spec { words: &[fixed("acquired", 2, &[1]), fixed("busy", 3, &[2])], bare: Bare::None, typed: locked };
/// RENEW (lock.lua `renew`): the fence.
const RENEW: Spec =
    Spec { words: &[fixed("lost", 1, &[]), fixed("renewed", 2, &[1])], bare: Bare::None, typed: lock_renewed };
/// LOCK.INFO (lock.lua `info`): owner, fence, lease time left, waiters.
const LOCK_INFO: Spec =
    Spec { words: &[fixed("free", 1, &[]), fixed("held", 5, &[2, 3, 4])], bare: Bare::None, typed: lock_info };
/// COUNTER.ADD (counter.lua): the value.
const COUNTER_ADD: Spec = Spec {
    words: &[fixed("ok", 2, &[1]), fixed("refused", 2, &[1]), fixed("replayed", 2, &[1])],
    bare: Bare::None,
    typed: counted,
};
/// VALUE.SET (value.lua): the version.
const VALUE_SET: Spec =
    Spec { words: &[fixed("ok", 2, &[1]), fixed("conflict", 2, &[1])], bare: Bare::None, typed: value_written };
/// FSM.MOVE (fsm.lua): the state.
const FSM_MOVE: Spec = Spec {
    words: &[fixed("already", 2, &[]), fixed("moved", 2, &[]), fixed("refused", 2, &[])],
    bare: Bare::None,
    typed: moved,
};
/// SLOTS.RESERVE (slots.lua `reserve`): `slot, holder` pairs.
const SLOTS_RESERVE: Spec = Spec {
    words: &[fixed("reserved", 1, &[]), ("conflict", Form::Pairs { ints_first: true })],
    bare: Bare::None,
    typed: reserved,
};

/// Decodes a reply by `spec`: an array whose first element is one of the
/// command's status words becomes `Reply::Array`, its integer positions
/// parsed; `"!", CODE, message` becomes that error; a bare integer, bulk
/// string or nil passes only where `spec` allows it.
fn to_reply(v: Value, spec: &Spec) -> CmdResult {
    let items = match v {
        Value::Array(items) => items,
        Value::Int(i) if spec.bare == Bare::Int => return Ok(Reply::Int(i)),
        v @ (Value::Nil | Value::BulkString(_)) if spec.bare == Bare::BulkOrNil => return bulk_or_nil(v),
        other => return Err(unexpected(&other)),
    };
    let first = match items.first() {
        Some(Value::BulkString(b)) => b.as_slice(),
        _ => return Err(unexpected(&Value::Array(items))),
    };
    if first == b"!" {
        return Err(script_error(items));
    }
    let Some(&(word, form)) = spec.words.iter().find(|(w, _)| w.as_bytes() == first) else {
        return Err(unexpected_word("status", first));
    };
    if !form.fits(items.len()) {
        return Err(unexpected(&Value::Array(items)));
    }
    let mut rest = Vec::with_capacity(items.len() - 1);
    for (i, item) in items.into_iter().enumerate().skip(1) {
        rest.push(match item {
            Value::Int(n) if form.is_int(i) => Reply::Int(n),
            Value::BulkString(b) if form.is_int(i) => Reply::Int(parse_i64(&b)?),
            Value::BulkString(b) => Reply::Bulk(Bytes::from(b)),
            other => return Err(unexpected(&other)),
        });
    }
    (spec.typed)(word, rest)
}

// The typed outcome of each command's reply, from its word and the elements
// after it, whose count and types the command's [`Spec`] checked. Fences,
// versions, slots, counts and attempts must not be negative; a time left
// below 0 (the lease ended between two reads of the clock) is 0, as the SQL
// decoder reads it.

fn no_words(word: &'static str, _: Vec<Reply>) -> CmdResult {
    Err(unexpected_word("status", word.as_bytes()))
}

fn begin_outcome(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    let mut r = rest.into_iter();
    Ok(match word {
        "started" => {
            let fence = uint(r.next())?;
            let attempt = uint(r.next())?;
            let attempt = u32::try_from(attempt).map_err(|_| unexpected_what(format!("attempt {attempt}")))?;
            Begin::Started { fence, attempt }.into_reply()
        }
        "running" => Begin::Running { fence: uint(r.next())?, left_ms: left_ms(r.next())? }.into_reply(),
        "done" => Begin::Done { result: bulk(r.next())? }.into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

fn ended(_: &'static str, _: Vec<Reply>) -> CmdResult {
    Ok(Ended.into_reply())
}

fn idem_renewed(_: &'static str, rest: Vec<Reply>) -> CmdResult {
    Ok(IdemRenewed { fence: uint(rest.into_iter().next())? }.into_reply())
}

fn idem_got(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    let mut r = rest.into_iter();
    Ok(match word {
        "absent" => IdemGot::Absent.into_reply(),
        "running" => IdemGot::Running { fence: uint(r.next())?, left_ms: left_ms(r.next())? }.into_reply(),
        "done" => IdemGot::Done { result: bulk(r.next())? }.into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

fn claimed(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    Ok(match word {
        "claimed" => Claimed::Claimed.into_reply(),
        "held" => Claimed::Held { owner: bulk(rest.into_iter().next())? }.into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

fn claimed_all(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    Ok(match word {
        "claimed" => ClaimedAll::Claimed.into_reply(),
        "held" => ClaimedAll::Held(pairs(rest, bulk)?).into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

fn locked(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    let mut r = rest.into_iter();
    Ok(match word {
        "acquired" => Locked::Acquired { fence: uint(r.next())? }.into_reply(),
        "busy" => Locked::Busy { holder: bulk(r.next())?, left_ms: left_ms(r.next())? }.into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

fn lock_renewed(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    Ok(match word {
        "lost" => LockRenewed::Lost.into_reply(),
        "renewed" => LockRenewed::Renewed { fence: uint(rest.into_iter().next())? }.into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

fn lock_info(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    let mut r = rest.into_iter();
    Ok(match word {
        "free" => LockInfo::Free.into_reply(),
        "held" => LockInfo::Held {
            owner: bulk(r.next())?,
            fence: uint(r.next())?,
            left_ms: left_ms(r.next())?,
            waiters: uint(r.next())?,
        }
        .into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

fn counted(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    let value = int(rest.into_iter().next())?;
    Ok(Counted::of(CounterStatus::parse("redis", word)?, value).into_reply())
}

fn value_written(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    let version = uint(rest.into_iter().next())?;
    Ok(ValueWritten { status: ValueSetStatus::parse("redis", word)?, version }.into_reply())
}

fn moved(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    let state = bulk(rest.into_iter().next())?;
    Ok(Moved { status: MoveStatus::parse("redis", word)?, state }.into_reply())
}

fn reserved(word: &'static str, rest: Vec<Reply>) -> CmdResult {
    Ok(match word {
        "reserved" => Reserved::Reserved.into_reply(),
        "conflict" => Reserved::Conflict(pairs(rest, uint)?).into_reply(),
        other => return no_words(other, Vec::new()),
    })
}

/// The (first, bulk string) pairs after a word (CLAIM.ALL's keys and
/// owners, SLOTS.RESERVE's slots and holders), the first read by `first`.
fn pairs<T>(rest: Vec<Reply>, first: fn(Option<Reply>) -> Result<T, CmdError>) -> Result<Vec<(T, Bytes)>, CmdError> {
    let mut out = Vec::with_capacity(rest.len() / 2);
    let mut r = rest.into_iter();
    while let Some(a) = r.next() {
        out.push((first(Some(a))?, bulk(r.next())?));
    }
    Ok(out)
}

fn unexpected_what(what: String) -> CmdError {
    idem_core::outcome::unexpected("redis", what)
}

/// An integer element.
fn int(r: Option<Reply>) -> Result<i64, CmdError> {
    match r {
        Some(Reply::Int(n)) => Ok(n),
        other => Err(unexpected_what(format!("{other:?} where an integer belongs"))),
    }
}

/// An integer element that must not be negative.
fn uint(r: Option<Reply>) -> Result<u64, CmdError> {
    let n = int(r)?;
    u64::try_from(n).map_err(|_| unexpected_what(format!("{n} where a non-negative integer belongs")))
}

/// A time left, 0 once it ran out.
fn left_ms(r: Option<Reply>) -> Result<u64, CmdError> {
    Ok(u64::try_from(int(r)?).unwrap_or(0))
}

/// A bulk string element.
fn bulk(r: Option<Reply>) -> Result<Bytes, CmdError> {
    match r {
        Some(Reply::Bulk(b)) => Ok(b),
        other => Err(unexpected_what(format!("{other:?} where a bulk string belongs"))),
    }
}

/// A script's error, `"!", CODE, message` (prelude.lua `err`).
fn script_error(items: Vec<Value>) -> CmdError {
    let [_, Value::BulkString(code), Value::BulkString(message)] = items.as_slice() else {
        return unexpected(&Value::Array(items));
    };
    let code = match code.as_slice() {
        b"STALE" => ErrorCode::Stale,
        b"MISMATCH" => ErrorCode::Mismatch,
        b"BUSY" => ErrorCode::Busy,
        b"LIMIT" => ErrorCode::Limit,
        b"ERR" => ErrorCode::Err,
        other => return unexpected_word("error code", other),
    };
    CmdError::new(code, String::from_utf8_lossy(message).into_owned())
}

/// A bulk string or nil: a plain `GET`'s answer, or a slot's holder in
/// SLOTS.GET's (slots.lua `get`).
fn bulk_or_nil(v: Value) -> CmdResult {
    match v {
        Value::Nil => Ok(Reply::Nil),
        Value::BulkString(b) => Ok(Reply::Bulk(Bytes::from(b))),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_prelude_takes_every_constant_from_rust() {
        let text = super::script_text(super::PRELUDE);
        assert!(!text.contains('@'), "a placeholder is left in the prelude");
        assert!(text.contains(&format!("local RUN_RETAIN_MS = {}\n", idem_core::limits::RUNNING_RETAIN_MS)));
        assert!(text.contains(&format!("local FENCE_GRACE_MS = {}\n", super::FENCE_GRACE.as_millis())));
        assert!(text.contains(&format!("local WAITER_STALE_MS = {}\n", super::WAITER_STALE.as_millis())));
        assert!(text.contains(&format!("local QUEUE_GRACE_MS = {}\n", super::QUEUE_GRACE.as_millis())));
        let fast = super::script_text(super::BEGIN_FAST);
        assert!(!fast.contains('@'), "a placeholder is left in the BEGIN fast path");
        assert!(fast.contains(&format!("local RUN_RETAIN_MS = {}\n", idem_core::limits::RUNNING_RETAIN_MS)));
    }

    use super::*;

    #[test]
    fn connection_settings_come_out_of_the_url_and_bad_ones_are_named() {
        let (url, s) =
            RedisSettings::take_from("rediss://h:6380/0?tls_ca=/ca.pem&response_timeout_ms=250&connect_timeout_ms=40")
                .unwrap();
        assert_eq!(url, "rediss://h:6380/0?tls_ca=/ca.pem");
        assert_eq!(
            s,
            RedisSettings {
                connect_timeout: Duration::from_millis(40),
                response_timeout: Some(Duration::from_millis(250))
            }
        );
        let (url, s) = RedisSettings::take_from("redis-cluster://a:1,b:2").unwrap();
        assert_eq!((url.as_str(), s), ("redis-cluster://a:1,b:2", RedisSettings::default()));
        for (url, name) in [
            ("redis://h/?connect_timeout_ms=0", "connect_timeout_ms"),
            ("redis://h/?response_timeout_ms=600001", "response_timeout_ms"),
            ("redis://h/?response_timeout_ms=soon", "response_timeout_ms"),
            ("redis://h/?respone_timeout_ms=5", "unknown setting 'respone_timeout_ms'"),
            ("redis://h/?connect_timeout_ms=5&key_prefix=p", "unknown setting 'key_prefix'"),
            ("redis-cluster://a:1,b:2?pool_size=4", "unknown setting 'pool_size'"),
            ("redis://h/?protocol=resp3", "unknown setting 'protocol'"),
            ("redis://h/?tls_ca=/ca.pem", "needs a rediss:// URL"),
            ("redis-cluster://a:1?tls_ca=/ca.pem", "needs a rediss:// URL"),
        ] {
            let e = RedisSettings::take_from(url).unwrap_err().to_string();
            assert!(e.contains(name), "{url}: {e}");
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn arr(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| bulk(s)).collect())
    }

    fn word(w: &'static str, rest: Vec<Reply>) -> Reply {
        Reply::Array(std::iter::once(Reply::Word(w)).chain(rest).collect())
    }

    fn b(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn unknown(v: Value, spec: &Spec) {
        let shown = format!("{v:?}");
        match to_reply(v, spec) {
            Err(e) => assert_eq!(e.code, ErrorCode::Unknown, "{shown}: {e:?}"),
            Ok(r) => panic!("{shown} decoded to {r:?}"),
        }
    }

    #[test]
    fn numbers_the_contract_keeps_non_negative_are_checked() {
        unknown(arr(&["started", "-1", "1"]), &IDEM_BEGIN);
        unknown(arr(&["started", "7", "4294967296"]), &IDEM_BEGIN);
        unknown(arr(&["running", "-7", "250"]), &IDEM_BEGIN);
        unknown(arr(&["acquired", "-3"]), &LOCK);
        unknown(arr(&["held", "me", "3", "10", "-1"]), &LOCK_INFO);
        unknown(arr(&["conflict", "-4", "a"]), &SLOTS_RESERVE);
        unknown(Value::Array(vec![bulk("ok"), Value::Int(-2)]), &VALUE_SET);
        // A lease that ended between two clock reads has no time left.
        let running = to_reply(arr(&["running", "7", "-3"]), &IDEM_BEGIN).unwrap();
        assert_eq!(running, word("running", vec![Reply::Int(7), Reply::Int(0)]));
    }

    #[test]
    fn a_valid_reply_decodes_as_before() {
        let ok = |v: Value, spec: &Spec| to_reply(v, spec).unwrap();
        assert_eq!(
            ok(arr(&["started", "1700000000000001", "1"]), &IDEM_BEGIN),
            word("started", vec![Reply::Int(1700000000000001), Reply::Int(1)])
        );
        assert_eq!(
            ok(arr(&["running", "7", "250"]), &IDEM_BEGIN),
            word("running", vec![Reply::Int(7), Reply::Int(250)])
        );
        assert_eq!(ok(arr(&["done", "42"]), &IDEM_BEGIN), word("done", vec![b("42")]));
        assert_eq!(ok(arr(&["absent"]), &IDEM_GET), word("absent", vec![]));
        assert_eq!(ok(arr(&["ok"]), &IDEM_COMMIT_ABORT), word("ok", vec![]));
        assert_eq!(ok(arr(&["renewed", "9"]), &RENEW), word("renewed", vec![Reply::Int(9)]));
        assert_eq!(ok(arr(&["lost"]), &RENEW), word("lost", vec![]));
        assert_eq!(ok(arr(&["acquired", "3"]), &LOCK), word("acquired", vec![Reply::Int(3)]));
        assert_eq!(ok(arr(&["busy", "me", "10"]), &LOCK), word("busy", vec![b("me"), Reply::Int(10)]));
        assert_eq!(
            ok(arr(&["held", "me", "3", "10", "0"]), &LOCK_INFO),
            word("held", vec![b("me"), Reply::Int(3), Reply::Int(10), Reply::Int(0)])
        );
        assert_eq!(ok(arr(&["held", "7"]), &CLAIM), word("held", vec![b("7")]));
        assert_eq!(
            ok(arr(&["held", "k1", "a", "k2", "b"]), &CLAIM_ALL),
            word("held", vec![b("k1"), b("a"), b("k2"), b("b")])
        );
        assert_eq!(
            ok(arr(&["conflict", "4", "a", "5", "b"]), &SLOTS_RESERVE),
            word("conflict", vec![Reply::Int(4), b("a"), Reply::Int(5), b("b")])
        );
        assert_eq!(ok(arr(&["reserved"]), &SLOTS_RESERVE), word("reserved", vec![]));
        assert_eq!(
            ok(arr(&["refused", "-9223372036854775808"]), &COUNTER_ADD),
            word("refused", vec![Reply::Int(i64::MIN)])
        );
        assert_eq!(ok(Value::Array(vec![bulk("ok"), Value::Int(2)]), &VALUE_SET), word("ok", vec![Reply::Int(2)]));
        assert_eq!(ok(arr(&["refused", "none"]), &FSM_MOVE), word("refused", vec![b("none")]));
        assert_eq!(ok(Value::Int(1), &COUNT), Reply::Int(1));
        assert_eq!(ok(Value::Nil, &PLAIN_GET), Reply::Nil);
        assert_eq!(ok(bulk("me"), &PLAIN_GET), b("me"));
        let e = to_reply(arr(&["!", "STALE", "fence 1 does not hold this key"]), &IDEM_RENEW).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::Stale, "fence 1 does not hold this key"));
        let e = to_reply(arr(&["!", "MISMATCH", "m"]), &IDEM_BEGIN).unwrap_err();
        assert_eq!(e.code, ErrorCode::Mismatch);
    }

    #[test]
    fn a_word_of_another_command_is_unknown() {
        unknown(arr(&["started", "1", "1"]), &CLAIM);
        unknown(arr(&["absent"]), &IDEM_BEGIN);
        unknown(arr(&["ok"]), &IDEM_RENEW);
        unknown(arr(&["lost"]), &IDEM_RENEW);
        unknown(arr(&["conflict", "1"]), &COUNTER_ADD);
        unknown(arr(&["reserved"]), &CLAIM_ALL);
        unknown(arr(&["ok"]), &COUNT);
        // The internal words are consumed before decoding, never answered.
        unknown(arr(&["wait", "7", "250"]), &IDEM_BEGIN);
        unknown(arr(&["slow"]), &IDEM_BEGIN);
        unknown(arr(&["wait", "me", "250"]), &LOCK);
    }

    #[test]
    fn a_wrong_length_is_unknown() {
        unknown(arr(&["renewed"]), &IDEM_RENEW);
        unknown(arr(&["ok", "1"]), &IDEM_COMMIT_ABORT);
        unknown(arr(&["started", "1"]), &IDEM_BEGIN);
        unknown(arr(&["held", "me", "3", "10"]), &LOCK_INFO);
        unknown(arr(&["held"]), &CLAIM);
        unknown(arr(&["held"]), &CLAIM_ALL);
        unknown(arr(&["held", "k1"]), &CLAIM_ALL);
        unknown(arr(&["conflict", "4", "a", "5"]), &SLOTS_RESERVE);
        unknown(arr(&["!", "STALE"]), &IDEM_RENEW);
        unknown(Value::Array(vec![]), &IDEM_GET);
    }

    #[test]
    fn a_wrong_type_is_unknown() {
        unknown(arr(&["started", "x", "1"]), &IDEM_BEGIN);
        unknown(arr(&["running", "7", ""]), &IDEM_GET);
        unknown(Value::Array(vec![bulk("acquired"), Value::Nil]), &LOCK);
        unknown(arr(&["conflict", "a", "h"]), &SLOTS_RESERVE);
        unknown(arr(&["ok", "99999999999999999999"]), &COUNTER_ADD);
        unknown(Value::Array(vec![bulk("held"), Value::Int(7)]), &CLAIM);
        unknown(Value::Array(vec![Value::Int(1)]), &CLAIM);
        unknown(arr(&["!", "NOPE", "m"]), &IDEM_BEGIN);
        // A bare answer where the command has none, or another kind.
        unknown(Value::Int(1), &CLAIM);
        unknown(Value::Int(1), &IDEM_BEGIN);
        unknown(Value::Nil, &IDEM_GET);
        unknown(Value::Int(1), &PLAIN_GET);
        unknown(Value::Nil, &COUNT);
        unknown(bulk("1"), &COUNT);
        unknown(Value::Okay, &COUNT);
    }
}
