//! Runs examples/python/claim_in_tx.py (claims and idempotency records inside
//! the application's own transaction, from Python) against the real
//! PostgreSQL and MariaDB, in a virtualenv under target/ that the first run
//! creates and fills from examples/python/requirements.txt.
//!
//! Skipped (with a message) only when there is no `python3`; a failing pip
//! install or a failing step of the example fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use idem_backends::{mysql, postgres};

fn postgres_url() -> String {
    std::env::var("IDEM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn mysql_url() -> String {
    std::env::var("IDEM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_claims_inside_transactions() {
    if !succeeds(Command::new("python3").arg("--version")) {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    // The example expects the schema to be there, as an application would.
    postgres::migrate(&postgres_url()).await.expect("postgres migrate");
    mysql::migrate(&mysql_url()).await.expect("mysql migrate");

    let example = repo_root().join("examples/python");
    let venv = target_dir().join("python-example-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(made.success(), "creating {} failed", venv.display());
    }
    if !succeeds(Command::new(&python).args(["-c", "import psycopg, pymysql"])) {
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(example.join("requirements.txt"))
            .output()
            .expect("pip");
        assert!(out.status.success(), "pip install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(&python)
        .arg(example.join("claim_in_tx.py"))
        .env("IDEM_TEST_POSTGRES_URL", postgres_url())
        .env("IDEM_TEST_MYSQL_URL", mysql_url())
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "the example failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("all steps behaved as described"));
}
