//! Redis key layout. Every Redis key idem writes is
//!
//! ```text
//! idem:<kind>:{<tag>}                      when the idem key has no '{' or '}' (tag = key)
//! idem:<kind>:{<tag>}#<len>:<key>          otherwise
//! ... followed by |<extra> for per-item keys (counter op ids, tokens)
//! ```
//!
//! `<tag>` is the hash tag Redis Cluster routes by, so every Redis key that
//! belongs to one idem key (a record and its fence counter, a lock and its
//! waiter queue) lands in one slot and one Lua script can touch them all:
//! - if the idem key carries a hash tag itself (`{user:1}:email`), `<tag>` is
//!   that tag's content, so keys the user tagged alike share a slot (CLAIM.ALL);
//! - else if the key holds no brace, `<tag>` is the whole key;
//! - else (braces but no valid tag, e.g. `}x`) `<tag>` is the key in hex, so
//!   the braces cannot end the tag early.
//!
//! The encoding is injective: `<tag>` never holds '}', so the first '}' ends
//! it; what follows is either nothing (the key is the tag) or `#<len>:<key>`
//! with an explicit length, then the optional `|<extra>`; `<kind>` holds no
//! ':' or '{'.

use std::borrow::Cow;

/// The content of a Redis Cluster hash tag in `key`, if it has one: the bytes
/// between the first '{' and the next '}', when there is at least one.
pub(crate) fn redis_hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// The tag `<tag>` an idem key's Redis keys are routed by.
pub(crate) fn tag_of(key: &[u8]) -> Cow<'_, [u8]> {
    // Most keys hold no brace: one pass over them decides.
    if !key.iter().any(|&b| b == b'{' || b == b'}') {
        return Cow::Borrowed(key);
    }
    if let Some(tag) = redis_hash_tag(key) {
        return Cow::Borrowed(tag);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Cow::Owned(key.iter().flat_map(|&b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]).collect())
}

/// The Redis key of `kind` for idem key `key`, with an optional per-item suffix.
pub(crate) fn rkey(kind: &str, key: &[u8], extra: Option<&[u8]>) -> Vec<u8> {
    let r = RKey::new(kind, key, extra);
    let mut out = Vec::with_capacity(r.len_bytes_max());
    r.write_to(|b| out.extend_from_slice(b));
    debug_assert!(out.len() <= r.len_bytes_max(), "len_bytes_max is an upper bound");
    out
}

/// The Redis key of `kind` for idem key `key` (see [`rkey`]), written
/// straight into a command's buffer where it is an argument, so the hot
/// commands build their key without a `Vec` of its own.
#[derive(Clone, Copy)]
pub(crate) struct RKey<'a> {
    kind: &'a str,
    key: &'a [u8],
    extra: Option<&'a [u8]>,
}

impl<'a> RKey<'a> {
    pub(crate) fn new(kind: &'a str, key: &'a [u8], extra: Option<&'a [u8]>) -> Self {
        RKey { kind, key, extra }
    }

    /// An upper bound of the encoded length, so that a buffer sized by it never grows.
    pub(crate) fn len_bytes_max(&self) -> usize {
        // "idem:" ":{" "}" "#<len>:" (at most 20 digits) "|", and the tag at most twice the key (hex).
        const FIXED_BYTES: usize = 5 + 2 + 1 + 22 + 1;
        FIXED_BYTES + self.kind.len() + 3 * self.key.len() + self.extra.map_or(0, <[u8]>::len)
    }

    /// The one encoding of the module doc, handed to `put` piece by piece.
    fn write_to(&self, mut put: impl FnMut(&[u8])) {
        let tag = tag_of(self.key);
        put(b"idem:");
        put(self.kind.as_bytes());
        put(b":{");
        put(&tag);
        put(b"}");
        if *tag != *self.key {
            put(format!("#{}:", self.key.len()).as_bytes());
            put(self.key);
        }
        if let Some(e) = self.extra {
            put(b"|");
            put(e);
        }
    }
}

impl redis::ToRedisArgs for RKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // Every RedisWrite of the redis crate writes into memory, which cannot fail.
        self.write_to(|b| arg.write_all(b).expect("an in-memory redis argument takes any bytes"));
    }
}

/// The Redis Cluster slot of a Redis key (CRC16/XMODEM of its hash tag, mod 16384).
pub(crate) fn cluster_slot(rkey: &[u8]) -> u16 {
    let hashed = redis_hash_tag(rkey).unwrap_or(rkey);
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_are_their_own_tag() {
        assert_eq!(rkey("claim", b"email:a", None), b"idem:claim:{email:a}".to_vec());
        assert_eq!(rkey("counter-op", b"n", Some(b"op1")), b"idem:counter-op:{n}|op1".to_vec());
    }

    #[test]
    fn user_hash_tags_are_kept() {
        let a = rkey("claim", b"{user:1}:email", None);
        let b = rkey("claim", b"{user:1}:phone", None);
        assert_eq!(a, b"idem:claim:{user:1}#14:{user:1}:email".to_vec());
        assert_eq!(cluster_slot(&a), cluster_slot(&b));
        assert_eq!(cluster_slot(&a), cluster_slot(b"user:1"));
    }

    #[test]
    fn stray_braces_cannot_break_the_tag() {
        for key in [&b"}x"[..], b"a{}b}", b"{}", b"}"] {
            let k = rkey("idem", key, None);
            let f = rkey("idem-fence", key, None);
            assert_eq!(cluster_slot(&k), cluster_slot(&f), "{key:?}");
            assert!(redis_hash_tag(&k).is_some_and(|t| !t.is_empty()));
        }
    }

    #[test]
    fn encoding_is_injective_on_samples() {
        let keys: [&[u8]; 8] = [b"a", b"a}", b"{a}", b"{a}b", b"{a}#1:b", b"a|b", b"}a", b"7d61"];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            for extra in [None, Some(&b"x"[..]), Some(&b"|x"[..])] {
                assert!(seen.insert(rkey("n", k, extra)), "collision for {k:?} {extra:?}");
            }
        }
    }

    #[test]
    fn a_key_written_into_a_command_is_the_same_key() {
        for key in [&b"email:a"[..], b"{user:1}:email", b"}x", b""] {
            for extra in [None, Some(&b"op1"[..])] {
                let mut cmd = redis::Cmd::new();
                cmd.arg("GET").arg(RKey::new("counter-op", key, extra)).arg("x");
                let args: Vec<_> = cmd.args_iter().collect();
                let want = rkey("counter-op", key, extra);
                assert_eq!(args.len(), 3);
                assert!(matches!(args[1], redis::Arg::Simple(a) if a == want.as_slice()), "{key:?} {extra:?}");
            }
        }
    }

    #[test]
    fn crc16_matches_redis() {
        // Values from the Redis Cluster specification.
        assert_eq!(cluster_slot(b"123456789"), 0x31C3);
        assert_eq!(cluster_slot(b"foo"), 12182);
        assert_eq!(cluster_slot(b"{user1000}.following"), cluster_slot(b"{user1000}.followers"));
    }
}
