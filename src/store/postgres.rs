//! The Postgres backend's connection pool and writes: the pool opened and migrated at start,
//! and each write run as a transaction of its own.
//!
//! Unlike SQLite, Postgres takes many writers at once, so there is no single writer here:
//! concurrent writes (from this process and others) are ordered by Postgres' row locks, and
//! every transition stays one guarded statement that applies in exactly one of them.

use super::conn::Conn;
use super::{StoreError, WriteFuture};
use crate::config::PostgresUrl;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// How long a write or read waits for a free connection before failing as `Unwritable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a start keeps trying a server it cannot reach (a server still starting, or
/// restarting beside this process) before it gives up with the error.
const START_RETRY_FOR: Duration = Duration::from_secs(10);

/// Connects to `url`, keeping at most `connections` connections (`[server]
/// database_connections`), and applies `migrations/postgres`. A server that cannot be reached is
/// tried again, with a warning naming it (never its password), for [`START_RETRY_FOR`].
pub(super) async fn open(url: &PostgresUrl, connections: u32) -> Result<PgPool, StoreError> {
    let open_err = |source| StoreError::OpenPostgres {
        url: url.to_string(),
        source,
    };
    let options = PgConnectOptions::from_str(url.expose()).map_err(open_err)?;
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    let pool = loop {
        let connected = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await;
        match connected {
            Ok(pool) => break pool,
            Err(e)
                if super::Unwritable::of(&e) == Some(super::Unwritable::Unreachable)
                    && started.elapsed() + pause < START_RETRY_FOR =>
            {
                tracing::warn!(database = %url, error = %e, retry_in = ?pause, "cannot reach the database; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(open_err(e)),
        }
    };
    // Concurrent starts apply the migrations once: sqlx takes an advisory lock around them.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// Runs `op` in a transaction of its own and commits it; rolls it back when `op` fails.
pub(super) async fn write<T, F>(pool: &PgPool, op: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: for<'c> FnOnce(Conn<'c>) -> WriteFuture<'c, T> + Send + 'static,
{
    let mut tx = pool.begin().await?;
    match op(Conn::Postgres(&mut tx)).await {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // Dropping the transaction would roll it back too, but later, on the pool's
            // return of the connection; rolling back now frees its row locks at once.
            let _ = tx.rollback().await;
            Err(e.into())
        }
    }
}
