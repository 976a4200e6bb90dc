//! What this crate's integration tests share: the database they run against
//! and a plain client connection to it.

use tokio_postgres::{Client, NoTls};

/// `IDEM_TEST_POSTGRES_URL`, or the shared `test` database.
pub fn url() -> String {
    std::env::var("IDEM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A client of its own at `url`, its connection driven by a spawned task.
#[allow(dead_code)] // not every test binary opens a plain client
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("PostgreSQL reachable");
    tokio::spawn(conn);
    client
}
