//! A small typed client of idem's RESP commands, built on the `redis` crate
//! exactly as an application would use it (generic `redis::cmd`, no special
//! support from the server side).
//!
//! Why a pool of connections rather than one multiplexed connection: idem runs
//! one connection's commands in order, and a `WAIT` that parks delays every
//! command behind it on the same connection. Workers that may park therefore
//! each check out a connection of their own; the pool bounds how many exist.

use std::sync::Mutex;

use anyhow::{anyhow, bail, Context as _};
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::Semaphore;

/// The reply to `IDEM.BEGIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The caller must do the work, then COMMIT or ABORT with this fence.
    Started {
        /// The fence of this attempt.
        fence: u64,
        /// 1, or more when earlier attempts' leases ran out.
        attempt: u64,
    },
    /// Another attempt holds a live lease.
    Running {
        /// Its fence.
        fence: u64,
        /// Milliseconds left on its lease.
        left_ms: u64,
    },
    /// Completed earlier: the stored result.
    Done(Vec<u8>),
    /// The key was used with a different fingerprint (error `MISMATCH`).
    Mismatch,
}

/// The reply to `IDEM.COMMIT` / `IDEM.ABORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Applied.
    Ok,
    /// The fence is no longer current (error `STALE`).
    Stale,
}

/// The reply to `COUNTER.ADD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterAdd {
    /// Applied; the new value.
    Ok(i64),
    /// Outside [MIN, MAX]; nothing changed; the current value.
    Refused(i64),
    /// The OP id was applied before; the value its first application produced.
    Replayed(i64),
}

/// The reply to `SLOTS.RESERVE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// All slots taken for the holder.
    Reserved,
    /// Nothing taken: `(slot, holder)` pairs already held by others.
    Conflict(Vec<(i64, Vec<u8>)>),
}

/// A bounded pool of connections to one idem server.
pub struct IdemPool {
    client: redis::Client,
    idle: Mutex<Vec<MultiplexedConnection>>,
    permits: Semaphore,
}

impl IdemPool {
    /// A pool of at most `max_conns` connections to `url` (`redis://host:port`).
    /// Connections are opened lazily.
    pub fn new(url: &str, max_conns: usize) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("idem url {url}"))?;
        Ok(IdemPool { client, idle: Mutex::new(Vec::new()), permits: Semaphore::new(max_conns.max(1)) })
    }

    /// Sends one command on a pooled connection and returns the raw reply.
    /// Error replies come back as `Err` with the server's code in
    /// [`redis::RedisError::code`].
    pub async fn query(&self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        let _permit = self.permits.acquire().await.expect("pool semaphore is never closed");
        let pooled = self.idle.lock().expect("pool mutex").pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.client.get_multiplexed_async_connection().await?,
        };
        let res: redis::RedisResult<Value> = cmd.query_async(&mut conn).await;
        // A connection that failed at the I/O level is dropped; one that only
        // carried an error reply is healthy and goes back to the pool.
        let broken = matches!(&res, Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout());
        if !broken {
            self.idle.lock().expect("pool mutex").push(conn);
        }
        res
    }

    /// `IDEM.BEGIN key [FP fp] LEASE lease_ms WAIT wait_ms`.
    pub async fn begin(&self, key: &str, fp: Option<&str>, lease_ms: u64, wait_ms: u64) -> anyhow::Result<Begin> {
        let mut c = redis::cmd("IDEM.BEGIN");
        c.arg(key);
        if let Some(fp) = fp {
            c.arg("FP").arg(fp);
        }
        c.arg("LEASE").arg(lease_ms).arg("WAIT").arg(wait_ms);
        let v = match self.query(&c).await {
            Ok(v) => v,
            Err(e) if e.code() == Some("MISMATCH") => return Ok(Begin::Mismatch),
            Err(e) => return Err(e).context("IDEM.BEGIN"),
        };
        let items = array(&v)?;
        match word(&v)? {
            "started" => Ok(Begin::Started { fence: uint(items, 1)?, attempt: uint(items, 2)? }),
            "running" => Ok(Begin::Running { fence: uint(items, 1)?, left_ms: uint(items, 2)? }),
            "done" => Ok(Begin::Done(bytes(items, 1)?)),
            w => bail!("IDEM.BEGIN: unexpected reply word {w}"),
        }
    }

    /// `IDEM.COMMIT key fence result`.
    pub async fn commit(&self, key: &str, fence: u64, result: &[u8]) -> anyhow::Result<Finish> {
        let mut c = redis::cmd("IDEM.COMMIT");
        c.arg(key).arg(fence).arg(result);
        self.finish(&c).await.context("IDEM.COMMIT")
    }

    /// `IDEM.ABORT key fence`.
    pub async fn abort(&self, key: &str, fence: u64) -> anyhow::Result<Finish> {
        let mut c = redis::cmd("IDEM.ABORT");
        c.arg(key).arg(fence);
        self.finish(&c).await.context("IDEM.ABORT")
    }

    async fn finish(&self, c: &redis::Cmd) -> anyhow::Result<Finish> {
        match self.query(c).await {
            Ok(v) if word(&v)? == "ok" => Ok(Finish::Ok),
            Ok(v) => bail!("unexpected reply {v:?}"),
            Err(e) if e.code() == Some("STALE") => Ok(Finish::Stale),
            Err(e) => Err(e.into()),
        }
    }

    /// `COUNTER.ADD key delta [MIN n] [MAX n] [OP id]`.
    pub async fn counter_add(
        &self,
        key: &str,
        delta: i64,
        min: Option<i64>,
        max: Option<i64>,
        op: Option<&str>,
    ) -> anyhow::Result<CounterAdd> {
        let mut c = redis::cmd("COUNTER.ADD");
        c.arg(key).arg(delta);
        if let Some(m) = min {
            c.arg("MIN").arg(m);
        }
        if let Some(m) = max {
            c.arg("MAX").arg(m);
        }
        if let Some(op) = op {
            c.arg("OP").arg(op);
        }
        let v = self.query(&c).await.context("COUNTER.ADD")?;
        let items = array(&v)?;
        let value = int(items, 1)?;
        match word(&v)? {
            "ok" => Ok(CounterAdd::Ok(value)),
            "refused" => Ok(CounterAdd::Refused(value)),
            "replayed" => Ok(CounterAdd::Replayed(value)),
            w => bail!("COUNTER.ADD: unexpected reply word {w}"),
        }
    }

    /// `COUNTER.GET key`.
    pub async fn counter_get(&self, key: &str) -> anyhow::Result<i64> {
        let v = self.query(redis::cmd("COUNTER.GET").arg(key)).await.context("COUNTER.GET")?;
        match v {
            Value::Int(i) => Ok(i),
            other => bail!("COUNTER.GET: unexpected reply {other:?}"),
        }
    }

    /// `SLOTS.RESERVE resource first last holder SIZE size`.
    pub async fn slots_reserve(
        &self,
        resource: &str,
        first: u32,
        last: u32,
        holder: &str,
        size: u32,
    ) -> anyhow::Result<Reserve> {
        let mut c = redis::cmd("SLOTS.RESERVE");
        c.arg(resource).arg(first).arg(last).arg(holder).arg("SIZE").arg(size);
        let v = self.query(&c).await.context("SLOTS.RESERVE")?;
        let items = array(&v)?;
        match word(&v)? {
            "reserved" => Ok(Reserve::Reserved),
            "conflict" => {
                let mut pairs = Vec::new();
                let mut i = 1;
                while i + 1 < items.len() {
                    pairs.push((int(items, i)?, bytes(items, i + 1)?));
                    i += 2;
                }
                Ok(Reserve::Conflict(pairs))
            }
            w => bail!("SLOTS.RESERVE: unexpected reply word {w}"),
        }
    }
}

fn array(v: &Value) -> anyhow::Result<&[Value]> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(anyhow!("expected an array reply, got {other:?}")),
    }
}

/// The status word that starts every primitive's reply.
fn word(v: &Value) -> anyhow::Result<&str> {
    match array(v)?.first() {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).context("status word"),
        Some(Value::SimpleString(s)) => Ok(s),
        other => Err(anyhow!("expected a status word, got {other:?}")),
    }
}

fn int(items: &[Value], i: usize) -> anyhow::Result<i64> {
    match items.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::BulkString(b)) => Ok(std::str::from_utf8(b)?.parse()?),
        other => Err(anyhow!("expected an integer at {i}, got {other:?}")),
    }
}

fn uint(items: &[Value], i: usize) -> anyhow::Result<u64> {
    Ok(u64::try_from(int(items, i)?)?)
}

fn bytes(items: &[Value], i: usize) -> anyhow::Result<Vec<u8>> {
    match items.get(i) {
        Some(Value::BulkString(b)) => Ok(b.clone()),
        Some(Value::SimpleString(s)) => Ok(s.clone().into_bytes()),
        Some(Value::Nil) => Ok(Vec::new()),
        other => Err(anyhow!("expected bytes at {i}, got {other:?}")),
    }
}
