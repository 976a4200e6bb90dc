//! A small bounded pool of PostgreSQL connections (tokio-postgres), enough
//! for the scenarios: a connection is checked out for one unit of work (a
//! statement or a transaction) and goes back when the guard drops.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use anyhow::Context as _;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, NoTls};

/// At most this many connections per pool (PostgreSQL's default
/// `max_connections` is 100, shared with other test suites).
pub(crate) const PG_CONNS_MAX: usize = 40;

pub(crate) struct PgPool {
    url: String,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A checked-out connection.
pub(crate) struct PgConn<'a> {
    client: Option<Client>,
    pool: &'a PgPool,
    _permit: SemaphorePermit<'a>,
}

impl PgPool {
    pub fn new(url: &str, max_conns: usize) -> PgPool {
        PgPool {
            url: url.to_string(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_conns.clamp(1, PG_CONNS_MAX)),
        }
    }

    pub async fn get(&self) -> anyhow::Result<PgConn<'_>> {
        let permit = self.permits.acquire().await.expect("pool semaphore is never closed");
        let pooled = self.idle.lock().expect("pool mutex").pop();
        let client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => {
                let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
                    .await
                    .with_context(|| format!("connecting to PostgreSQL at {}", self.url))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("postgres connection ended: {e}");
                    }
                });
                client
            }
        };
        Ok(PgConn { client: Some(client), pool: self, _permit: permit })
    }

    /// Runs one statement batch (DDL in particular).
    pub async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        self.get().await?.batch_execute(sql).await.with_context(|| sql.to_string())
    }

    /// One `bigint` from a query returning one row and one column.
    pub async fn count(&self, sql: &str) -> anyhow::Result<u64> {
        let row = self.get().await?.query_one(sql, &[]).await.with_context(|| sql.to_string())?;
        let v: Option<i64> = row.try_get(0)?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }
}

impl Deref for PgConn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl DerefMut for PgConn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for PgConn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                self.pool.idle.lock().expect("pool mutex").push(c);
            }
        }
    }
}
