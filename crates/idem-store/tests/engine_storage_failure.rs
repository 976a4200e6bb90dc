//! After the log fails (here: its file system is full), the engine answers
//! every command `READONLY`, reads included: its memory may hold a change
//! whose record never reached the disk, and a read must not show what a
//! restart will not have (docs/durability.md, "Storage failures").
//!
//! The data directory is a small tmpfs mounted for the test (root only, as
//! the project's test machines run).

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use bytes::Bytes;
use idem_core::{Backend, CmdResult, Command, ErrorCode, Limits, Reply};
use idem_store::{Store, StoreConfig};

fn cmd(args: &[&str]) -> Command {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    Command::parse(&args, &Limits::default()).expect("valid command")
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallFs {
    dir: PathBuf,
    _holder: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let holder = tempfile::tempdir().expect("temp dir");
        let dir = holder.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let ok = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mounting a tmpfs needs root (the test machines run as root)");
        SmallFs { dir, _holder: holder }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.dir).status();
    }
}

/// Fills the file system with one file until it refuses more bytes.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![7u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // Whatever fits of the last block is in; the file system is full.
}

fn value_of(r: &CmdResult) -> (String, i64) {
    match r.as_ref().expect("ok reply") {
        Reply::Array(v) => {
            let val = match &v[0] {
                Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("not a bulk value: {other:?}"),
            };
            let version = match v[1] {
                Reply::Int(n) => n,
                ref other => panic!("not a version: {other:?}"),
            };
            (val, version)
        }
        other => panic!("not an array: {other:?}"),
    }
}

#[tokio::test]
async fn after_a_storage_failure_reads_are_refused_too() {
    let fs = SmallFs::mount("4m");
    let data = fs.dir.join("data");
    let config = StoreConfig { data_dir: Some(data.clone()), prealloc_after_bytes: None, ..StoreConfig::default() };
    let store = Store::open(config).expect("open");

    let set = store.execute(cmd(&["VALUE.SET", "k", "v1"])).await;
    assert!(set.is_ok(), "{set:?}");
    assert_eq!(value_of(&store.execute(cmd(&["VALUE.GET", "k"])).await), ("v1".to_string(), 1));

    fill(&fs.dir);
    // Writes until the log fails: each is refused, none acknowledged.
    let mut refused = 0;
    for i in 2..200 {
        let v = format!("v{i}-{}", "x".repeat(4096));
        match store.execute(cmd(&["VALUE.SET", "k", &v])).await {
            Ok(r) => panic!("acknowledged on a full file system: {r:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::ReadOnly, "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
    let info: Vec<(String, String)> = store.info();
    assert!(info.iter().any(|(k, _)| k == "storage_failure"), "the log failed: {info:?}");

    // The refused value may sit in memory; no read may show it, nor v1
    // as if nothing had happened: every command is READONLY until restart.
    for args in [&["VALUE.GET", "k"][..], &["COUNTER.GET", "c"], &["LOCK.INFO", "l"], &["IDEM.GET", "i"]] {
        let r = store.execute(cmd(args)).await;
        match r {
            Err(e) => assert_eq!(e.code, ErrorCode::ReadOnly, "{args:?}: {e}"),
            Ok(r) => panic!("{args:?} answered {r:?} after the log failed"),
        }
    }

    // Restart with room again: the acknowledged value is there, the refused ones are not.
    drop(store);
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    let store = Store::open(StoreConfig { data_dir: Some(data), prealloc_after_bytes: None, ..StoreConfig::default() })
        .expect("reopen");
    let (val, version) = value_of(&store.execute(cmd(&["VALUE.GET", "k"])).await);
    assert_eq!((val.as_str(), version), ("v1", 1), "only the acknowledged write survives");
}
