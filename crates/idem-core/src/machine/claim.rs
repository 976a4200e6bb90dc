//! Unique claims: CLAIM, CLAIM.ALL (see `claim_all` in mod.rs), RELEASE, OWNER.
//!
//! A CLAIM sets the claim's expiry from its own TTL: a re-claim by the owner
//! with a TTL refreshes it, and one without TTL makes the claim last until
//! released.

use bytes::Bytes;

use super::expiry::{Expiry, Kind};
use super::{keymap, own, Effects, Machine};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::outcome::Claimed;
use crate::reply::Reply;

/// One claim.
#[derive(Debug)]
pub(super) struct ClaimEntry {
    owner: Bytes,
    expires_at_ms: Option<u64>,
}

impl ClaimEntry {
    /// Bytes held besides the key (for `Machine::memory_bytes`).
    pub(super) fn payload_bytes(&self) -> u64 {
        self.owner.len() as u64
    }
}

/// Stores a claim of `key`, which has none, in the vacant `slot` of its key.
fn store_new(
    expiry: &mut Expiry,
    slot: keymap::Vacant<'_, ClaimEntry>,
    key: &[u8],
    owner: &[u8],
    expires_at_ms: Option<u64>,
) {
    let k = own(key);
    if let Some(at) = expires_at_ms {
        expiry.insert(at, Kind::Claim, &k);
    }
    slot.insert((k, ClaimEntry { owner: own(owner), expires_at_ms }));
}

impl Machine {
    pub(super) fn claim_put(&mut self, key: &Bytes, owner: &Bytes, expires_at_ms: Option<u64>) {
        match self.claims.entry(key) {
            keymap::Entry::Occupied(mut e) => {
                let (k, old) = e.get_mut();
                if let Some(at) = old.expires_at_ms {
                    self.expiry.remove(at, Kind::Claim, k);
                }
                if let Some(at) = expires_at_ms {
                    self.expiry.insert(at, Kind::Claim, k);
                }
                // Keep the stored owner's allocation when it does not change.
                if old.owner != owner {
                    old.owner = own(owner);
                }
                old.expires_at_ms = expires_at_ms;
            }
            keymap::Entry::Vacant(slot) => store_new(&mut self.expiry, slot, key, owner, expires_at_ms),
        }
    }

    pub(super) fn claim_remove(&mut self, key: &[u8]) {
        if let Some((k, old)) = self.claims.remove(key) {
            if let Some(at) = old.expires_at_ms {
                self.expiry.remove(at, Kind::Claim, &k);
            }
        }
    }

    /// The live claim of `key`; forgets an expired one (lazy expiry).
    fn claim_live(&mut self, now_ms: u64, key: &[u8]) -> Option<&ClaimEntry> {
        if self.claims.get(key)?.expires_at_ms.is_some_and(|at| now_ms >= at) {
            self.claim_remove(key);
            return None;
        }
        self.claims.get(key)
    }

    /// The owner of `key` if someone other than `owner` holds it.
    pub(super) fn claim_conflict(&mut self, now_ms: u64, key: &Bytes, owner: &Bytes) -> Option<Bytes> {
        self.claim_live(now_ms, key).filter(|c| c.owner != owner).map(|c| c.owner.clone())
    }

    /// Gives `key` to `owner` until `expires_at_ms` (the caller checked for
    /// conflicts) and logs it, unless the owner already holds it until then.
    pub(super) fn claim_set(&mut self, key: &Bytes, owner: &Bytes, expires_at_ms: Option<u64>, effects: &mut Effects) {
        // A stored claim of this owner with this expiry is live: a claim
        // without expiry never ends, and a TTL is at least 1 ms, so a new
        // expiry lies in the future.
        if self.claims.get(key.as_ref()).is_some_and(|c| c.owner == owner && c.expires_at_ms == expires_at_ms) {
            return;
        }
        self.claim_put(key, owner, expires_at_ms);
        effects.changes.push(Change::ClaimPut { key: key.clone(), owner: owner.clone(), expires_at_ms });
    }

    pub(super) fn claim(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        owner: &Bytes,
        ttl_ms: Option<u64>,
        effects: &mut Effects,
    ) -> CmdResult {
        // One lookup settles the common cases; an expired claim or a new
        // TTL for the owner's claim take the general path below.
        let expires_at_ms = ttl_ms.map(|t| now_ms.saturating_add(t));
        match self.claims.entry(key) {
            keymap::Entry::Occupied(e) => match &e.get().1 {
                c if c.expires_at_ms.is_some_and(|at| now_ms >= at) => {}
                c if c.owner != owner => return Ok(Claimed::Held { owner: c.owner.clone() }.into_reply()),
                c if c.expires_at_ms == expires_at_ms => return Ok(Claimed::Claimed.into_reply()),
                _ => {}
            },
            keymap::Entry::Vacant(slot) => {
                // A key without a claim: stored in the slot this probe found.
                store_new(&mut self.expiry, slot, key, owner, expires_at_ms);
                effects.changes.push(Change::ClaimPut { key: key.clone(), owner: owner.clone(), expires_at_ms });
                return Ok(Claimed::Claimed.into_reply());
            }
        }
        if let Some(holder) = self.claim_conflict(now_ms, key, owner) {
            return Ok(Claimed::Held { owner: holder }.into_reply());
        }
        self.claim_set(key, owner, expires_at_ms, effects);
        Ok(Claimed::Claimed.into_reply())
    }

    pub(super) fn release(&mut self, now_ms: u64, key: &Bytes, owner: &Bytes, effects: &mut Effects) -> CmdResult {
        match self.claims.get(key.as_ref()) {
            Some(c) if c.expires_at_ms.is_some_and(|at| now_ms >= at) => {
                self.claim_remove(key); // lazy expiry
                return Ok(Reply::Int(0));
            }
            Some(c) if c.owner == owner => {}
            _ => return Ok(Reply::Int(0)),
        }
        self.claim_remove(key);
        effects.changes.push(Change::ClaimDel { key: key.clone() });
        Ok(Reply::Int(1))
    }

    pub(super) fn owner(&mut self, now_ms: u64, key: &Bytes) -> CmdResult {
        match self.claims.get(key.as_ref()) {
            None => Ok(Reply::Nil),
            Some(c) if c.expires_at_ms.is_none_or(|at| now_ms < at) => Ok(Reply::Bulk(c.owner.clone())),
            Some(_) => {
                self.claim_remove(key); // lazy expiry
                Ok(Reply::Nil)
            }
        }
    }

    pub(super) fn reclaim_claim(&mut self, at_ms: u64, key: &Bytes) {
        if self.claims.get(key.as_ref()).is_some_and(|c| c.expires_at_ms == Some(at_ms)) {
            self.claims.remove(key.as_ref());
        }
    }

    pub(super) fn dump_claims(&self, now_ms: u64, out: &mut dyn FnMut(Change)) {
        for (key, c) in self.claims.iter() {
            if c.expires_at_ms.is_none_or(|at| now_ms < at) {
                out(Change::ClaimPut { key: key.clone(), owner: c.owner.clone(), expires_at_ms: c.expires_at_ms });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::T;

    #[test]
    fn claim_release_owner() {
        let mut t = T::new();
        assert_eq!(t.cmd("OWNER k"), "nil");
        assert_eq!(t.cmd("CLAIM k alice"), "[claimed]");
        assert_eq!(t.last.len(), 1);
        assert_eq!(t.cmd("CLAIM k alice"), "[claimed]", "idempotent");
        assert!(t.last.is_empty(), "a re-claim that changes nothing logs nothing");
        assert_eq!(t.cmd("CLAIM k bob"), "[held alice]");
        assert_eq!(t.cmd("OWNER k"), "alice");
        assert_eq!(t.cmd("RELEASE k bob"), "0");
        assert_eq!(t.cmd("RELEASE k alice"), "1");
        assert_eq!(t.cmd("RELEASE k alice"), "0");
        assert_eq!(t.cmd("CLAIM k bob"), "[claimed]");
        t.check_replay();
    }

    #[test]
    fn ttl_expires_and_a_reclaim_sets_it_again() {
        let mut t = T::new();
        assert_eq!(t.cmd("CLAIM k alice TTL 100"), "[claimed]");
        t.now += 50;
        assert_eq!(t.cmd("CLAIM k alice TTL 100"), "[claimed]", "refreshes the TTL");
        t.now += 99;
        assert_eq!(t.cmd("OWNER k"), "alice");
        t.now += 1;
        assert_eq!(t.cmd("OWNER k"), "nil");
        assert_eq!(t.cmd("CLAIM k bob TTL 100"), "[claimed]");
        assert_eq!(t.cmd("CLAIM k bob"), "[claimed]", "without TTL: until released");
        t.tick(t.now + 1_000_000);
        assert_eq!(t.cmd("OWNER k"), "bob");
        assert_eq!(t.m.next_deadline_ms(), None);
        t.check_replay();
    }

    #[test]
    fn tick_reclaims_expired_claims() {
        let mut t = T::new();
        assert_eq!(t.cmd("CLAIM a x TTL 10"), "[claimed]");
        assert_eq!(t.cmd("CLAIM b x TTL 20"), "[claimed]");
        assert_eq!(t.cmd("CLAIM c x"), "[claimed]");
        t.tick(t.now + 10);
        assert_eq!(t.m.len(), 2);
        t.tick(t.now + 10);
        assert_eq!(t.m.len(), 1);
    }

    #[test]
    fn claim_all_is_all_or_nothing_and_lists_every_conflict() {
        let mut t = T::new();
        assert_eq!(t.cmd("CLAIM b bob"), "[claimed]");
        assert_eq!(t.cmd("CLAIM d carol"), "[claimed]");
        assert_eq!(t.cmd("CLAIM.ALL alice a b c d b"), "[held b bob d carol]");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("OWNER a"), "nil");
        assert_eq!(t.cmd("CLAIM.ALL alice a c a"), "[claimed]");
        assert_eq!(t.last.len(), 2, "a repeated key is claimed once");
        assert_eq!(t.cmd("CLAIM.ALL alice a c"), "[claimed]");
        assert!(t.last.is_empty());
        t.check_replay();
    }
}
