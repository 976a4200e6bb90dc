//! One client process: a single connection, a call at a time, every call
//! recorded. A call whose outcome is unknown retires the process (its
//! connection is dropped and a new process id takes over), as in Jepsen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idem_check::history::{Call, EventKind, Reply};
use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::recorder::Recorder;

/// How long a call may take before its outcome counts as unknown. Longer
/// than any WAIT the workload asks for plus the longest server pause.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a call came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reply.
    Ok(Reply),
    /// Certainly not applied (never sent).
    Fail,
    /// Unknown.
    Info,
}

/// Allocates process ids.
#[derive(Default)]
pub struct Processes(AtomicU64);

impl Processes {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A client process.
pub struct Client {
    url: String,
    rec: Arc<Recorder>,
    ids: Arc<Processes>,
    process: u64,
    conn: Option<MultiplexedConnection>,
    busy_changes_nothing: bool,
}

/// Whether a BUSY message says the store connection was never made, or
/// that the store ran nothing (Redis loading its data set).
fn never_sent(message: &str) -> bool {
    message.contains("nothing sent")
        || message.contains("nothing ran")
        || message.contains("error connecting")
        || message.contains("creating a new object")
        || message.contains("Connection refused")
}

impl Client {
    pub fn new(url: String, rec: Arc<Recorder>, ids: Arc<Processes>, busy_changes_nothing: bool) -> Client {
        let process = ids.next();
        Client { url, rec, ids, process, conn: None, busy_changes_nothing }
    }

    pub fn process(&self) -> u64 {
        self.process
    }

    async fn connect(&mut self) -> Option<MultiplexedConnection> {
        if let Some(c) = &self.conn {
            return Some(c.clone());
        }
        let client = redis::Client::open(self.url.as_str()).ok()?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT);
        let c = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection_with_config(&cfg))
            .await
            .ok()?
            .ok()?;
        self.conn = Some(c.clone());
        Some(c)
    }

    /// Sends `call`, records it and its outcome.
    pub async fn call(&mut self, call: Call) -> Outcome {
        let Some(mut conn) = self.connect().await else {
            // Not connected: nothing was sent. Recorded as a failed call so
            // the history shows the server was unreachable.
            self.rec.invoke(self.process, &call);
            self.rec.ended(self.process, EventKind::Fail, "connect failed");
            return Outcome::Fail;
        };
        let cmd = encode(&call);
        self.rec.invoke(self.process, &call);
        let sent = tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<Value>(&mut conn)).await;
        let outcome = match sent {
            Ok(Ok(v)) => match decode(&call, &v) {
                Ok(reply) => Outcome::Ok(reply),
                Err(why) => {
                    self.rec.ended(self.process, EventKind::Info, &why);
                    self.retire();
                    return Outcome::Info;
                }
            },
            Ok(Err(e)) if e.code() == Some("STALE") => Outcome::Ok(Reply::Stale),
            // The contract says an error reply other than UNKNOWN changes
            // nothing. A BUSY whose store connection could not even be made
            // certainly did not happen. The SQL stores still answer BUSY when
            // their connection breaks mid-call, which may have taken effect
            // (docs/backends.md), so such a BUSY is unknown, unless the run
            // holds idem to the contract's letter. UNKNOWN is unknown.
            Ok(Err(e)) if e.code() == Some("BUSY") && (self.busy_changes_nothing || never_sent(&e.to_string())) => {
                self.rec.ended(self.process, EventKind::Fail, &e.to_string());
                return Outcome::Fail;
            }
            Ok(Err(e)) => {
                let why = e.to_string();
                self.rec.ended(self.process, EventKind::Info, &why);
                self.retire();
                return Outcome::Info;
            }
            Err(_) => {
                self.rec.ended(self.process, EventKind::Info, "timeout");
                self.retire();
                return Outcome::Info;
            }
        };
        if let Outcome::Ok(r) = &outcome {
            self.rec.ok(self.process, r);
        }
        outcome
    }

    /// A new process id and connection after an unknown outcome.
    fn retire(&mut self) {
        self.conn = None;
        self.process = self.ids.next();
    }
}

/// The RESP command of a call (docs/commands.md).
pub fn encode(call: &Call) -> redis::Cmd {
    use Call::*;
    let c = |name: &str| redis::cmd(name);
    match call {
        IdemBegin { key, lease_ms, wait_ms } => {
            c("IDEM.BEGIN").arg(key).arg("LEASE").arg(lease_ms).arg("WAIT").arg(wait_ms).to_owned()
        }
        IdemCommit { key, fence, result } => c("IDEM.COMMIT").arg(key).arg(fence).arg(result).to_owned(),
        IdemAbort { key, fence } => c("IDEM.ABORT").arg(key).arg(fence).to_owned(),
        IdemGet { key } => c("IDEM.GET").arg(key).to_owned(),
        Claim { key, owner } => c("CLAIM").arg(key).arg(owner).to_owned(),
        Release { key, owner } => c("RELEASE").arg(key).arg(owner).to_owned(),
        Owner { key } => c("OWNER").arg(key).to_owned(),
        Lock { name, owner, lease_ms, wait_ms } => {
            c("LOCK").arg(name).arg(owner).arg("LEASE").arg(lease_ms).arg("WAIT").arg(wait_ms).to_owned()
        }
        Renew { name, owner, lease_ms } => c("RENEW").arg(name).arg(owner).arg("LEASE").arg(lease_ms).to_owned(),
        Unlock { name, owner } => c("UNLOCK").arg(name).arg(owner).to_owned(),
        LockInfo { name } => c("LOCK.INFO").arg(name).to_owned(),
        TokenNew { scope, ttl_ms } => c("TOKEN.NEW").arg(scope).arg("TTL").arg(ttl_ms).to_owned(),
        TokenUse { scope, token } => c("TOKEN.USE").arg(scope).arg(token).to_owned(),
        CounterAdd { key, delta, min, max, op } => {
            let mut cmd = c("COUNTER.ADD");
            cmd.arg(key).arg(delta).arg("MIN").arg(min).arg("MAX").arg(max);
            if let Some(op) = op {
                cmd.arg("OP").arg(op);
            }
            cmd
        }
        CounterGet { key } => c("COUNTER.GET").arg(key).to_owned(),
        ValueGet { key } => c("VALUE.GET").arg(key).to_owned(),
        ValueSet { key, value, if_version } => {
            let mut cmd = c("VALUE.SET");
            cmd.arg(key).arg(value);
            if let Some(v) = if_version {
                cmd.arg("IFVERSION").arg(v);
            }
            cmd
        }
        FsmMove { key, to, from } => {
            let mut cmd = c("FSM.MOVE");
            cmd.arg(key).arg(to).arg("FROM");
            for f in from {
                cmd.arg(f);
            }
            cmd
        }
        FsmGet { key } => c("FSM.GET").arg(key).to_owned(),
        SlotsReserve { resource, first, last, holder, size } => {
            c("SLOTS.RESERVE").arg(resource).arg(first).arg(last).arg(holder).arg("SIZE").arg(size).to_owned()
        }
        SlotsRelease { resource, first, last, holder } => {
            c("SLOTS.RELEASE").arg(resource).arg(first).arg(last).arg(holder).to_owned()
        }
        SlotsGet { resource } => c("SLOTS.GET").arg(resource).to_owned(),
    }
}

fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| "a reply that is not UTF-8".into()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Okay => Ok("OK".into()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn uint(v: &Value) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        other => text(other)?.parse().map_err(|_| format!("expected an integer, got {other:?}")),
    }
}

fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?.parse().map_err(|_| format!("expected an integer, got {other:?}")),
    }
}

fn opt_text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Nil => Ok(None),
        other => text(other).map(Some),
    }
}

/// Decodes strictly: anything the contract does not list is an error (and
/// the call's outcome unknown), never a plausible reply.
pub fn decode(call: &Call, v: &Value) -> Result<Reply, String> {
    use Call::*;
    let arr: &[Value] = match v {
        Value::Array(a) => a,
        _ => &[],
    };
    let status = arr.first().and_then(|v| text(v).ok());
    let bad = || format!("unexpected reply to {call:?}: {v:?}");
    let reply = match (call, status.as_deref(), arr.len()) {
        (IdemBegin { .. } | IdemGet { .. }, Some("started"), 3) => {
            Reply::Started { fence: uint(&arr[1])?, attempt: uint(&arr[2])? as u32 }
        }
        (IdemBegin { .. } | IdemGet { .. }, Some("running"), 3) => Reply::Running { fence: uint(&arr[1])? },
        (IdemBegin { .. } | IdemGet { .. }, Some("done"), 2) => Reply::Done { result: text(&arr[1])? },
        (IdemGet { .. }, Some("absent"), 1) => Reply::Absent,
        (IdemCommit { .. } | IdemAbort { .. }, Some("ok"), 1) => Reply::Ok,
        (Claim { .. }, Some("claimed"), 1) => Reply::Claimed,
        (Claim { .. }, Some("held"), 2) => Reply::Held { owner: text(&arr[1])? },
        (Release { .. } | Unlock { .. } | TokenUse { .. } | SlotsRelease { .. }, _, _) => match v {
            Value::Int(n) => Reply::Int { n: *n },
            _ => return Err(bad()),
        },
        (Owner { .. } | FsmGet { .. }, _, _) if !matches!(v, Value::Array(_)) => Reply::Name { name: opt_text(v)? },
        (Lock { .. }, Some("acquired"), 2) => Reply::Acquired { fence: uint(&arr[1])? },
        (Lock { .. }, Some("busy"), 3) => Reply::Busy { holder: text(&arr[1])? },
        (Renew { .. }, Some("renewed"), 2) => Reply::Renewed { fence: uint(&arr[1])? },
        (Renew { .. }, Some("lost"), 1) => Reply::Lost,
        (LockInfo { .. }, Some("free"), 1) => Reply::LockFree,
        (LockInfo { .. }, Some("held"), 5) => Reply::LockHeld { owner: text(&arr[1])?, fence: uint(&arr[2])? },
        (TokenNew { .. }, _, _) if !matches!(v, Value::Array(_)) => Reply::Token { token: text(v)? },
        (CounterAdd { .. }, Some("ok"), 2) => Reply::CounterOk { value: int(&arr[1])? },
        (CounterAdd { .. }, Some("refused"), 2) => Reply::Refused { value: int(&arr[1])? },
        (CounterAdd { .. }, Some("replayed"), 2) => Reply::Replayed { value: int(&arr[1])? },
        (CounterGet { .. }, _, _) => Reply::CounterValue { value: int(v)? },
        (ValueGet { .. }, _, _) => match v {
            Value::Nil => Reply::Versioned { value: None },
            Value::Array(a) if a.len() == 2 => Reply::Versioned { value: Some((text(&a[0])?, uint(&a[1])?)) },
            _ => return Err(bad()),
        },
        (ValueSet { .. }, Some("ok"), 2) => Reply::ValueOk { version: uint(&arr[1])? },
        (ValueSet { .. }, Some("conflict"), 2) => Reply::Conflict { version: uint(&arr[1])? },
        (FsmMove { .. }, Some("moved"), 2) => Reply::Moved,
        (FsmMove { .. }, Some("already"), 2) => Reply::Already,
        (FsmMove { .. }, Some("refused"), 2) => {
            let cur = text(&arr[1])?;
            Reply::FsmRefused { current: (cur != "none").then_some(cur) }
        }
        (SlotsReserve { .. }, Some("reserved"), 1) => Reply::Reserved,
        (SlotsReserve { .. }, Some("conflict"), n) if n % 2 == 1 => {
            let mut held = Vec::new();
            for pair in arr[1..].chunks(2) {
                held.push((uint(&pair[0])? as u32, text(&pair[1])?));
            }
            Reply::SlotConflict { held }
        }
        (SlotsGet { .. }, _, _) => match v {
            Value::Array(a) => Reply::Slots { holders: a.iter().map(opt_text).collect::<Result<_, _>>()? },
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    Ok(reply)
}
