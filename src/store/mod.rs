//! The store: one SQLite file holding jobs, attempts, results, cost records, budget totals and
//! bulks (and,
//! for the embedded backend, the queue itself), and beside it a folder of uploaded files.
//!
//! SQLite allows one writer at a time, and a deferred transaction that reads and then writes
//! can fail with `SQLITE_BUSY` without waiting. So every write goes through one writer task
//! ([`writer`]) that owns the only write connection, opens `BEGIN IMMEDIATE` transactions and
//! groups the operations waiting at that moment into one commit. Reads use a separate pool
//! (WAL lets them run beside the writer). The write-ahead log is copied back into the file by
//! a task of its own (`checkpointer`), so no commit waits for that copy.

pub mod batches;
pub mod budgets;
pub mod bulks;
mod checkpointer;
pub mod costs;
pub mod files;
pub mod jobs;
pub mod provider_batches;
pub mod schedules;
mod writer;

pub use batches::{BatchFields, NewBatch, UnfinishedBatch};
pub use bulks::{BulkResultRow, BulkView, OpenedBulk, ResultsFilter};
pub use files::{DeleteOutcome, FileQuery, FileRecord};
pub use jobs::{
    newly_created, AttemptOutcome, AttemptRecord, AttemptStart, CostRecord, CustomIdReused,
    InsertOutcome, JobOutcome, JobView, LastAttempt, StartOutcome,
};
pub use writer::{Undo, WriteFuture};

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("cannot write to the files folder next to the database: {0}")]
    Files(std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    CustomIdReused(#[from] jobs::CustomIdReused),
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    read: SqlitePool,
    writer: writer::Writer,
    /// Where uploaded files' bytes live: `<database>.files/` (see [`files`]).
    files: PathBuf,
    /// The configured budgets: a finished job's cost is charged to the ones it matches in
    /// the same transaction that records it (see [`budgets`]).
    budgets: Arc<crate::budgets::Budgets>,
}

impl Store {
    /// Opens (creating it if needed) the database file and applies the migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable against a process crash in WAL mode; only a power loss can
            // lose the last commits. FULL would fsync every grouped commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);

        let mut write_conn = options.clone().connect().await.map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&mut write_conn).await?;
        sqlx::query(&format!(
            "PRAGMA wal_autocheckpoint = {}",
            checkpointer::WRITER_THRESHOLD_PAGES
        ))
        .execute(&mut write_conn)
        .await?;
        let checkpoint_conn = options.clone().connect().await.map_err(open_err)?;

        let read = SqlitePoolOptions::new()
            .max_connections(8)
            // The default pings each connection before lending it: a round trip to the
            // connection's SQLite thread for nothing, since a connection to a local file does
            // not go stale, and a broken one fails the query itself with the same error.
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await
            .map_err(open_err)?;
        let writer = writer::Writer::spawn(write_conn);
        tokio::spawn(checkpointer::run(checkpoint_conn, writer.downgrade()));
        Ok(Store {
            read,
            writer,
            files: path.with_extension("files"),
            budgets: Arc::default(),
        })
    }

    /// This store charging finished jobs to `budgets` (none until this is called).
    pub fn with_budgets(mut self, budgets: Arc<crate::budgets::Budgets>) -> Store {
        self.budgets = budgets;
        self
    }

    /// The budgets this store charges.
    pub fn budgets(&self) -> &Arc<crate::budgets::Budgets> {
        &self.budgets
    }

    /// Runs `op` inside the writer's next grouped transaction and returns its value once that
    /// transaction has committed. An error in `op` rolls back `op` alone.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        self.writer.submit(writer::Undo::Savepoint, op).await
    }

    /// [`Store::write`] for an operation whose only write is one statement, and which fails
    /// only when that statement fails: SQLite undoes the statement itself, so the operation
    /// skips the savepoint and its round trips (see [`writer::Undo::ByStatement`]).
    pub async fn write_single<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        self.writer.submit(writer::Undo::ByStatement, op).await
    }

    /// [`Store::write`] or [`Store::write_single`], as `undo` says: for a caller that
    /// serves operations of both kinds.
    pub async fn write_as<T, F>(&self, undo: Undo, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        self.writer.submit(undo, op).await
    }

    /// The pool for reads.
    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A stored Unix-milliseconds time.
pub(crate) fn ms_to_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A file name for the database next to a given directory, used by tests and the demo.
pub fn database_in(dir: &Path) -> PathBuf {
    dir.join("sluice.db")
}
