//! `maxmemory_bytes`: at the bound, a command that would create a record
//! gets `OOM` and changes nothing; records that exist can still be read,
//! committed, released and expire; none is evicted; INFO shows the usage.

use std::time::Duration;

use bytes::Bytes;
use idem_core::{Backend, CmdResult, Command, ErrorCode, Limits};
use idem_store::{Store, StoreConfig};

fn cmd(args: &[&str]) -> Command {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    Command::parse(&args, &Limits::default()).expect("valid command")
}

async fn run(store: &Store, args: &[&str]) -> CmdResult {
    store.execute(cmd(args)).await
}

fn word(r: &CmdResult) -> &'static str {
    r.as_ref().unwrap_or_else(|e| panic!("ok reply, got {e}")).word().expect("status word")
}

fn info(store: &Store, field: &str) -> u64 {
    let info = store.info();
    let (_, v) = info.iter().find(|(k, _)| k == field).unwrap_or_else(|| panic!("INFO has {field}"));
    v.parse().expect("a number")
}

#[tokio::test]
async fn at_the_bound_new_records_are_refused_and_existing_ones_keep_working() {
    let max = 16 * 1024;
    let store = Store::open(StoreConfig { shards: 4, maxmemory_bytes: max, ..StoreConfig::default() }).expect("open");
    assert_eq!(info(&store, "maxmemory_bytes"), max);
    // Fill up with running idempotency records (and one short claim that will expire).
    assert_eq!(word(&run(&store, &["CLAIM", "short", "me", "TTL", "50"]).await), "claimed");
    let mut created = 0;
    let refused = loop {
        let key = format!("key-{created:05}");
        match run(&store, &["IDEM.BEGIN", &key, "LEASE", "60000"]).await {
            Ok(r) => {
                assert_eq!(r.word(), Some("started"));
                created += 1;
            }
            Err(e) => break e,
        }
        assert!(created < 10_000, "the bound never refused a new record");
    };
    assert_eq!(refused.code, ErrorCode::Oom, "{refused}");
    assert!(refused.message.contains("maxmemory_bytes"), "{refused}");
    let used = info(&store, "memory_used_bytes");
    assert!(used >= max, "refused at {used} of {max} bytes");
    // Every new record is refused, of every primitive; nothing changed.
    for args in [
        &["IDEM.BEGIN", "new", "LEASE", "1000"][..],
        &["CLAIM", "new", "me"],
        &["CLAIM.ALL", "me", "key-00000", "new"],
        &["LOCK", "new", "me", "LEASE", "1000"],
        &["TOKEN.NEW", "s", "TTL", "1000"],
        &["COUNTER.ADD", "new", "1"],
        &["VALUE.SET", "new", "v"],
        &["FSM.MOVE", "new", "a", "FROM", "none"],
        &["SLOTS.RESERVE", "new", "1", "1", "me", "SIZE", "10"],
    ] {
        let e = run(&store, args).await.expect_err("a new record at the bound");
        assert_eq!(e.code, ErrorCode::Oom, "{args:?}: {e}");
    }
    assert!(run(&store, &["IDEM.GET", "new"]).await.unwrap().word().is_none_or(|w| w != "running"));
    assert_eq!(store.dbsize().await.unwrap(), created + 1, "nothing was created, nothing evicted");
    // Existing records: read, commit (growing), abort, renew.
    assert_eq!(word(&run(&store, &["IDEM.GET", "key-00000"]).await), "running");
    assert_eq!(word(&run(&store, &["IDEM.COMMIT", "key-00000", "1", "a result bigger than nothing"]).await), "ok");
    assert_eq!(word(&run(&store, &["IDEM.BEGIN", "key-00000"]).await), "done", "the committed result replays");
    // A second begin on a present key creates nothing: it is answered.
    assert_eq!(word(&run(&store, &["IDEM.BEGIN", "key-00001"]).await), "running");
    // Releasing frees room: deleting records brings the estimate under the bound.
    for i in 0..created / 2 {
        let key = format!("key-{i:05}");
        run(&store, &["IDEM.DEL", &key]).await.expect("delete");
    }
    assert!(info(&store, "memory_used_bytes") < max, "deletes are counted at once");
    assert_eq!(word(&run(&store, &["IDEM.BEGIN", "new", "LEASE", "1000"]).await), "started");
    // The short claim expires as usual (and the recount notices).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(run(&store, &["OWNER", "short"]).await, Ok(idem_core::Reply::Nil));
}

#[tokio::test]
async fn without_a_bound_the_usage_is_counted_and_nothing_is_refused() {
    let store = Store::open(StoreConfig { shards: 2, ..StoreConfig::default() }).expect("open");
    assert_eq!(info(&store, "maxmemory_bytes"), 0);
    for i in 0..200 {
        assert_eq!(word(&run(&store, &["VALUE.SET", &format!("v{i}"), "0123456789"]).await), "ok");
    }
    // Unbounded, the figure comes from the ticker's recount (once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let used = info(&store, "memory_used_bytes");
    let per_record = idem_core::machine::RECORD_OVERHEAD_BYTES + 4 + 10;
    assert!(used >= 200 * per_record - 200 && used <= 200 * per_record, "{used} bytes for 200 values");
}
