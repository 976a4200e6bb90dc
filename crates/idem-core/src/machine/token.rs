//! One-time tokens: TOKEN.NEW, TOKEN.USE. A token is 32 lowercase hex
//! characters (128 random bits from `Env::random_token`), stored under
//! `pair_key(scope, token)` with its expiry.

use bytes::Bytes;

use super::expiry::Kind;
use super::keymap;
use super::{pair_key, split_pair, Effects, Env, Machine};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::reply::Reply;

/// Lowercase hex of `raw`.
fn hex(raw: &[u8; 16]) -> Bytes {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut v = Vec::with_capacity(32);
    for b in raw {
        v.push(DIGITS[usize::from(b >> 4)]);
        v.push(DIGITS[usize::from(b & 15)]);
    }
    Bytes::from(v)
}

impl Machine {
    pub(super) fn token_put(&mut self, k: Bytes, expires_at_ms: u64) {
        match self.tokens.entry(&k) {
            keymap::Entry::Occupied(mut e) => {
                let (key, at) = e.get_mut();
                self.expiry.moved(*at, expires_at_ms, Kind::Token, key);
                *at = expires_at_ms;
            }
            keymap::Entry::Vacant(e) => {
                self.expiry.insert(expires_at_ms, Kind::Token, &k);
                e.insert((k, expires_at_ms));
            }
        }
    }

    pub(super) fn token_remove(&mut self, k: &Bytes) {
        if let Some((k, at)) = self.tokens.remove(k) {
            self.expiry.remove(at, Kind::Token, &k);
        }
    }

    pub(super) fn token_new(
        &mut self,
        now_ms: u64,
        scope: &Bytes,
        ttl_ms: u64,
        env: &mut dyn Env,
        effects: &mut Effects,
    ) -> CmdResult {
        let token = hex(&env.random_token());
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        self.token_put(pair_key(scope, &token), expires_at_ms);
        effects.changes.push(Change::TokenPut { scope: scope.clone(), token: token.clone(), expires_at_ms });
        Ok(Reply::Bulk(token))
    }

    pub(super) fn token_use(&mut self, now_ms: u64, scope: &Bytes, token: &Bytes, effects: &mut Effects) -> CmdResult {
        let Some((k, at)) = self.tokens.remove(&pair_key(scope, token)) else {
            return Ok(Reply::Int(0));
        };
        self.expiry.remove(at, Kind::Token, &k);
        if now_ms >= at {
            // Expired: forgotten without a log entry, like any expiry.
            return Ok(Reply::Int(0));
        }
        effects.changes.push(Change::TokenDel { scope: scope.clone(), token: token.clone() });
        Ok(Reply::Int(1))
    }

    pub(super) fn reclaim_token(&mut self, at_ms: u64, k: &Bytes) {
        if let Some(e) = self.tokens.find_mut(k).filter(|e| e.get().1 == at_ms) {
            e.remove();
        }
    }

    pub(super) fn dump_tokens(&self, now_ms: u64, out: &mut dyn FnMut(Change)) {
        for (k, &expires_at_ms) in self.tokens.iter() {
            if now_ms < expires_at_ms {
                let (scope, token) = split_pair(k);
                out(Change::TokenPut { scope, token, expires_at_ms });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_and_32_chars() {
        let h = super::hex(&[0xAB; 16]);
        assert_eq!(h.len(), 32);
        assert_eq!(&h[..4], b"abab");
    }
}

#[cfg(test)]
mod machine_tests {
    use super::super::testkit::T;

    #[test]
    fn a_token_is_used_once() {
        let mut t = T::new();
        let tok = t.cmd("TOKEN.NEW s TTL 100");
        assert_eq!(tok, "01".repeat(16));
        assert_eq!(t.cmd(&format!("TOKEN.USE other {tok}")), "0", "tokens belong to their scope");
        t.check_replay();
        assert_eq!(t.cmd(&format!("TOKEN.USE s {tok}")), "1");
        assert_eq!(t.cmd(&format!("TOKEN.USE s {tok}")), "0");
        assert_eq!(t.cmd("TOKEN.USE s nope"), "0");
        assert_eq!(t.m.len(), 0);
        t.check_replay();
    }

    #[test]
    fn tokens_expire() {
        let mut t = T::new();
        let a = t.cmd("TOKEN.NEW s TTL 100");
        let b = t.cmd("TOKEN.NEW s TTL 200");
        t.now += 100;
        t.check_replay();
        assert_eq!(t.cmd(&format!("TOKEN.USE s {a}")), "0");
        assert!(t.last.is_empty());
        t.tick(t.now + 100);
        assert_eq!(t.m.len(), 0);
        assert_eq!(t.cmd(&format!("TOKEN.USE s {b}")), "0");
    }
}
