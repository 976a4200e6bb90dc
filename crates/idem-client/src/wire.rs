//! Commands onto the wire and replies off it, for RESP through the `redis`
//! crate. Encoding writes each [`Command`] as docs/commands.md spells it;
//! decoding checks every reply against the shape the contract gives its
//! command and turns anything else into [`Error::Protocol`], never into a
//! plausible value.

use bytes::Bytes;
use idem_core::{Command, Reply};
use redis::Value;

use crate::error::Error;

/// The command as RESP arguments.
pub(crate) fn encode(cmd: &Command) -> redis::Cmd {
    let mut c = redis::cmd(cmd.name());
    match cmd {
        Command::IdemBegin { key, fingerprint, lease_ms, wait_ms } => {
            c.arg(&key[..]);
            if let Some(fp) = fingerprint {
                c.arg("FP").arg(&fp[..]);
            }
            c.arg("LEASE").arg(*lease_ms);
            if *wait_ms > 0 {
                c.arg("WAIT").arg(*wait_ms);
            }
        }
        Command::IdemCommit { key, fence, result, keep_ms } => {
            c.arg(&key[..]).arg(*fence).arg(&result[..]).arg("KEEP").arg(*keep_ms);
        }
        Command::IdemAbort { key, fence } => {
            c.arg(&key[..]).arg(*fence);
        }
        Command::IdemRenew { key, fence, lease_ms } => {
            c.arg(&key[..]).arg(*fence).arg("LEASE").arg(*lease_ms);
        }
        Command::IdemGet { key }
        | Command::IdemDel { key }
        | Command::Owner { key }
        | Command::CounterGet { key }
        | Command::ValueGet { key }
        | Command::FsmGet { key } => {
            c.arg(&key[..]);
        }
        Command::Claim { key, owner, ttl_ms } => {
            c.arg(&key[..]).arg(&owner[..]);
            if let Some(ttl) = ttl_ms {
                c.arg("TTL").arg(*ttl);
            }
        }
        Command::ClaimAll { owner, keys } => {
            c.arg(&owner[..]);
            for k in keys {
                c.arg(&k[..]);
            }
        }
        Command::Release { key, owner } => {
            c.arg(&key[..]).arg(&owner[..]);
        }
        Command::Lock { name, owner, lease_ms, wait_ms } => {
            c.arg(&name[..]).arg(&owner[..]).arg("LEASE").arg(*lease_ms);
            if *wait_ms > 0 {
                c.arg("WAIT").arg(*wait_ms);
            }
        }
        Command::Renew { name, owner, lease_ms } => {
            c.arg(&name[..]).arg(&owner[..]).arg("LEASE").arg(*lease_ms);
        }
        Command::Unlock { name, owner } => {
            c.arg(&name[..]).arg(&owner[..]);
        }
        Command::LockInfo { name } => {
            c.arg(&name[..]);
        }
        Command::TokenNew { scope, ttl_ms } => {
            c.arg(&scope[..]).arg("TTL").arg(*ttl_ms);
        }
        Command::TokenUse { scope, token } => {
            c.arg(&scope[..]).arg(&token[..]);
        }
        Command::CounterAdd { key, delta, min, max, op, keep_ms } => {
            c.arg(&key[..]).arg(*delta);
            if let Some(m) = min {
                c.arg("MIN").arg(*m);
            }
            if let Some(m) = max {
                c.arg("MAX").arg(*m);
            }
            // KEEP without OP is refused by the contract; without OP the
            // parsed default carries no meaning, so it is not sent.
            if let Some(op) = op {
                c.arg("OP").arg(&op[..]).arg("KEEP").arg(*keep_ms);
            }
        }
        Command::ValueSet { key, value, if_version } => {
            c.arg(&key[..]).arg(&value[..]);
            if let Some(v) = if_version {
                c.arg("IFVERSION").arg(*v);
            }
        }
        Command::FsmMove { key, to, from } => {
            c.arg(&key[..]).arg(&to[..]).arg("FROM");
            for s in from {
                c.arg(&s[..]);
            }
        }
        Command::SlotsReserve { resource, first, last, holder, size } => {
            c.arg(&resource[..]).arg(*first).arg(*last).arg(&holder[..]);
            if let Some(s) = size {
                c.arg("SIZE").arg(*s);
            }
        }
        Command::SlotsRelease { resource, first, last, holder } => {
            c.arg(&resource[..]).arg(*first).arg(*last).arg(&holder[..]);
        }
        Command::SlotsGet { resource } => {
            c.arg(&resource[..]);
        }
    }
    c
}

/// One element of a status reply after its word.
#[derive(Clone, Copy)]
enum Item {
    /// A non-negative integer (fences, attempts, milliseconds, versions, slots).
    UInt,
    /// Any integer (counter values).
    Int,
    /// Bytes (results, owners, holders, states).
    Bulk,
}

/// One allowed status reply: its word, the items that follow it, and a group
/// of items that repeats one or more times after those (conflict lists).
struct Status {
    word: &'static str,
    fixed: &'static [Item],
    repeated: &'static [Item],
}

const fn st(word: &'static str, fixed: &'static [Item]) -> Status {
    Status { word, fixed, repeated: &[] }
}

/// The shape of a command's reply.
enum Shape {
    /// An array that starts with one of these status words.
    Status(&'static [Status]),
    /// An integer in `0..=max` (`None`: any non-negative integer).
    Count(Option<i64>),
    /// Any integer.
    Int,
    /// Bytes.
    Bulk,
    /// Bytes or nil.
    BulkOrNil,
    /// `[value, version]` or nil (VALUE.GET).
    ValueOrNil,
    /// An array of bytes-or-nil (SLOTS.GET).
    Holders,
}

use Item::{Bulk, Int, UInt};

const IDEM_BEGIN: &[Status] = &[st("started", &[UInt, UInt]), st("running", &[UInt, UInt]), st("done", &[Bulk])];
const IDEM_GET: &[Status] = &[st("absent", &[]), st("running", &[UInt, UInt]), st("done", &[Bulk])];
const OK: &[Status] = &[st("ok", &[])];
const CLAIM: &[Status] = &[st("claimed", &[]), st("held", &[Bulk])];
const CLAIM_ALL: &[Status] = &[st("claimed", &[]), Status { word: "held", fixed: &[], repeated: &[Bulk, Bulk] }];
const LOCK: &[Status] = &[st("acquired", &[UInt]), st("busy", &[Bulk, UInt])];
const RENEW: &[Status] = &[st("renewed", &[UInt]), st("lost", &[])];
const IDEM_RENEW: &[Status] = &[st("renewed", &[UInt])];
const LOCK_INFO: &[Status] = &[st("free", &[]), st("held", &[Bulk, UInt, UInt, UInt])];
const COUNTER_ADD: &[Status] = &[st("ok", &[Int]), st("refused", &[Int]), st("replayed", &[Int])];
const VALUE_SET: &[Status] = &[st("ok", &[UInt]), st("conflict", &[UInt])];
const FSM_MOVE: &[Status] = &[st("moved", &[Bulk]), st("already", &[Bulk]), st("refused", &[Bulk])];
const SLOTS_RESERVE: &[Status] =
    &[st("reserved", &[]), Status { word: "conflict", fixed: &[], repeated: &[UInt, Bulk] }];

fn shape(cmd: &Command) -> Shape {
    match cmd {
        Command::IdemBegin { .. } => Shape::Status(IDEM_BEGIN),
        Command::IdemCommit { .. } | Command::IdemAbort { .. } => Shape::Status(OK),
        Command::IdemRenew { .. } => Shape::Status(IDEM_RENEW),
        Command::IdemGet { .. } => Shape::Status(IDEM_GET),
        Command::IdemDel { .. } | Command::Release { .. } | Command::Unlock { .. } | Command::TokenUse { .. } => {
            Shape::Count(Some(1))
        }
        Command::Claim { .. } => Shape::Status(CLAIM),
        Command::ClaimAll { .. } => Shape::Status(CLAIM_ALL),
        Command::Owner { .. } | Command::FsmGet { .. } => Shape::BulkOrNil,
        Command::Lock { .. } => Shape::Status(LOCK),
        Command::Renew { .. } => Shape::Status(RENEW),
        Command::LockInfo { .. } => Shape::Status(LOCK_INFO),
        Command::TokenNew { .. } => Shape::Bulk,
        Command::CounterAdd { .. } => Shape::Status(COUNTER_ADD),
        Command::CounterGet { .. } => Shape::Int,
        Command::ValueGet { .. } => Shape::ValueOrNil,
        Command::ValueSet { .. } => Shape::Status(VALUE_SET),
        Command::FsmMove { .. } => Shape::Status(FSM_MOVE),
        Command::SlotsReserve { .. } => Shape::Status(SLOTS_RESERVE),
        Command::SlotsRelease { .. } => Shape::Count(None),
        Command::SlotsGet { .. } => Shape::Holders,
    }
}

/// A failed `redis` call as the contract's error (a server error) or a
/// transport error.
pub(crate) fn redis_error(command: &'static str, e: redis::RedisError) -> Error {
    if let Some(code) = e.code() {
        if !(e.is_io_error() || e.is_connection_dropped() || e.is_timeout()) {
            let message = e.detail().unwrap_or_default().to_string();
            return Error::from_server(code, message).unwrap_or_else(|| Error::Protocol {
                command,
                detail: format!("error code '{code}' is not the contract's"),
            });
        }
    }
    Error::Transport(e.to_string())
}

/// Decodes the reply to `cmd`, checking it against the contract's shape.
/// Status words come back as [`Reply::Word`], so a reply decoded here equals
/// the one the server's own backend produced.
pub(crate) fn decode(cmd: &Command, v: Value) -> Result<Reply, Error> {
    let command = cmd.name();
    let bad = |detail: String| Error::Protocol { command, detail };
    let v = v.extract_error().map_err(|e| redis_error(command, e))?;
    match shape(cmd) {
        Shape::Status(allowed) => {
            let Value::Array(items) = v else { return Err(bad(format!("expected a status array, got {v:?}"))) };
            let mut it = items.into_iter();
            let word = match it.next() {
                Some(Value::BulkString(b)) => b,
                Some(Value::SimpleString(s)) => s.into_bytes(),
                other => return Err(bad(format!("expected a status word, got {other:?}"))),
            };
            let Some(status) = allowed.iter().find(|s| s.word.as_bytes() == word.as_slice()) else {
                return Err(bad(format!(
                    "status word '{}' is not one of this command's",
                    String::from_utf8_lossy(&word)
                )));
            };
            let rest: Vec<Value> = it.collect();
            let mut out = Vec::with_capacity(1 + rest.len());
            out.push(Reply::Word(status.word));
            let (fixed, tail) = if rest.len() >= status.fixed.len() {
                let mut rest = rest;
                let tail = rest.split_off(status.fixed.len());
                (rest, tail)
            } else {
                return Err(bad(format!("'{}' needs {} items, got {}", status.word, status.fixed.len(), rest.len())));
            };
            for (item, v) in status.fixed.iter().zip(fixed) {
                out.push(decode_item(*item, v).map_err(&bad)?);
            }
            let group = status.repeated;
            if group.is_empty() {
                if !tail.is_empty() {
                    return Err(bad(format!("'{}' has {} items too many", status.word, tail.len())));
                }
            } else if tail.is_empty() || tail.len() % group.len() != 0 {
                return Err(bad(format!(
                    "'{}' needs groups of {} items, got {}",
                    status.word,
                    group.len(),
                    tail.len()
                )));
            } else {
                for (i, v) in tail.into_iter().enumerate() {
                    out.push(decode_item(group[i % group.len()], v).map_err(&bad)?);
                }
            }
            Ok(Reply::Array(out))
        }
        Shape::Count(max) => match v {
            Value::Int(n) if n >= 0 && max.is_none_or(|m| n <= m) => Ok(Reply::Int(n)),
            other => Err(bad(format!("expected a count, got {other:?}"))),
        },
        Shape::Int => match v {
            Value::Int(n) => Ok(Reply::Int(n)),
            other => Err(bad(format!("expected an integer, got {other:?}"))),
        },
        Shape::Bulk => match v {
            Value::BulkString(b) => Ok(Reply::Bulk(Bytes::from(b))),
            other => Err(bad(format!("expected bytes, got {other:?}"))),
        },
        Shape::BulkOrNil => match v {
            Value::BulkString(b) => Ok(Reply::Bulk(Bytes::from(b))),
            Value::Nil => Ok(Reply::Nil),
            other => Err(bad(format!("expected bytes or nil, got {other:?}"))),
        },
        Shape::ValueOrNil => match v {
            Value::Nil => Ok(Reply::Nil),
            Value::Array(items) if items.len() == 2 => {
                let mut it = items.into_iter();
                let (value, version) = (it.next(), it.next());
                let value = decode_item(Bulk, value.unwrap_or(Value::Nil)).map_err(&bad)?;
                let version = decode_item(UInt, version.unwrap_or(Value::Nil)).map_err(&bad)?;
                Ok(Reply::Array(vec![value, version]))
            }
            other => Err(bad(format!("expected [value, version] or nil, got {other:?}"))),
        },
        Shape::Holders => match v {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::BulkString(b) => Ok(Reply::Bulk(Bytes::from(b))),
                    Value::Nil => Ok(Reply::Nil),
                    other => Err(bad(format!("expected a holder or nil, got {other:?}"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Reply::Array),
            other => Err(bad(format!("expected an array of holders, got {other:?}"))),
        },
    }
}

fn decode_item(item: Item, v: Value) -> Result<Reply, String> {
    match (item, v) {
        (Item::UInt, Value::Int(n)) if n >= 0 => Ok(Reply::Int(n)),
        (Item::Int, Value::Int(n)) => Ok(Reply::Int(n)),
        (Item::Bulk, Value::BulkString(b)) => Ok(Reply::Bulk(Bytes::from(b))),
        (Item::UInt, other) => Err(format!("expected a non-negative integer, got {other:?}")),
        (Item::Int, other) => Err(format!("expected an integer, got {other:?}")),
        (Item::Bulk, other) => Err(format!("expected bytes, got {other:?}")),
    }
}

/// Decodes the reply to `DBSIZE`.
pub(crate) fn decode_dbsize(v: Value) -> Result<u64, Error> {
    match v {
        Value::Int(n) if n >= 0 => Ok(n as u64),
        other if matches!(other, Value::ServerError(_)) => match other.extract_error() {
            Err(e) => Err(redis_error("DBSIZE", e)),
            Ok(v) => Err(Error::Protocol { command: "DBSIZE", detail: format!("{v:?}") }),
        },
        other => Err(Error::Protocol { command: "DBSIZE", detail: format!("expected a count, got {other:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use idem_core::Limits;

    use super::*;

    fn parse(line: &str) -> Command {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        Command::parse(&args, &Limits::default()).expect(line)
    }

    fn args(c: &redis::Cmd) -> Vec<Bytes> {
        c.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => Bytes::copy_from_slice(b),
                redis::Arg::Cursor => panic!("no cursor arguments"),
            })
            .collect()
    }

    /// Every command encodes to arguments that parse back to itself.
    #[test]
    fn encode_round_trips_through_the_parser() {
        for line in [
            "IDEM.BEGIN k",
            "IDEM.BEGIN k FP f LEASE 5 WAIT 7",
            "IDEM.COMMIT k 3 result KEEP 9",
            "IDEM.ABORT k 3",
            "IDEM.GET k",
            "IDEM.DEL k",
            "CLAIM k o",
            "CLAIM k o TTL 10",
            "CLAIM.ALL o a b c",
            "RELEASE k o",
            "OWNER k",
            "LOCK n o LEASE 100",
            "LOCK n o LEASE 100 WAIT 50",
            "RENEW n o LEASE 100",
            "UNLOCK n o",
            "LOCK.INFO n",
            "TOKEN.NEW s TTL 100",
            "TOKEN.USE s abc",
            "COUNTER.ADD k -5",
            "COUNTER.ADD k 5 MIN -1 MAX 9 OP x KEEP 100",
            "COUNTER.GET k",
            "VALUE.GET k",
            "VALUE.SET k v",
            "VALUE.SET k v IFVERSION 0",
            "FSM.MOVE k paid FROM none new",
            "FSM.GET k",
            "SLOTS.RESERVE r 1 3 h",
            "SLOTS.RESERVE r 1 3 h SIZE 10",
            "SLOTS.RELEASE r 1 3 h",
            "SLOTS.GET r",
        ] {
            let cmd = parse(line);
            let back = Command::parse(&args(&encode(&cmd)), &Limits::default()).expect(line);
            assert_eq!(back, cmd, "{line}");
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn decode_accepts_the_contract_shapes() {
        let begin = parse("IDEM.BEGIN k");
        let r = decode(&begin, Value::Array(vec![bulk("started"), Value::Int(7), Value::Int(1)])).unwrap();
        assert_eq!(r, Reply::Array(vec![Reply::Word("started"), Reply::Int(7), Reply::Int(1)]));
        let r = decode(&begin, Value::Array(vec![bulk("done"), bulk("")])).unwrap();
        assert_eq!(r, Reply::Array(vec![Reply::Word("done"), Reply::Bulk(Bytes::new())]));
        let held = decode(
            &parse("CLAIM.ALL o a b"),
            Value::Array(vec![bulk("held"), bulk("a"), bulk("x"), bulk("b"), bulk("y")]),
        )
        .unwrap();
        assert_eq!(held.word(), Some("held"));
        assert_eq!(decode(&parse("VALUE.GET k"), Value::Nil).unwrap(), Reply::Nil);
        assert_eq!(
            decode(&parse("SLOTS.GET r"), Value::Array(vec![Value::Nil, bulk("h")])).unwrap(),
            Reply::Array(vec![Reply::Nil, Reply::Bulk(Bytes::from_static(b"h"))])
        );
    }

    #[test]
    fn decode_refuses_anything_else() {
        let begin = parse("IDEM.BEGIN k");
        for v in [
            Value::Array(vec![bulk("ok")]),
            Value::Array(vec![bulk("started"), Value::Int(7)]),
            Value::Array(vec![bulk("started"), Value::Int(7), Value::Int(1), Value::Int(2)]),
            Value::Array(vec![bulk("started"), Value::Int(-7), Value::Int(1)]),
            Value::Array(vec![bulk("done"), Value::Nil]),
            Value::Int(1),
            Value::Nil,
            Value::Okay,
        ] {
            let e = decode(&begin, v.clone()).unwrap_err();
            assert!(matches!(e, Error::Protocol { command: "IDEM.BEGIN", .. }), "{v:?}: {e}");
        }
        assert!(matches!(decode(&parse("IDEM.DEL k"), Value::Int(2)), Err(Error::Protocol { .. })));
        assert!(matches!(
            decode(&parse("CLAIM.ALL o a"), Value::Array(vec![bulk("held")])),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            decode(&parse("CLAIM.ALL o a"), Value::Array(vec![bulk("held"), bulk("a")])),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(decode(&parse("VALUE.GET k"), Value::Array(vec![bulk("v")])), Err(Error::Protocol { .. })));
    }

    #[test]
    fn server_errors_keep_their_code() {
        let e = redis::make_extension_error("STALE".into(), Some("fence 3".into()));
        let got = redis_error("IDEM.ABORT", e);
        assert!(matches!(&got, Error::Stale(m) if m == "fence 3"), "{got}");
        let e = redis::make_extension_error("WHAT".into(), None);
        assert!(matches!(redis_error("IDEM.ABORT", e), Error::Protocol { .. }));
    }
}
