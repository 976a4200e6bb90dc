//! Section 5: bounded counters (COUNTER.ADD, COUNTER.GET).

use idem_core::Backend;

use crate::{int, int_at, items, ok, show, sleep_ms, status, Ctx};

/// Runs a COUNTER.ADD and checks `[word, value]`.
async fn add(b: &dyn Backend, args: &[&str], word: &str, value: i64) {
    let r = ok(b, args).await;
    assert_eq!(items(&r).len(), 2, "{args:?}: [word, value], got {}", show(&r));
    assert_eq!((status(&r).as_str(), int_at(&r, 1)), (word, value), "{args:?}: got {}", show(&r));
}

async fn get(b: &dyn Backend, k: &str) -> i64 {
    int(&ok(b, &["COUNTER.GET", k]).await)
}

/// ADD and GET; an absent counter is 0.
pub async fn counter_basic(b: &dyn Backend, c: &Ctx) {
    let k = c.key("stock");
    assert_eq!(get(b, &k).await, 0, "absent is 0");
    add(b, &["COUNTER.ADD", &k, "5"], "ok", 5).await;
    add(b, &["COUNTER.ADD", &k, "-2"], "ok", 3).await;
    add(b, &["COUNTER.ADD", &k, "0"], "ok", 3).await;
    assert_eq!(get(b, &k).await, 3);
    add(b, &["COUNTER.ADD", &k, "-10"], "ok", -7).await;
    assert_eq!(get(b, &k).await, -7, "without bounds a counter goes negative");
}

/// An ADD that would leave [MIN, MAX] is refused with the current value and changes nothing.
pub async fn counter_bounds(b: &dyn Backend, c: &Ctx) {
    let k = c.key("stock");
    add(b, &["COUNTER.ADD", &k, "-1", "MIN", "0"], "refused", 0).await;
    assert_eq!(get(b, &k).await, 0);
    add(b, &["COUNTER.ADD", &k, "10", "MAX", "10"], "ok", 10).await;
    add(b, &["COUNTER.ADD", &k, "1", "MAX", "10"], "refused", 10).await;
    add(b, &["COUNTER.ADD", &k, "-11", "MIN", "0"], "refused", 10).await;
    add(b, &["COUNTER.ADD", &k, "-4", "MIN", "0", "MAX", "10"], "ok", 6).await;
    add(b, &["COUNTER.ADD", &k, "-6", "MIN", "0"], "ok", 0).await;
    add(b, &["COUNTER.ADD", &k, "-1", "MIN", "0"], "refused", 0).await;
    add(b, &["COUNTER.ADD", &k, "5", "MIN", "7"], "refused", 0).await;
    add(b, &["COUNTER.ADD", &k, "7", "MIN", "7"], "ok", 7).await;
    add(b, &["COUNTER.ADD", &k, "-108", "MIN", "-100"], "refused", 7).await;
    add(b, &["COUNTER.ADD", &k, "-107", "MIN", "-100"], "ok", -100).await;
    assert_eq!(get(b, &k).await, -100);
}

/// The same OP id applies once: retries reply `replayed` with the value the
/// first application produced.
pub async fn counter_op_replay(b: &dyn Backend, c: &Ctx) {
    let k = c.key("balance");
    add(b, &["COUNTER.ADD", &k, "5", "OP", "pay-1"], "ok", 5).await;
    add(b, &["COUNTER.ADD", &k, "5", "OP", "pay-1"], "replayed", 5).await;
    add(b, &["COUNTER.ADD", &k, "7", "OP", "pay-2"], "ok", 12).await;
    add(b, &["COUNTER.ADD", &k, "5", "OP", "pay-1"], "replayed", 5).await;
    add(b, &["COUNTER.ADD", &k, "7", "OP", "pay-2", "MAX", "1"], "replayed", 12).await;
    add(b, &["COUNTER.ADD", &k, "1"], "ok", 13).await;
    assert_eq!(get(b, &k).await, 13);
}

/// An OP id is forgotten after KEEP; then it applies again.
pub async fn counter_op_keep_expires(b: &dyn Backend, c: &Ctx) {
    let k = c.key("n");
    add(b, &["COUNTER.ADD", &k, "1", "OP", "x", "KEEP", "150"], "ok", 1).await;
    add(b, &["COUNTER.ADD", &k, "1", "OP", "x", "KEEP", "150"], "replayed", 1).await;
    sleep_ms(450).await;
    add(b, &["COUNTER.ADD", &k, "1", "OP", "x"], "ok", 2).await;
}

/// i64 arithmetic: an overflow is refused and changes nothing.
pub async fn counter_overflow(b: &dyn Backend, c: &Ctx) {
    let (max, min) = (i64::MAX.to_string(), i64::MIN.to_string());
    let k = c.key("hi");
    add(b, &["COUNTER.ADD", &k, &max], "ok", i64::MAX).await;
    add(b, &["COUNTER.ADD", &k, "1"], "refused", i64::MAX).await;
    add(b, &["COUNTER.ADD", &k, &max], "refused", i64::MAX).await;
    assert_eq!(get(b, &k).await, i64::MAX);
    add(b, &["COUNTER.ADD", &k, "-1"], "ok", i64::MAX - 1).await;
    add(b, &["COUNTER.ADD", &k, &min], "ok", -2).await;
    let k = c.key("lo");
    add(b, &["COUNTER.ADD", &k, &min], "ok", i64::MIN).await;
    add(b, &["COUNTER.ADD", &k, "-1"], "refused", i64::MIN).await;
    add(b, &["COUNTER.ADD", &k, &min], "refused", i64::MIN).await;
    add(b, &["COUNTER.ADD", &k, &max], "ok", -1).await;
    // Exact comparisons near the limits (no float rounding).
    let k = c.key("edge");
    let near = (i64::MAX - 1).to_string();
    add(b, &["COUNTER.ADD", &k, &near, "MAX", &near], "ok", i64::MAX - 1).await;
    add(b, &["COUNTER.ADD", &k, "1", "MAX", &near], "refused", i64::MAX - 1).await;
    add(b, &["COUNTER.ADD", &k, "1", "MAX", &max], "ok", i64::MAX).await;
}
