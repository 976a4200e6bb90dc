//! Section 6: versioned values (VALUE.GET, VALUE.SET [IFVERSION]).

use bytes::Bytes;
use idem_core::{Backend, Reply};

use crate::{bulk_at, exec_bytes, int_at, items, ok, show, status, Ctx};

async fn set(b: &dyn Backend, args: &[&str], word: &str, version: i64) {
    let r = ok(b, args).await;
    assert_eq!(items(&r).len(), 2, "{args:?}: [word, version], got {}", show(&r));
    assert_eq!((status(&r).as_str(), int_at(&r, 1)), (word, version), "{args:?}: got {}", show(&r));
}

async fn get(b: &dyn Backend, k: &str) -> Option<(Bytes, i64)> {
    let r = ok(b, &["VALUE.GET", k]).await;
    match &r {
        Reply::Nil => None,
        Reply::Array(v) if v.len() == 2 => Some((bulk_at(&r, 0), int_at(&r, 1))),
        other => panic!("VALUE.GET replies [value, version] or nil, got {}", show(other)),
    }
}

/// Versions start at 1 and grow; IFVERSION must match the current version.
pub async fn value_basic(b: &dyn Backend, c: &Ctx) {
    let k = c.key("cfg");
    assert_eq!(get(b, &k).await, None);
    set(b, &["VALUE.SET", &k, "v1"], "ok", 1).await;
    assert_eq!(get(b, &k).await, Some((Bytes::from("v1"), 1)));
    set(b, &["VALUE.SET", &k, "v2"], "ok", 2).await;
    set(b, &["VALUE.SET", &k, "v3", "IFVERSION", "2"], "ok", 3).await;
    set(b, &["VALUE.SET", &k, "lost-update", "IFVERSION", "2"], "conflict", 3).await;
    set(b, &["VALUE.SET", &k, "future", "IFVERSION", "9"], "conflict", 3).await;
    assert_eq!(get(b, &k).await, Some((Bytes::from("v3"), 3)), "a conflict changes nothing");
    set(b, &["VALUE.SET", &k, "v4", "ifversion", "3"], "ok", 4).await;
    assert_eq!(get(b, &k).await, Some((Bytes::from("v4"), 4)));
}

/// IFVERSION 0 means "only if absent"; an absent key conflicts with version 0.
pub async fn value_ifversion_zero(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    set(b, &["VALUE.SET", &k, "other", "IFVERSION", "1"], "conflict", 0).await;
    assert_eq!(get(b, &k).await, None, "a conflict creates nothing");
    set(b, &["VALUE.SET", &k, "first", "IFVERSION", "0"], "ok", 1).await;
    set(b, &["VALUE.SET", &k, "second", "IFVERSION", "0"], "conflict", 1).await;
    assert_eq!(get(b, &k).await, Some((Bytes::from("first"), 1)));
}

/// Values are binary-safe and may be empty.
pub async fn value_binary(b: &dyn Backend, c: &Ctx) {
    let k = c.key("bin");
    let v = Bytes::from_static(b"\x00\x01\xff\r\n");
    let args = vec![Bytes::from_static(b"VALUE.SET"), Bytes::from(k.clone()), v.clone()];
    exec_bytes(b, &args).await.expect("VALUE.SET binary");
    assert_eq!(get(b, &k).await, Some((v, 1)));
    set(b, &["VALUE.SET", &k, ""], "ok", 2).await;
    assert_eq!(get(b, &k).await, Some((Bytes::new(), 2)));
}
