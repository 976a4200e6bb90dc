//! Section 2: unique claims (CLAIM, CLAIM.ALL, RELEASE, OWNER).

use std::collections::BTreeSet;

use idem_core::{Backend, Reply};

use crate::{expect, int, items, ok, show, sleep_ms, status, text_at, text_or_nil, Ctx};

async fn owner(b: &dyn Backend, k: &str) -> Option<String> {
    text_or_nil(&ok(b, &["OWNER", k]).await)
}

/// CLAIM is idempotent for its owner, refused (`held`) for others; RELEASE
/// only by the owner; a released key can be claimed again.
pub async fn claim_basic(b: &dyn Backend, c: &Ctx) {
    let k = c.key("email:a@example.com");
    assert_eq!(owner(b, &k).await, None);
    let r = ok(b, &["CLAIM", &k, "user-1"]).await;
    assert_eq!(r, Reply::status("claimed"), "got {}", show(&r));
    expect(b, &["CLAIM", &k, "user-1"], "claimed").await;
    let r = expect(b, &["CLAIM", &k, "user-2"], "held").await;
    assert_eq!(text_at(&r, 1), "user-1", "held names the owner: {}", show(&r));
    assert_eq!(items(&r).len(), 2, "held is [held, owner]: {}", show(&r));
    assert_eq!(owner(b, &k).await.as_deref(), Some("user-1"));
    assert_eq!(int(&ok(b, &["RELEASE", &k, "user-2"]).await), 0, "RELEASE by a non-owner");
    assert_eq!(owner(b, &k).await.as_deref(), Some("user-1"), "a non-owner's RELEASE changes nothing");
    assert_eq!(int(&ok(b, &["RELEASE", &k, "user-1"]).await), 1);
    assert_eq!(owner(b, &k).await, None);
    assert_eq!(int(&ok(b, &["RELEASE", &k, "user-1"]).await), 0, "second RELEASE");
    // Logical delete then re-create: the key can be claimed again, many times.
    for round in 0..3 {
        let who = format!("user-{}", 2 + round);
        expect(b, &["CLAIM", &k, &who], "claimed").await;
        assert_eq!(owner(b, &k).await.as_deref(), Some(who.as_str()));
        assert_eq!(int(&ok(b, &["RELEASE", &k, &who]).await), 1);
    }
}

/// A claim with TTL ends by itself.
pub async fn claim_ttl_expires(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    // Long enough that the second CLAIM lands inside it on a loaded machine.
    expect(b, &["CLAIM", &k, "o1", "TTL", "1500"], "claimed").await;
    expect(b, &["CLAIM", &k, "o2"], "held").await;
    sleep_ms(1800).await;
    assert_eq!(owner(b, &k).await, None, "the TTL ran out");
    expect(b, &["CLAIM", &k, "o2"], "claimed").await;
    assert_eq!(owner(b, &k).await.as_deref(), Some("o2"));
}

/// The `(key, owner)` pairs of a `held` reply of CLAIM.ALL.
fn held_pairs(r: &Reply) -> BTreeSet<(String, String)> {
    let v = items(r);
    assert!(v.len() % 2 == 1 && v.len() >= 3, "held lists key, owner pairs: {}", show(r));
    (1..v.len()).step_by(2).map(|i| (text_at(r, i), text_at(r, i + 1))).collect()
}

/// CLAIM.ALL is all-or-nothing and lists every conflicting key with its owner.
pub async fn claim_all_all_or_nothing(b: &dyn Backend, c: &Ctx) {
    let (ka, kb, kc, kd) = (c.tagged("a"), c.tagged("b"), c.tagged("c"), c.tagged("d"));
    expect(b, &["CLAIM", &kb, "o2"], "claimed").await;
    expect(b, &["CLAIM", &kc, "o3"], "claimed").await;
    expect(b, &["CLAIM", &kd, "o1"], "claimed").await;
    let r = expect(b, &["CLAIM.ALL", "o1", &ka, &kb, &kc, &kd], "held").await;
    let want: BTreeSet<_> = [(kb.clone(), "o2".to_string()), (kc.clone(), "o3".to_string())].into();
    assert_eq!(held_pairs(&r), want, "every conflict listed, own keys not: {}", show(&r));
    assert_eq!(owner(b, &ka).await, None, "all-or-nothing: a free key was not claimed");
    assert_eq!(owner(b, &kb).await.as_deref(), Some("o2"));
    assert_eq!(int(&ok(b, &["RELEASE", &kb, "o2"]).await), 1);
    let r = expect(b, &["CLAIM.ALL", "o1", &ka, &kb, &kc, &kd], "held").await;
    let want: BTreeSet<_> = [(kc.clone(), "o3".to_string())].into();
    assert_eq!(held_pairs(&r), want, "{}", show(&r));
    assert_eq!(owner(b, &kb).await, None, "all-or-nothing");
    assert_eq!(int(&ok(b, &["RELEASE", &kc, "o3"]).await), 1);
    let r = ok(b, &["CLAIM.ALL", "o1", &ka, &kb, &kc, &kd]).await;
    assert_eq!(r, Reply::status("claimed"), "got {}", show(&r));
    for k in [&ka, &kb, &kc, &kd] {
        assert_eq!(owner(b, k).await.as_deref(), Some("o1"), "{k}");
    }
    let r = expect(b, &["CLAIM.ALL", "o2", &kd], "held").await;
    let want: BTreeSet<_> = [(kd.clone(), "o1".to_string())].into();
    assert_eq!(held_pairs(&r), want);
}

/// CLAIM.ALL again by the owner succeeds; a key listed twice is fine.
pub async fn claim_all_idempotent(b: &dyn Backend, c: &Ctx) {
    let (ka, kb) = (c.tagged("a"), c.tagged("b"));
    expect(b, &["CLAIM.ALL", "o1", &ka, &kb], "claimed").await;
    expect(b, &["CLAIM.ALL", "o1", &ka, &kb], "claimed").await;
    expect(b, &["CLAIM.ALL", "o1", &kb, &kb], "claimed").await;
    expect(b, &["CLAIM", &ka, "o1"], "claimed").await;
    assert_eq!(int(&ok(b, &["RELEASE", &ka, "o1"]).await), 1);
    assert_eq!(int(&ok(b, &["RELEASE", &kb, "o1"]).await), 1);
    assert_eq!(status(&ok(b, &["CLAIM.ALL", "o2", &ka, &kb]).await), "claimed");
}
