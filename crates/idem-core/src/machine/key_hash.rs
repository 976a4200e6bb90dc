//! The hash of client-chosen keys in the machine's tables.
//!
//! Clients choose the keys, so the hash must be keyed with a secret: a
//! fixed or guessable hash lets a client send keys that all collide and
//! turn every probe into a walk of the whole table (HashDoS). The tables
//! use foldhash (the `fast` variant, hashbrown's default) under seeds drawn
//! from the operating system's random source through `std`'s `RandomState`:
//! one shared by the process, one more per table. foldhash itself seeds
//! from address-space layout, which this does not rely on.
//!
//! foldhash is a fraction of SipHash's cost on short keys. What it gives
//! up: SipHash is a keyed pseudo-random function, foldhash only resists
//! attackers who cannot observe its outputs, and its authors do not claim
//! resistance to one who recovers the seed from timing. docs/benchmarks.md
//! (#25) has the instructions this saves per request.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;

/// The seed every table of the process shares.
static SHARED_SEED: OnceLock<SharedSeed> = OnceLock::new();

/// 64 random bits: `std`'s `RandomState` draws its keys from the operating
/// system (once per thread, then a distinct key per instance), so the hash
/// of a constant under a new one is unpredictable.
fn random_u64() -> u64 {
    RandomState::new().hash_one(0x6964_656d_u64)
}

/// A table's keyed hash of keys; see the module docs.
#[derive(Clone, Debug)]
pub(super) struct KeyHash(SeedableRandomState);

impl Default for KeyHash {
    fn default() -> Self {
        let shared = SHARED_SEED.get_or_init(|| SharedSeed::from_u64(random_u64()));
        KeyHash(SeedableRandomState::with_seed(random_u64(), shared))
    }
}

impl KeyHash {
    /// The hash of `key` under this table's seeds.
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
        assert_ne!(random_u64(), random_u64());
    }
}
