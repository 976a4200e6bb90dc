//! What the Redis backend's integration tests share: run a command line,
//! read a reply's status word and integers.

use bytes::Bytes;
use idem_core::{Backend, Limits, Reply};
use idem_redis::RedisBackend;

pub async fn run(b: &RedisBackend, argv: &[&str]) -> Reply {
    let argv: Vec<Bytes> = argv.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    let cmd = idem_core::Command::parse(&argv, &Limits::default()).expect("a valid command");
    b.execute(cmd).await.unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

pub fn word(r: &Reply) -> &'static str {
    match r {
        Reply::Array(v) => match v.first() {
            Some(Reply::Word(w)) => w,
            _ => panic!("no status word in {r:?}"),
        },
        _ => panic!("not an array: {r:?}"),
    }
}

pub fn int_at(r: &Reply, i: usize) -> i64 {
    match r {
        Reply::Array(v) => match v.get(i) {
            Some(Reply::Int(n)) => *n,
            other => panic!("no integer at {i} of {r:?}: {other:?}"),
        },
        _ => panic!("not an array: {r:?}"),
    }
}
