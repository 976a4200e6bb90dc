//! Common rules: size limits and pipelines.

use bytes::Bytes;
use idem_core::{Backend, ErrorCode, Reply};

use crate::{bulk_at, exec_bytes, expect, int_at, parse, show, status, text_or_nil, Ctx};

/// Keys of exactly 512 bytes and results of exactly 1 MiB work on every
/// backend; one byte more is refused with LIMIT.
pub async fn errors_limits(b: &dyn Backend, c: &Ctx) {
    let mut key = c.key("long-");
    key.extend(std::iter::repeat_n('k', 512 - key.len()));
    assert_eq!(key.len(), 512);
    expect(b, &["CLAIM", &key, "o"], "claimed").await;
    let r = expect(b, &["IDEM.BEGIN", &key, "FP", &"f".repeat(512)], "started").await;
    let fence = int_at(&r, 1).to_string();
    let big = Bytes::from(vec![b'x'; 1024 * 1024]);
    let commit = vec![Bytes::from_static(b"IDEM.COMMIT"), Bytes::from(key.clone()), Bytes::from(fence), big.clone()];
    exec_bytes(b, &commit).await.expect("a 1 MiB result is accepted");
    let r = expect(b, &["IDEM.GET", &key], "done").await;
    assert_eq!(bulk_at(&r, 1), big, "a 1 MiB result is replayed whole");

    let too_long = format!("{key}k");
    let e = exec_bytes(b, &crate::to_bytes(&["CLAIM", &too_long, "o"])).await.expect_err("513-byte key");
    assert_eq!(e.code, ErrorCode::Limit, "got '{e}'");
    let mut too_big = vec![b'x'; 1024 * 1024 + 1];
    too_big[0] = b'y';
    let set = vec![Bytes::from_static(b"VALUE.SET"), Bytes::from(c.key("v")), Bytes::from(too_big)];
    let e = exec_bytes(b, &set).await.expect_err("a value over 1 MiB");
    assert_eq!(e.code, ErrorCode::Limit, "got '{e}'");
}

/// A batch runs in order, each command seeing the ones before it; an error
/// reply in the middle does not stop the rest.
pub async fn batch_in_order(b: &dyn Backend, c: &Ctx) {
    let (k, n) = (c.key("k"), c.key("n"));
    let cmds = vec![
        parse(&["CLAIM", &k, "o1"]),
        parse(&["OWNER", &k]),
        parse(&["CLAIM", &k, "o2"]),
        parse(&["IDEM.COMMIT", &n, "1", "x"]),
        parse(&["RELEASE", &k, "o1"]),
        parse(&["CLAIM", &k, "o2"]),
        parse(&["OWNER", &k]),
        parse(&["COUNTER.ADD", &n, "2"]),
        parse(&["COUNTER.ADD", &n, "3"]),
    ];
    let out = b.execute_batch(cmds).await;
    assert_eq!(out.len(), 9, "one result per command");
    let shown: Vec<String> = out.iter().map(|r| r.as_ref().map(show).unwrap_or_else(|e| e.to_string())).collect();
    let reply = |i: usize| out[i].as_ref().unwrap_or_else(|e| panic!("command {i} failed: {e}; all: {shown:?}"));
    assert_eq!(status(reply(0)), "claimed", "{shown:?}");
    assert_eq!(text_or_nil(reply(1)).as_deref(), Some("o1"), "{shown:?}");
    assert_eq!(status(reply(2)), "held", "{shown:?}");
    assert_eq!(out[3].as_ref().map_err(|e| e.code), Err(ErrorCode::Stale), "{shown:?}");
    assert_eq!(reply(4), &Reply::Int(1), "{shown:?}");
    assert_eq!(status(reply(5)), "claimed", "{shown:?}");
    assert_eq!(text_or_nil(reply(6)).as_deref(), Some("o2"), "{shown:?}");
    assert_eq!(int_at(reply(8), 1), 5, "{shown:?}");
}
