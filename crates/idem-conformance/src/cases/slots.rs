//! Section 8: slot reservations (SLOTS.RESERVE, SLOTS.RELEASE, SLOTS.GET).

use idem_core::{Backend, Reply};

use crate::{exec, expect, int, int_at, items, ok, show, text_at, Ctx};

/// The holders of a resource, one per slot (`None` for free).
pub(crate) async fn holders(b: &dyn Backend, r: &str) -> Vec<Option<String>> {
    let reply = ok(b, &["SLOTS.GET", r]).await;
    items(&reply)
        .iter()
        .map(|h| match h {
            Reply::Nil => None,
            Reply::Bulk(v) => Some(String::from_utf8_lossy(v).into_owned()),
            other => panic!("SLOTS.GET holds bulk strings or nil, got {} in {}", show(other), show(&reply)),
        })
        .collect()
}

fn layout(spec: &[(usize, Option<&str>)]) -> Vec<Option<String>> {
    spec.iter().flat_map(|(n, h)| std::iter::repeat_n(h.map(String::from), *n)).collect()
}

/// All or none; conflicts list each taken slot and its holder; re-reserving
/// one's own slots succeeds; RELEASE frees only the holder's slots.
pub async fn slots_basic(b: &dyn Backend, c: &Ctx) {
    let r = c.key("room:17:2026-12-01");
    let reply = ok(b, &["SLOTS.RESERVE", &r, "0", "3", "alice", "SIZE", "8"]).await;
    assert_eq!(reply, Reply::status("reserved"), "got {}", show(&reply));
    assert_eq!(holders(b, &r).await, layout(&[(4, Some("alice")), (4, None)]));
    let reply = expect(b, &["SLOTS.RESERVE", &r, "2", "5", "bob"], "conflict").await;
    let v = items(&reply);
    assert_eq!(v.len(), 5, "conflict lists slot, holder for slots 2 and 3: {}", show(&reply));
    assert_eq!((int_at(&reply, 1), text_at(&reply, 2)), (2, "alice".into()), "{}", show(&reply));
    assert_eq!((int_at(&reply, 3), text_at(&reply, 4)), (3, "alice".into()), "{}", show(&reply));
    assert_eq!(holders(b, &r).await, layout(&[(4, Some("alice")), (4, None)]), "all or none");
    expect(b, &["SLOTS.RESERVE", &r, "0", "3", "alice"], "reserved").await;
    expect(b, &["SLOTS.RESERVE", &r, "2", "4", "alice"], "reserved").await;
    expect(b, &["SLOTS.RESERVE", &r, "5", "7", "bob"], "reserved").await;
    assert_eq!(holders(b, &r).await, layout(&[(5, Some("alice")), (3, Some("bob"))]));
    assert_eq!(int(&ok(b, &["SLOTS.RELEASE", &r, "0", "7", "alice"]).await), 5);
    assert_eq!(int(&ok(b, &["SLOTS.RELEASE", &r, "0", "7", "alice"]).await), 0);
    assert_eq!(holders(b, &r).await, layout(&[(5, None), (3, Some("bob"))]));
    expect(b, &["SLOTS.RESERVE", &r, "0", "1", "bob"], "reserved").await;
    assert_eq!(int(&ok(b, &["SLOTS.RELEASE", &r, "1", "6", "bob"]).await), 3, "only slots 1, 5 and 6 in range");
    assert_eq!(holders(b, &r).await, layout(&[(1, Some("bob")), (6, None), (1, Some("bob"))]));
}

/// A resource created without SIZE has 48 slots.
pub async fn slots_size_default(b: &dyn Backend, c: &Ctx) {
    let r = c.key("day");
    expect(b, &["SLOTS.RESERVE", &r, "47", "47", "h"], "reserved").await;
    let h = holders(b, &r).await;
    assert_eq!(h.len(), 48, "default SIZE is 48");
    assert_eq!(h[47].as_deref(), Some("h"));
    assert!(h[..47].iter().all(Option::is_none));
}

/// A range outside the resource's SIZE is refused and changes nothing.
pub async fn slots_outside_size(b: &dyn Backend, c: &Ctx) {
    let r = c.key("small");
    expect(b, &["SLOTS.RESERVE", &r, "0", "0", "h", "SIZE", "4"], "reserved").await;
    let e = exec(b, &["SLOTS.RESERVE", &r, "3", "4", "h"]).await.expect_err("slot 4 is outside SIZE 4");
    assert!(
        matches!(e.code, idem_core::ErrorCode::Err | idem_core::ErrorCode::Limit),
        "outside SIZE is ERR or LIMIT, got '{e}'"
    );
    assert_eq!(holders(b, &r).await, layout(&[(1, Some("h")), (3, None)]), "the refused request changed nothing");
}

/// RELEASE by another holder frees nothing.
pub async fn slots_release_by_other(b: &dyn Backend, c: &Ctx) {
    let r = c.key("r");
    expect(b, &["SLOTS.RESERVE", &r, "1", "2", "h1", "SIZE", "4"], "reserved").await;
    assert_eq!(int(&ok(b, &["SLOTS.RELEASE", &r, "0", "3", "h2"]).await), 0);
    assert_eq!(holders(b, &r).await, layout(&[(1, None), (2, Some("h1")), (1, None)]));
}

/// A resource whose last held slot is released is forgotten: SLOTS.GET
/// replies an empty array and a new reservation chooses its SIZE again.
/// (The Redis store once kept the emptied resource, and SLOTS.GET answered
/// SIZE free slots: docs/reliability.md.)
pub async fn slots_forgotten_when_empty(b: &dyn Backend, c: &Ctx) {
    let r = c.key("emptied");
    expect(b, &["SLOTS.RESERVE", &r, "1", "2", "h", "SIZE", "4"], "reserved").await;
    expect(b, &["SLOTS.RESERVE", &r, "3", "3", "g"], "reserved").await;
    assert_eq!(int(&ok(b, &["SLOTS.RELEASE", &r, "0", "3", "h"]).await), 2);
    assert_eq!(holders(b, &r).await, layout(&[(3, None), (1, Some("g"))]), "g still holds slot 3");
    assert_eq!(int(&ok(b, &["SLOTS.RELEASE", &r, "3", "3", "g"]).await), 1);
    assert_eq!(holders(b, &r).await, Vec::<Option<String>>::new(), "no held slot: the resource is forgotten");
    assert_eq!(int(&ok(b, &["SLOTS.RELEASE", &r, "0", "3", "g"]).await), 0, "a forgotten resource frees nothing");
    expect(b, &["SLOTS.RESERVE", &r, "7", "7", "h", "SIZE", "8"], "reserved").await;
    assert_eq!(holders(b, &r).await, layout(&[(7, None), (1, Some("h"))]), "its SIZE was chosen again");
}
