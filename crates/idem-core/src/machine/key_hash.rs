//! The hash of client-chosen keys in the machine's tables.
//!
//! Clients choose the keys, so the hash must be keyed with a secret: a
//! fixed or guessable hash lets a client send keys that all collide and
//! turn every probe into a walk of the whole table (HashDoS). The tables
//! use SipHash-1-3 (`std`'s `RandomState`), a keyed pseudo-random function,
//! under keys drawn from the operating system's random source: one per
//! table. foldhash was measured here (217 → 15 instructions per request,
//! about 2% of them, invisible in the wall-clock runs) and dropped: its
//! authors disclaim resistance to an attacker who can observe its outputs,
//! e.g. by timing; docs/benchmarks.md (#25) has the figures.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// A table's keyed hash of keys; see the module docs.
#[derive(Clone, Debug, Default)]
pub(super) struct KeyHash(RandomState);

impl KeyHash {
    /// The hash of `key` under this table's keys.
    #[inline]
    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        self.0.hash_one(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One table hashes a key the same way every time; two tables (and so
    /// two processes) almost surely do not.
    #[test]
    fn seeds_differ_between_tables() {
        let (a, b) = (KeyHash::default(), KeyHash::default());
        assert_eq!(a.hash(b"key-1"), a.hash(b"key-1"));
        let differ = (0..64).filter(|i| a.hash(format!("key-{i}").as_bytes()) != b.hash(format!("key-{i}").as_bytes()));
        assert!(differ.count() >= 60, "two tables share their seed");
    }
}
