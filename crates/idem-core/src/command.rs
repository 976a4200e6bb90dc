//! The commands of docs/commands.md as typed values, and their parser from a list
//! of binary arguments (a RESP array, an HTTP JSON array, a test).
//!
//! Parsing is total: every input yields a `Command` or a `CmdError`, never a
//! panic, and a refused request changes nothing because nothing has run yet.

use bytes::Bytes;

use crate::error::CmdError;
use crate::limits::Limits;

/// Default lease of IDEM.BEGIN, in milliseconds.
pub const IDEM_LEASE_MS_DEFAULT: u64 = 30_000;
/// Default retention of a done idempotency record (and of a counter op id), in milliseconds.
pub const KEEP_MS_DEFAULT: u64 = 86_400_000;
/// Default SIZE of a slot resource created without one.
pub const SLOTS_SIZE_DEFAULT: u32 = 48;
/// The FSM state word that stands for an absent key.
pub const FSM_NONE: &[u8] = b"none";

/// One primitive command. Field names carry their units.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Command {
    IdemBegin {
        key: Bytes,
        fingerprint: Option<Bytes>,
        lease_ms: u64,
        wait_ms: u64,
    },
    IdemCommit {
        key: Bytes,
        fence: u64,
        result: Bytes,
        keep_ms: u64,
    },
    IdemAbort {
        key: Bytes,
        fence: u64,
    },
    IdemRenew {
        key: Bytes,
        fence: u64,
        lease_ms: u64,
    },
    IdemGet {
        key: Bytes,
    },
    IdemDel {
        key: Bytes,
    },

    Claim {
        key: Bytes,
        owner: Bytes,
        ttl_ms: Option<u64>,
    },
    ClaimAll {
        owner: Bytes,
        keys: Vec<Bytes>,
    },
    Release {
        key: Bytes,
        owner: Bytes,
    },
    Owner {
        key: Bytes,
    },

    Lock {
        name: Bytes,
        owner: Bytes,
        lease_ms: u64,
        wait_ms: u64,
    },
    Renew {
        name: Bytes,
        owner: Bytes,
        lease_ms: u64,
    },
    Unlock {
        name: Bytes,
        owner: Bytes,
    },
    LockInfo {
        name: Bytes,
    },

    TokenNew {
        scope: Bytes,
        ttl_ms: u64,
    },
    TokenUse {
        scope: Bytes,
        token: Bytes,
    },

    CounterAdd {
        key: Bytes,
        delta: i64,
        min: Option<i64>,
        max: Option<i64>,
        op: Option<Bytes>,
        keep_ms: u64,
    },
    CounterGet {
        key: Bytes,
    },

    ValueGet {
        key: Bytes,
    },
    ValueSet {
        key: Bytes,
        value: Bytes,
        if_version: Option<u64>,
    },

    /// `from` holds the allowed start states; `FSM_NONE` stands for an absent key.
    FsmMove {
        key: Bytes,
        to: Bytes,
        from: Vec<Bytes>,
    },
    FsmGet {
        key: Bytes,
    },

    /// `size` is None when the request gave no SIZE.
    SlotsReserve {
        resource: Bytes,
        first: u32,
        last: u32,
        holder: Bytes,
        size: Option<u32>,
    },
    SlotsRelease {
        resource: Bytes,
        first: u32,
        last: u32,
        holder: Bytes,
    },
    SlotsGet {
        resource: Bytes,
    },
}

/// Every command name this module parses, upper case, with its arity as Redis
/// reports it in `COMMAND` (negative: at least that many), and whether it writes.
pub const COMMAND_TABLE: &[(&str, i64, bool)] = &[
    ("IDEM.BEGIN", -2, true),
    ("IDEM.COMMIT", -4, true),
    ("IDEM.ABORT", 3, true),
    ("IDEM.RENEW", 5, true),
    ("IDEM.GET", 2, false),
    ("IDEM.DEL", 2, true),
    ("CLAIM", -3, true),
    ("CLAIM.ALL", -3, true),
    ("RELEASE", 3, true),
    ("OWNER", 2, false),
    ("LOCK", -5, true),
    ("RENEW", 5, true),
    ("UNLOCK", 3, true),
    ("LOCK.INFO", 2, false),
    ("TOKEN.NEW", 4, true),
    ("TOKEN.USE", 3, true),
    ("COUNTER.ADD", -3, true),
    ("COUNTER.GET", 2, false),
    ("VALUE.GET", 2, false),
    ("VALUE.SET", -3, true),
    ("FSM.MOVE", -5, true),
    ("FSM.GET", 2, false),
    ("SLOTS.RESERVE", -5, true),
    ("SLOTS.RELEASE", 5, true),
    ("SLOTS.GET", 2, false),
];

impl Command {
    /// Parses `args` (the command name first). Keywords are case-insensitive;
    /// keys and values are binary-safe. Unknown names give `ERR unknown command`.
    pub fn parse(args: &[Bytes], limits: &Limits) -> Result<Command, CmdError> {
        let Some(name) = args.first() else {
            return Err(CmdError::syntax("empty command"));
        };
        let mut upper = [0u8; 16];
        if name.len() > upper.len() {
            return Err(unknown(name));
        }
        for (d, s) in upper.iter_mut().zip(name.iter()) {
            *d = s.to_ascii_uppercase();
        }
        let upper = &upper[..name.len()];
        // Only the names below match, all ASCII; anything else, UTF-8 or
        // not, is an unknown command, so the name is not checked for UTF-8.
        let mut p = Args { args: &args[1..], pos: 0, limits, cmd: CmdName(upper) };
        let cmd = match upper {
            b"IDEM.BEGIN" => {
                let key = p.key("key")?;
                let (mut fingerprint, mut lease_ms, mut wait_ms) = (None, None, None);
                while let Some(opt) = p.option()? {
                    match opt.as_slice() {
                        b"FP" => set_once(&mut fingerprint, p.key("fingerprint")?, "FP")?,
                        b"LEASE" => set_once(&mut lease_ms, p.duration("LEASE")?, "LEASE")?,
                        b"WAIT" => set_once(&mut wait_ms, p.wait()?, "WAIT")?,
                        _ => return Err(p.bad_option(&opt)),
                    }
                }
                Command::IdemBegin {
                    key,
                    fingerprint,
                    lease_ms: lease_ms.unwrap_or(IDEM_LEASE_MS_DEFAULT),
                    wait_ms: wait_ms.unwrap_or(0),
                }
            }
            b"IDEM.COMMIT" => {
                let key = p.key("key")?;
                let fence = p.u64("fence")?;
                let result = p.value("result")?;
                let mut keep_ms = None;
                while let Some(opt) = p.option()? {
                    match opt.as_slice() {
                        b"KEEP" => set_once(&mut keep_ms, p.duration("KEEP")?, "KEEP")?,
                        _ => return Err(p.bad_option(&opt)),
                    }
                }
                Command::IdemCommit { key, fence, result, keep_ms: keep_ms.unwrap_or(KEEP_MS_DEFAULT) }
            }
            b"IDEM.ABORT" => Command::IdemAbort { key: p.key("key")?, fence: p.u64("fence")? },
            b"IDEM.RENEW" => {
                let key = p.key("key")?;
                let fence = p.u64("fence")?;
                p.keyword("LEASE")?;
                Command::IdemRenew { key, fence, lease_ms: p.duration("LEASE")? }
            }
            b"IDEM.GET" => Command::IdemGet { key: p.key("key")? },
            b"IDEM.DEL" => Command::IdemDel { key: p.key("key")? },
            b"CLAIM" => {
                let key = p.key("key")?;
                let owner = p.key("owner")?;
                let mut ttl_ms = None;
                while let Some(opt) = p.option()? {
                    match opt.as_slice() {
                        b"TTL" => set_once(&mut ttl_ms, p.duration("TTL")?, "TTL")?,
                        _ => return Err(p.bad_option(&opt)),
                    }
                }
                Command::Claim { key, owner, ttl_ms }
            }
            b"CLAIM.ALL" => {
                let owner = p.key("owner")?;
                let mut keys = Vec::with_capacity(p.remaining().min(limits.claim_all_keys_max));
                if p.remaining() == 0 {
                    return Err(p.arity());
                }
                if p.remaining() > limits.claim_all_keys_max {
                    return Err(CmdError::limit(format!(
                        "CLAIM.ALL takes at most {} keys, got {}",
                        limits.claim_all_keys_max,
                        p.remaining()
                    )));
                }
                while p.remaining() > 0 {
                    keys.push(p.key("key")?);
                }
                Command::ClaimAll { owner, keys }
            }
            b"RELEASE" => Command::Release { key: p.key("key")?, owner: p.key("owner")? },
            b"OWNER" => Command::Owner { key: p.key("key")? },
            b"LOCK" => {
                let name = p.key("name")?;
                let owner = p.key("owner")?;
                p.keyword("LEASE")?;
                let lease_ms = p.duration("LEASE")?;
                let mut wait_ms = None;
                while let Some(opt) = p.option()? {
                    match opt.as_slice() {
                        b"WAIT" => set_once(&mut wait_ms, p.wait()?, "WAIT")?,
                        _ => return Err(p.bad_option(&opt)),
                    }
                }
                Command::Lock { name, owner, lease_ms, wait_ms: wait_ms.unwrap_or(0) }
            }
            b"RENEW" => {
                let name = p.key("name")?;
                let owner = p.key("owner")?;
                p.keyword("LEASE")?;
                Command::Renew { name, owner, lease_ms: p.duration("LEASE")? }
            }
            b"UNLOCK" => Command::Unlock { name: p.key("name")?, owner: p.key("owner")? },
            b"LOCK.INFO" => Command::LockInfo { name: p.key("name")? },
            b"TOKEN.NEW" => {
                let scope = p.key("scope")?;
                p.keyword("TTL")?;
                Command::TokenNew { scope, ttl_ms: p.duration("TTL")? }
            }
            b"TOKEN.USE" => Command::TokenUse { scope: p.key("scope")?, token: p.key("token")? },
            b"COUNTER.ADD" => {
                let key = p.key("key")?;
                let delta = p.i64("delta")?;
                let (mut min, mut max, mut op, mut keep_ms) = (None, None, None, None);
                while let Some(opt) = p.option()? {
                    match opt.as_slice() {
                        b"MIN" => set_once(&mut min, p.i64("MIN")?, "MIN")?,
                        b"MAX" => set_once(&mut max, p.i64("MAX")?, "MAX")?,
                        b"OP" => set_once(&mut op, p.key("op id")?, "OP")?,
                        b"KEEP" => set_once(&mut keep_ms, p.duration("KEEP")?, "KEEP")?,
                        _ => return Err(p.bad_option(&opt)),
                    }
                }
                if keep_ms.is_some() && op.is_none() {
                    return Err(CmdError::syntax("COUNTER.ADD: KEEP needs OP"));
                }
                if let (Some(lo), Some(hi)) = (min, max) {
                    if lo > hi {
                        return Err(CmdError::syntax(format!("COUNTER.ADD: MIN {lo} is above MAX {hi}")));
                    }
                }
                Command::CounterAdd { key, delta, min, max, op, keep_ms: keep_ms.unwrap_or(KEEP_MS_DEFAULT) }
            }
            b"COUNTER.GET" => Command::CounterGet { key: p.key("key")? },
            b"VALUE.GET" => Command::ValueGet { key: p.key("key")? },
            b"VALUE.SET" => {
                let key = p.key("key")?;
                let value = p.value("value")?;
                let mut if_version = None;
                while let Some(opt) = p.option()? {
                    match opt.as_slice() {
                        b"IFVERSION" => set_once(&mut if_version, p.u64("IFVERSION")?, "IFVERSION")?,
                        _ => return Err(p.bad_option(&opt)),
                    }
                }
                Command::ValueSet { key, value, if_version }
            }
            b"FSM.MOVE" => {
                let key = p.key("key")?;
                let to = p.key("state")?;
                if to.eq_ignore_ascii_case(FSM_NONE) {
                    return Err(CmdError::syntax("FSM.MOVE: 'none' stands for an absent key and cannot be a target"));
                }
                p.keyword("FROM")?;
                if p.remaining() == 0 {
                    return Err(p.arity());
                }
                if p.remaining() > limits.fsm_from_max {
                    return Err(CmdError::limit(format!(
                        "FSM.MOVE takes at most {} FROM states, got {}",
                        limits.fsm_from_max,
                        p.remaining()
                    )));
                }
                let mut from = Vec::with_capacity(p.remaining());
                while p.remaining() > 0 {
                    let s = p.key("state")?;
                    from.push(if s.eq_ignore_ascii_case(FSM_NONE) { Bytes::from_static(FSM_NONE) } else { s });
                }
                Command::FsmMove { key, to, from }
            }
            b"FSM.GET" => Command::FsmGet { key: p.key("key")? },
            b"SLOTS.RESERVE" => {
                let resource = p.key("resource")?;
                let (first, last) = p.slot_range()?;
                let holder = p.key("holder")?;
                let mut size = None;
                while let Some(opt) = p.option()? {
                    match opt.as_slice() {
                        b"SIZE" => set_once(&mut size, p.slot_size()?, "SIZE")?,
                        _ => return Err(p.bad_option(&opt)),
                    }
                }
                if last >= size.unwrap_or(limits.slots_size_max) {
                    return Err(CmdError::syntax(format!(
                        "SLOTS.RESERVE: slot {last} is outside SIZE {}",
                        size.unwrap_or(limits.slots_size_max)
                    )));
                }
                Command::SlotsReserve { resource, first, last, holder, size }
            }
            b"SLOTS.RELEASE" => {
                let resource = p.key("resource")?;
                let (first, last) = p.slot_range()?;
                Command::SlotsRelease { resource, first, last, holder: p.key("holder")? }
            }
            b"SLOTS.GET" => Command::SlotsGet { resource: p.key("resource")? },
            _ => return Err(unknown(name)),
        };
        p.finish()?;
        Ok(cmd)
    }

    /// The upper-case command name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::IdemBegin { .. } => "IDEM.BEGIN",
            Command::IdemCommit { .. } => "IDEM.COMMIT",
            Command::IdemAbort { .. } => "IDEM.ABORT",
            Command::IdemRenew { .. } => "IDEM.RENEW",
            Command::IdemGet { .. } => "IDEM.GET",
            Command::IdemDel { .. } => "IDEM.DEL",
            Command::Claim { .. } => "CLAIM",
            Command::ClaimAll { .. } => "CLAIM.ALL",
            Command::Release { .. } => "RELEASE",
            Command::Owner { .. } => "OWNER",
            Command::Lock { .. } => "LOCK",
            Command::Renew { .. } => "RENEW",
            Command::Unlock { .. } => "UNLOCK",
            Command::LockInfo { .. } => "LOCK.INFO",
            Command::TokenNew { .. } => "TOKEN.NEW",
            Command::TokenUse { .. } => "TOKEN.USE",
            Command::CounterAdd { .. } => "COUNTER.ADD",
            Command::CounterGet { .. } => "COUNTER.GET",
            Command::ValueGet { .. } => "VALUE.GET",
            Command::ValueSet { .. } => "VALUE.SET",
            Command::FsmMove { .. } => "FSM.MOVE",
            Command::FsmGet { .. } => "FSM.GET",
            Command::SlotsReserve { .. } => "SLOTS.RESERVE",
            Command::SlotsRelease { .. } => "SLOTS.RELEASE",
            Command::SlotsGet { .. } => "SLOTS.GET",
        }
    }

    /// Whether the command may change state (and so is refused with `READONLY`
    /// when storage cannot accept writes).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Command::IdemGet { .. }
                | Command::Owner { .. }
                | Command::LockInfo { .. }
                | Command::CounterGet { .. }
                | Command::ValueGet { .. }
                | Command::FsmGet { .. }
                | Command::SlotsGet { .. }
        )
    }

    /// The key that decides which shard owns the command; `None` for CLAIM.ALL,
    /// whose keys may live on several shards (see [`Command::keys`]).
    pub fn route_key(&self) -> Option<&Bytes> {
        Some(match self {
            Command::IdemBegin { key, .. }
            | Command::IdemCommit { key, .. }
            | Command::IdemAbort { key, .. }
            | Command::IdemRenew { key, .. }
            | Command::IdemGet { key }
            | Command::IdemDel { key }
            | Command::Claim { key, .. }
            | Command::Release { key, .. }
            | Command::Owner { key }
            | Command::CounterAdd { key, .. }
            | Command::CounterGet { key }
            | Command::ValueGet { key }
            | Command::ValueSet { key, .. }
            | Command::FsmMove { key, .. }
            | Command::FsmGet { key } => key,
            Command::Lock { name, .. }
            | Command::Renew { name, .. }
            | Command::Unlock { name, .. }
            | Command::LockInfo { name } => name,
            Command::TokenNew { scope, .. } | Command::TokenUse { scope, .. } => scope,
            Command::SlotsReserve { resource, .. }
            | Command::SlotsRelease { resource, .. }
            | Command::SlotsGet { resource } => resource,
            Command::ClaimAll { .. } => return None,
        })
    }

    /// Every key the command touches (one, except for CLAIM.ALL).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Command::ClaimAll { keys, .. } => keys.iter().collect(),
            other => other.route_key().into_iter().collect(),
        }
    }

    /// The WAIT of IDEM.BEGIN and LOCK in milliseconds, 0 for every other command.
    pub fn wait_ms(&self) -> u64 {
        match self {
            Command::IdemBegin { wait_ms, .. } | Command::Lock { wait_ms, .. } => *wait_ms,
            _ => 0,
        }
    }
}

fn unknown(name: &[u8]) -> CmdError {
    let shown: String = String::from_utf8_lossy(&name[..name.len().min(64)]).into();
    CmdError::syntax(format!("unknown command '{shown}'"))
}

fn set_once<T>(slot: &mut Option<T>, v: T, opt: &str) -> Result<(), CmdError> {
    if slot.is_some() {
        return Err(CmdError::syntax(format!("option {opt} given twice")));
    }
    *slot = Some(v);
    Ok(())
}

/// Longest option keyword (`IFVERSION`), with room to spare.
const OPTION_BYTES_MAX: usize = 16;

/// An option word as given (`raw`, for error messages) and upper-cased
/// (`as_slice`, for matching).
struct Opt<'a> {
    upper: [u8; OPTION_BYTES_MAX],
    len: usize,
    raw: &'a [u8],
}

impl Opt<'_> {
    fn as_slice(&self) -> &[u8] {
        &self.upper[..self.len]
    }
}

impl std::ops::Deref for Opt<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.raw
    }
}

/// A cursor over a command's arguments; `finish` rejects leftovers.
struct Args<'a> {
    args: &'a [Bytes],
    pos: usize,
    limits: &'a Limits,
    cmd: CmdName<'a>,
}

/// The upper-cased name of the command being parsed, for error messages.
/// Every name that reaches an error is one of the commands `Command::parse`
/// matched, so it is ASCII; other bytes would show as U+FFFD.
#[derive(Clone, Copy)]
struct CmdName<'a>(&'a [u8]);

impl std::fmt::Display for CmdName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

impl<'a> Args<'a> {
    fn remaining(&self) -> usize {
        self.args.len() - self.pos
    }

    fn arity(&self) -> CmdError {
        CmdError::syntax(format!("wrong number of arguments for '{}'", self.cmd))
    }

    fn next(&mut self) -> Result<&Bytes, CmdError> {
        let a = self.args.get(self.pos).ok_or_else(|| self.arity())?;
        self.pos += 1;
        Ok(a)
    }

    /// A key-like argument: 1..=key_bytes_max bytes, binary-safe.
    fn key(&mut self, what: &str) -> Result<Bytes, CmdError> {
        let (max, cmd) = (self.limits.key_bytes_max, self.cmd);
        let a = self.next()?;
        if a.is_empty() {
            return Err(CmdError::syntax(format!("{cmd}: {what} must not be empty")));
        }
        if a.len() > max {
            return Err(CmdError::limit(format!("{cmd}: {what} is {} bytes, the limit is {max}", a.len())));
        }
        Ok(a.clone())
    }

    /// A result or value: 0..=value_bytes_max bytes.
    fn value(&mut self, what: &str) -> Result<Bytes, CmdError> {
        let (max, cmd) = (self.limits.value_bytes_max, self.cmd);
        let a = self.next()?;
        if a.len() > max {
            return Err(CmdError::limit(format!("{cmd}: {what} is {} bytes, the limit is {max}", a.len())));
        }
        Ok(a.clone())
    }

    fn text(&mut self, what: &str) -> Result<&str, CmdError> {
        let cmd = self.cmd;
        let a = self.next()?;
        std::str::from_utf8(a).map_err(|_| CmdError::syntax(format!("{cmd}: {what} must be ASCII text")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, CmdError> {
        let cmd = self.cmd;
        // Read straight from the bytes: a LEASE or a fence comes with nearly
        // every command, and a UTF-8 check plus `str::parse` cost several
        // times the digits. Only a refused argument is checked for UTF-8,
        // to say which rule it broke.
        let a = self.next()?;
        if a.is_empty() || !a.iter().all(u8::is_ascii_digit) {
            let rule =
                if std::str::from_utf8(a).is_ok() { "must be a non-negative integer" } else { "must be ASCII text" };
            return Err(CmdError::syntax(format!("{cmd}: {what} {rule}")));
        }
        let v = a.iter().try_fold(0u64, |v, &d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')));
        v.ok_or_else(|| CmdError::syntax(format!("{cmd}: {what} is out of range")))
    }

    fn i64(&mut self, what: &str) -> Result<i64, CmdError> {
        let cmd = self.cmd;
        let s = self.text(what)?;
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CmdError::syntax(format!("{cmd}: {what} must be an integer")));
        }
        s.parse::<i64>().map_err(|_| CmdError::syntax(format!("{cmd}: {what} is out of the 64-bit range")))
    }

    /// A LEASE, TTL or KEEP: 1..=duration_ms_max milliseconds.
    fn duration(&mut self, what: &str) -> Result<u64, CmdError> {
        let (max, cmd) = (self.limits.duration_ms_max, self.cmd);
        let v = self.u64(what)?;
        if v == 0 {
            return Err(CmdError::syntax(format!("{cmd}: {what} must be at least 1 ms")));
        }
        if v > max {
            return Err(CmdError::limit(format!("{cmd}: {what} {v} ms is over the limit of {max} ms")));
        }
        Ok(v)
    }

    /// A WAIT: 0..=wait_ms_max milliseconds.
    fn wait(&mut self) -> Result<u64, CmdError> {
        let (max, cmd) = (self.limits.wait_ms_max, self.cmd);
        let v = self.u64("WAIT")?;
        if v > max {
            return Err(CmdError::limit(format!("{cmd}: WAIT {v} ms is over the limit of {max} ms")));
        }
        Ok(v)
    }

    fn slot_range(&mut self) -> Result<(u32, u32), CmdError> {
        let cmd = self.cmd;
        let max = self.limits.slots_size_max;
        let first = self.u64("first")?;
        let last = self.u64("last")?;
        if first > last {
            return Err(CmdError::syntax(format!("{cmd}: first slot {first} is after last slot {last}")));
        }
        if last >= u64::from(max) {
            return Err(CmdError::limit(format!("{cmd}: slot {last} is over the limit of {} slots", max)));
        }
        Ok((first as u32, last as u32))
    }

    fn slot_size(&mut self) -> Result<u32, CmdError> {
        let cmd = self.cmd;
        let max = self.limits.slots_size_max;
        let v = self.u64("SIZE")?;
        if v == 0 {
            return Err(CmdError::syntax(format!("{cmd}: SIZE must be at least 1")));
        }
        if v > u64::from(max) {
            return Err(CmdError::limit(format!("{cmd}: SIZE {v} is over the limit of {max}")));
        }
        Ok(v as u32)
    }

    /// The next option keyword, or None at the end. Upper-cased on the stack:
    /// every request with an option would otherwise allocate for it.
    fn option(&mut self) -> Result<Option<Opt<'a>>, CmdError> {
        let args = self.args;
        let Some(raw) = args.get(self.pos) else { return Ok(None) };
        self.pos += 1;
        let mut upper = [0u8; OPTION_BYTES_MAX];
        // A word longer than every keyword matches none: it keeps length 0.
        let len = if raw.len() <= OPTION_BYTES_MAX {
            for (d, s) in upper.iter_mut().zip(raw.iter()) {
                *d = s.to_ascii_uppercase();
            }
            raw.len()
        } else {
            0
        };
        Ok(Some(Opt { upper, len, raw }))
    }

    fn keyword(&mut self, kw: &str) -> Result<(), CmdError> {
        let cmd = self.cmd;
        let a = self.next()?;
        if a.eq_ignore_ascii_case(kw.as_bytes()) {
            Ok(())
        } else {
            Err(CmdError::syntax(format!(
                "{cmd}: expected {kw}, got '{}'",
                String::from_utf8_lossy(&a[..a.len().min(64)])
            )))
        }
    }

    fn bad_option(&self, opt: &[u8]) -> CmdError {
        CmdError::syntax(format!(
            "{}: unknown option '{}'",
            self.cmd,
            String::from_utf8_lossy(&opt[..opt.len().min(64)])
        ))
    }

    fn finish(&self) -> Result<(), CmdError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.arity())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn parse(line: &str) -> Result<Command, CmdError> {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        Command::parse(&args, &Limits::default())
    }

    #[test]
    fn option_keywords_are_case_insensitive() {
        let cmd = parse("idem.begin k lease 500 Wait 20 fp abc").unwrap();
        assert_eq!(
            cmd,
            Command::IdemBegin {
                key: Bytes::from_static(b"k"),
                fingerprint: Some(Bytes::from_static(b"abc")),
                lease_ms: 500,
                wait_ms: 20
            }
        );
        assert!(matches!(parse("VALUE.SET k v ifversion 0").unwrap(), Command::ValueSet { if_version: Some(0), .. }));
    }

    /// The digits-only fast path of `Args::u64` reads what `str::parse`
    /// read before it, and leaves every other input to the full checks.
    #[test]
    fn unsigned_numbers_are_read_whole_and_bounded() {
        let fence = |line: &str| match parse(line) {
            Ok(Command::IdemAbort { fence, .. }) => Ok(fence),
            Ok(other) => panic!("{line}: {other:?}"),
            Err(e) => Err(e.message),
        };
        assert_eq!(fence("IDEM.ABORT k 0"), Ok(0));
        assert_eq!(fence("IDEM.ABORT k 007"), Ok(7));
        assert_eq!(fence("IDEM.ABORT k 18446744073709551615"), Ok(u64::MAX));
        let over = fence("IDEM.ABORT k 18446744073709551616").unwrap_err();
        assert!(over.contains("fence is out of range"), "{over}");
        for bad in ["+5", "-1", "5x", "1e3", " 5"] {
            let e = fence(&format!("IDEM.ABORT k {bad}")).unwrap_err();
            assert!(e.contains("must be a non-negative integer"), "{bad}: {e}");
        }
        let args = [Bytes::from_static(b"IDEM.ABORT"), Bytes::from_static(b"k"), Bytes::from_static(b"\xff5")];
        let e = Command::parse(&args, &Limits::default()).unwrap_err();
        assert!(e.message.contains("must be ASCII text"), "{}", e.message);
    }

    #[test]
    fn unknown_duplicate_and_overlong_options_are_refused() {
        let e = parse("IDEM.BEGIN k Leese 5").unwrap_err();
        assert_eq!(e.code, ErrorCode::Err);
        assert!(e.message.contains("'Leese'"), "the word as given: {}", e.message);
        let e = parse("IDEM.BEGIN k LEASE 5 LEASE 6").unwrap_err();
        assert!(e.message.contains("given twice"), "{}", e.message);
        let long = "LEASEEEEEEEEEEEEEEEEEEEE";
        let e = parse(&format!("IDEM.BEGIN k {long} 5")).unwrap_err();
        assert!(e.message.contains(long), "{}", e.message);
        assert!(parse("CLAIM k o TTL").is_err(), "an option without its value");
    }

    #[test]
    fn idem_renew_takes_a_fence_and_a_bounded_lease() {
        let cmd = parse("idem.renew k 7 lease 500").unwrap();
        assert_eq!(cmd, Command::IdemRenew { key: Bytes::from_static(b"k"), fence: 7, lease_ms: 500 });
        for (line, code) in [
            ("IDEM.RENEW k 7 LEASE 0", ErrorCode::Err),
            ("IDEM.RENEW k 7 LEASE 2592000001", ErrorCode::Limit),
            ("IDEM.RENEW k -1 LEASE 5", ErrorCode::Err),
            ("IDEM.RENEW k x LEASE 5", ErrorCode::Err),
            ("IDEM.RENEW k 7 TTL 5", ErrorCode::Err),
            ("IDEM.RENEW k 7 LEASE", ErrorCode::Err),
            ("IDEM.RENEW k 7 LEASE 5 WAIT 1", ErrorCode::Err),
            ("IDEM.RENEW  7 LEASE 5", ErrorCode::Err),
        ] {
            assert_eq!(parse(line).unwrap_err().code, code, "{line}");
        }
    }
}
