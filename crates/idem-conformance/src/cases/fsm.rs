//! Section 7: state machines (FSM.MOVE, FSM.GET).

use idem_core::{Backend, Reply};

use crate::{expect, items, ok, show, text_at, text_or_nil, Ctx};

async fn mv(b: &dyn Backend, args: &[&str], word: &str, state: &str) {
    let r = expect(b, args, word).await;
    assert_eq!(items(&r).len(), 2, "{args:?}: [word, state], got {}", show(&r));
    assert_eq!(text_at(&r, 1), state, "{args:?}: got {}", show(&r));
}

async fn get(b: &dyn Backend, k: &str) -> Option<String> {
    text_or_nil(&ok(b, &["FSM.GET", k]).await)
}

/// Moves, replays (`already`) and refusals; `none` stands for an absent key.
pub async fn fsm_basic(b: &dyn Backend, c: &Ctx) {
    let k = c.key("order-7");
    assert_eq!(get(b, &k).await, None);
    let r = expect(b, &["FSM.MOVE", &k, "paid", "FROM", "created"], "refused").await;
    // An absent key's current state is reported as `none` (or nil).
    match &items(&r)[1] {
        Reply::Nil => {}
        _ => assert_eq!(text_at(&r, 1), "none", "refused on an absent key: {}", show(&r)),
    }
    assert_eq!(get(b, &k).await, None, "a refused move creates nothing");
    mv(b, &["FSM.MOVE", &k, "created", "FROM", "none"], "moved", "created").await;
    mv(b, &["FSM.MOVE", &k, "created", "FROM", "none"], "already", "created").await;
    assert_eq!(get(b, &k).await.as_deref(), Some("created"));
    mv(b, &["FSM.MOVE", &k, "paid", "FROM", "created", "pending"], "moved", "paid").await;
    mv(b, &["FSM.MOVE", &k, "paid", "FROM", "created"], "already", "paid").await;
    mv(b, &["FSM.MOVE", &k, "created", "FROM", "none"], "refused", "paid").await;
    mv(b, &["FSM.MOVE", &k, "shipped", "FROM", "created"], "refused", "paid").await;
    assert_eq!(get(b, &k).await.as_deref(), Some("paid"), "never moves back");
    mv(b, &["FSM.MOVE", &k, "shipped", "FROM", "paid"], "moved", "shipped").await;
    // Moving back is allowed only when FROM says so.
    mv(b, &["FSM.MOVE", &k, "paid", "FROM", "shipped"], "moved", "paid").await;
    assert_eq!(get(b, &k).await.as_deref(), Some("paid"));
}

/// `none` in FROM is case-insensitive; `none` is no target.
pub async fn fsm_none_case_insensitive(b: &dyn Backend, c: &Ctx) {
    let k = c.key("k");
    mv(b, &["FSM.MOVE", &k, "a", "FROM", "x", "NONE"], "moved", "a").await;
    assert_eq!(get(b, &k).await.as_deref(), Some("a"));
    let e =
        crate::parse_bytes(&crate::to_bytes(&["FSM.MOVE", &k, "none", "FROM", "a"])).expect_err("none is no target");
    assert_eq!(e.code, idem_core::ErrorCode::Err);
}
