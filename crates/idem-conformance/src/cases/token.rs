//! Section 4: one-time tokens (TOKEN.NEW, TOKEN.USE).

use idem_core::{Backend, Reply};

use crate::{int, ok, show, sleep_ms, text_or_nil, Ctx};

async fn new_token(b: &dyn Backend, scope: &str, ttl_ms: &str) -> String {
    let r = ok(b, &["TOKEN.NEW", scope, "TTL", ttl_ms]).await;
    let t = match &r {
        Reply::Bulk(_) => text_or_nil(&r).unwrap_or_default(),
        other => panic!("TOKEN.NEW replies a bulk string, got {}", show(other)),
    };
    // 128 random bits need at least 22 characters of URL-safe base64 (32 of hex).
    assert!(t.len() >= 22, "token too short for 128 random bits: {t:?}");
    assert!(
        t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "token is not URL-safe text: {t:?}"
    );
    t
}

/// A token is used once; unknown tokens and other scopes get 0.
pub async fn token_single_use(b: &dyn Backend, c: &Ctx) {
    let scope = c.key("reset-password:user-1");
    let other = c.key("reset-password:user-2");
    let t1 = new_token(b, &scope, "60000").await;
    let t2 = new_token(b, &scope, "60000").await;
    assert_ne!(t1, t2, "tokens are random");
    assert_eq!(int(&ok(b, &["TOKEN.USE", &other, &t1]).await), 0, "a token belongs to its scope");
    assert_eq!(int(&ok(b, &["TOKEN.USE", &scope, &t1]).await), 1);
    assert_eq!(int(&ok(b, &["TOKEN.USE", &scope, &t1]).await), 0, "spent");
    assert_eq!(int(&ok(b, &["TOKEN.USE", &scope, "no-such-token"]).await), 0, "unknown");
    assert_eq!(int(&ok(b, &["TOKEN.USE", &scope, &t2]).await), 1, "the other token is still valid");
}

/// A token expires after its TTL.
pub async fn token_expiry(b: &dyn Backend, c: &Ctx) {
    let scope = c.key("s");
    let t = new_token(b, &scope, "150").await;
    sleep_ms(450).await;
    assert_eq!(int(&ok(b, &["TOKEN.USE", &scope, &t]).await), 0, "expired");
}
