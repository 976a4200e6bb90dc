//! How much memory a shard's records take, by the estimate `maxmemory`
//! bounds, and which commands would create a record (the ones refused with
//! `OOM` over that bound).
//!
//! The estimate of one record is its key's bytes, its payload's bytes
//! (owner, fingerprint, result, value, state, holders, slot table) and
//! [`RECORD_OVERHEAD_BYTES`] for the table slot, the record's header and
//! its expiry entry. docs/server.md documents the same rule.

use super::{pair_key, Machine};
use crate::command::Command;

/// The fixed part of the estimate of one record: a hash-table slot, the
/// record's header (lengths, deadlines, fence) and an expiry entry.
pub const RECORD_OVERHEAD_BYTES: u64 = 64;

/// Bytes of one slot of a slot resource (`u32` holder index).
const SLOT_BYTES: u64 = 4;

/// The estimated bytes of the token record a TOKEN.NEW on `scope` adds (its
/// stored key is the scope and the 32 hex digits of the token).
pub fn token_record_bytes(scope: &[u8]) -> u64 {
    RECORD_OVERHEAD_BYTES + pair_key(scope, &[0u8; TOKEN_HEX_BYTES]).len() as u64
}

/// Length of a token as handed out: 16 random bytes in hex.
const TOKEN_HEX_BYTES: usize = 32;

impl Machine {
    /// The estimated bytes of every record held (expired records count
    /// until `tick` reclaims them). Walks every record: the store calls it
    /// at a bounded rate, not per command.
    pub fn memory_bytes(&self) -> u64 {
        let o = RECORD_OVERHEAD_BYTES;
        let len = |b: &[u8]| b.len() as u64;
        let mut total = 0u64;
        for r in self.idem.iter() {
            total += o + len(r.key()) + r.fp().map_or(0, len) + len(r.result());
        }
        for (k, e) in self.claims.iter() {
            total += o + len(k) + e.payload_bytes();
        }
        for (k, e) in self.locks.iter() {
            total += o + len(k) + e.payload_bytes();
        }
        for (k, _) in self.tokens.iter() {
            total += o + len(k);
        }
        for (k, _) in self.counters.iter() {
            total += o + len(k);
        }
        for (k, _) in self.counter_ops.iter() {
            total += o + len(k);
        }
        for (k, e) in self.values.iter() {
            total += o + len(k) + e.payload_bytes();
        }
        for (k, s) in self.fsm.iter() {
            total += o + len(k) + len(s);
        }
        for (k, r) in self.slots.iter() {
            total += o + len(k) + r.payload_bytes(SLOT_BYTES);
        }
        total
    }

    /// The estimated bytes of the records `cmd` addresses (by its key, in
    /// its primitive), as [`Machine::memory_bytes`] counts them. Called
    /// before and after a command, it gives the command's own change of the
    /// estimate. A TOKEN.NEW addresses no record yet: 0 before and after
    /// (see [`token_record_bytes`]).
    pub fn command_bytes(&self, cmd: &Command) -> u64 {
        let o = RECORD_OVERHEAD_BYTES;
        let len = |b: &[u8]| b.len() as u64;
        match cmd {
            Command::IdemBegin { key, .. }
            | Command::IdemCommit { key, .. }
            | Command::IdemAbort { key, .. }
            | Command::IdemRenew { key, .. }
            | Command::IdemDel { key }
            | Command::IdemGet { key } => {
                self.idem.get(key).map_or(0, |r| o + len(r.key()) + r.fp().map_or(0, len) + len(r.result()))
            }
            Command::Claim { key, .. } | Command::Release { key, .. } | Command::Owner { key } => {
                self.claims.get(key).map_or(0, |e| o + len(key) + e.payload_bytes())
            }
            Command::ClaimAll { keys, .. } => {
                keys.iter().filter_map(|k| self.claims.get(k).map(|e| o + len(k) + e.payload_bytes())).sum()
            }
            Command::Lock { name, .. }
            | Command::Renew { name, .. }
            | Command::Unlock { name, .. }
            | Command::LockInfo { name } => self.locks.get(name).map_or(0, |e| o + len(name) + e.payload_bytes()),
            Command::TokenNew { .. } => 0,
            Command::TokenUse { scope, token } => {
                let k = pair_key(scope, token);
                self.tokens.get(&k).map_or(0, |_| o + len(&k))
            }
            Command::CounterAdd { key, op, .. } => {
                let counter = self.counters.get(key).map_or(0, |_| o + len(key));
                let op = op.as_ref().map_or(0, |op| {
                    let k = pair_key(key, op);
                    self.counter_ops.get(&k).map_or(0, |_| o + len(&k))
                });
                counter + op
            }
            Command::CounterGet { key } => self.counters.get(key).map_or(0, |_| o + len(key)),
            Command::ValueSet { key, .. } | Command::ValueGet { key } => {
                self.values.get(key).map_or(0, |e| o + len(key) + e.payload_bytes())
            }
            Command::FsmMove { key, .. } | Command::FsmGet { key } => {
                self.fsm.get(key).map_or(0, |s| o + len(key) + len(s))
            }
            Command::SlotsReserve { resource, .. }
            | Command::SlotsRelease { resource, .. }
            | Command::SlotsGet { resource } => {
                self.slots.get(resource).map_or(0, |r| o + len(resource) + r.payload_bytes(SLOT_BYTES))
            }
        }
    }

    /// Whether applying `cmd` could add a record this shard does not hold
    /// (a new key, an op id a counter does not remember yet, a new token).
    /// A command on a record that is present (also one expired but not
    /// reclaimed yet) creates none: reads, COMMIT, ABORT, RENEW, RELEASE,
    /// UNLOCK, deletes, and updates of present keys. For CLAIM.ALL across
    /// shards, the caller asks each key's shard with a one-key claim.
    pub fn creates_record(&self, cmd: &Command) -> bool {
        match cmd {
            Command::IdemBegin { key, .. } => self.idem.get(key).is_none(),
            Command::Claim { key, .. } => self.claims.get(key).is_none(),
            Command::ClaimAll { keys, .. } => keys.iter().any(|k| self.claims.get(k).is_none()),
            Command::Lock { name, .. } => self.locks.get(name).is_none(),
            Command::TokenNew { .. } => true,
            Command::CounterAdd { key, op, .. } => {
                self.counters.get(key).is_none()
                    || op.as_ref().is_some_and(|op| self.counter_ops.get(&pair_key(key, op)).is_none())
            }
            Command::ValueSet { key, .. } => self.values.get(key).is_none(),
            Command::FsmMove { key, .. } => self.fsm.get(key).is_none(),
            Command::SlotsReserve { resource, .. } => !self.slots.contains_key(resource),
            Command::IdemCommit { .. }
            | Command::IdemAbort { .. }
            | Command::IdemRenew { .. }
            | Command::IdemGet { .. }
            | Command::IdemDel { .. }
            | Command::Release { .. }
            | Command::Owner { .. }
            | Command::Renew { .. }
            | Command::Unlock { .. }
            | Command::LockInfo { .. }
            | Command::TokenUse { .. }
            | Command::CounterGet { .. }
            | Command::ValueGet { .. }
            | Command::FsmGet { .. }
            | Command::SlotsRelease { .. }
            | Command::SlotsGet { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::limits::Limits;
    use crate::machine::{Effects, SeqEnv};

    fn parse(words: &[&str]) -> Command {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        Command::parse(&args, &Limits::default()).expect("valid command")
    }

    #[test]
    fn records_add_their_bytes_and_only_new_keys_create_records() {
        let mut m = Machine::new(Limits::default());
        let (mut env, mut fx) = (SeqEnv::default(), Effects::default());
        assert_eq!(m.memory_bytes(), 0);
        let begin = parse(&["IDEM.BEGIN", "key1", "LEASE", "1000"]);
        assert!(m.creates_record(&begin));
        m.apply(0, &begin, None, &mut env, &mut fx);
        assert_eq!(m.memory_bytes(), RECORD_OVERHEAD_BYTES + 4);
        assert!(!m.creates_record(&begin), "the key exists now");
        let commit = parse(&["IDEM.COMMIT", "key1", "1", "0123456789"]);
        assert!(!m.creates_record(&commit));
        m.apply(1, &commit, None, &mut env, &mut fx);
        assert_eq!(m.memory_bytes(), RECORD_OVERHEAD_BYTES + 4 + 10);
        let set = parse(&["VALUE.SET", "v", "abc"]);
        assert!(m.creates_record(&set));
        m.apply(2, &set, None, &mut env, &mut fx);
        assert!(!m.creates_record(&set));
        assert_eq!(m.memory_bytes(), 2 * RECORD_OVERHEAD_BYTES + 14 + 1 + 3);
        let add = parse(&["COUNTER.ADD", "c", "1", "OP", "op1"]);
        assert!(m.creates_record(&add));
        m.apply(3, &add, None, &mut env, &mut fx);
        assert!(!m.creates_record(&add), "the counter and the op are stored");
        assert!(m.creates_record(&parse(&["COUNTER.ADD", "c", "1", "OP", "op2"])), "a new op id is a new record");
        assert!(m.creates_record(&parse(&["TOKEN.NEW", "s", "TTL", "1000"])));
        assert!(!m.creates_record(&parse(&["IDEM.GET", "nope"])));
        let before = m.memory_bytes();
        let new = parse(&["TOKEN.NEW", "scope", "TTL", "1000"]);
        assert_eq!(m.command_bytes(&new), 0);
        m.apply(4, &new, None, &mut env, &mut fx);
        assert_eq!(m.memory_bytes() - before, token_record_bytes(b"scope"));
        let value_bytes = m.command_bytes(&set);
        assert_eq!(value_bytes, RECORD_OVERHEAD_BYTES + 1 + 3);
        m.apply(5, &parse(&["VALUE.SET", "v", "abcdef"]), None, &mut env, &mut fx);
        assert_eq!(m.command_bytes(&set), value_bytes + 3, "an update counts its new size");
    }
}
