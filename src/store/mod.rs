//! The store: one SQLite file (or a PostgreSQL database) holding jobs, attempts, results, cost
//! records, budget totals and bulks (and, for the embedded backend, the queue itself), and
//! uploaded files: their records, and their bytes too unless a folder keeps those (see
//! [`files`]).
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
pub mod capacity;
mod checkpointer;
mod conn;
pub mod costs;
pub mod dashboard;
pub mod files;
pub mod gauges;
pub mod jobs;
mod postgres;
pub mod processes;
pub mod provider_batches;
pub mod schedules;
mod timings;
mod writer;

pub use batches::{BatchFields, NewBatch, UnfinishedBatch};
pub use bulks::{BulkCancel, BulkResultRow, BulkView, OpenedBulk, ResultsFilter};
pub use capacity::{BucketId, BucketLevel, CellGrant, CellRequest, KeyRest, RestKind};
pub use conn::{Conn, Dialect, Pool};
pub use files::{DeleteOutcome, FileQuery, FileRecord, Upload};
pub use jobs::{
    newly_created, Adopted, AttemptFailure, AttemptOutcome, AttemptRecord, AttemptStart,
    CostRecord, CustomIdReused, InsertOutcome, JobOutcome, JobOwner, JobView, LastAttempt, Orphan,
    Refusal, StartOutcome,
};
pub use processes::{DeploymentReport, HealthReport, ProcessBeat, ProcessSeen};
pub use timings::RunTimes;
pub use writer::{Undo, WriteFuture};

use crate::config::FileBytes;
use crate::{with_conn, with_pool};
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, PgPool, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    /// `url` is shown without its password.
    #[error("cannot connect to the database {url}: {source}")]
    OpenPostgres { url: String, source: sqlx::Error },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(sqlx::Error),
    /// The database cannot take a write now (disk full, read-only, I/O failing, locked by
    /// another process): nothing of the operation was recorded, and a retry once the cause
    /// is gone may succeed. The API answers it with a 503 and `retry-after`.
    #[error("the store cannot record anything now: {reason} ({detail})")]
    Unwritable {
        reason: Unwritable,
        /// SQLite's own message.
        detail: String,
    },
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("cannot read or write the uploaded files' folder: {0}")]
    Files(std::io::Error),
    /// An upload untouched for so long that the sweep removed it before it was kept
    /// ([`Store::sweep_abandoned_uploads`]).
    #[error("upload {0} was idle so long that it was removed before it was complete; upload the file again")]
    UploadSwept(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    CustomIdReused(#[from] jobs::CustomIdReused),
    #[error("bulk {0} was cancelled; it takes no more jobs")]
    BulkCancelled(uuid::Uuid),
}

/// Why the database cannot take a write: the SQLite result codes that say so, not a defect
/// of the operation. Read from the error's primary result code ([`Unwritable::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    /// `SQLITE_FULL`: the disk holding the database (or its write-ahead log) is full.
    DiskFull,
    /// `SQLITE_READONLY`: the database file, or its folder, cannot be written.
    ReadOnly,
    /// `SQLITE_IOERR`, `SQLITE_CANTOPEN`: the file system failed a read or write.
    Io,
    /// `SQLITE_BUSY`, `SQLITE_LOCKED`: another process held the write lock past the busy
    /// timeout.
    Busy,
    /// The database server cannot be reached, or refuses connections now (restarting,
    /// shutting down, no free connection within the pool's timeout).
    Unreachable,
}

impl Unwritable {
    /// The reason `e` says the database cannot take a write, if it says so.
    pub fn of(e: &sqlx::Error) -> Option<Unwritable> {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                return Some(Unwritable::Unreachable)
            }
            sqlx::Error::Database(db) if db.try_downcast_ref::<PgDatabaseError>().is_some() => {
                return Unwritable::of_postgres(db.code()?.as_ref())
            }
            _ => {}
        }
        let code = e.as_database_error()?.code()?;
        // SQLite reports extended result codes; the primary code is the low byte.
        let primary = code.parse::<i32>().ok()? & 0xff;
        match primary {
            13 => Some(Unwritable::DiskFull),
            8 => Some(Unwritable::ReadOnly),
            10 | 14 => Some(Unwritable::Io),
            5 | 6 => Some(Unwritable::Busy),
            _ => None,
        }
    }

    /// The reason a Postgres SQLSTATE says the database cannot take a write: disk full
    /// (`53100`), a read-only transaction or server (`25006`), a lost connection (class `08`)
    /// or a server shutting down or starting (`57P01`…`57P03`).
    fn of_postgres(sqlstate: &str) -> Option<Unwritable> {
        match sqlstate {
            "53100" => Some(Unwritable::DiskFull),
            "25006" => Some(Unwritable::ReadOnly),
            "57P01" | "57P02" | "57P03" => Some(Unwritable::Unreachable),
            code if code.starts_with("08") => Some(Unwritable::Unreachable),
            _ => None,
        }
    }
}

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unwritable::DiskFull => "the disk holding the database is full",
            Unwritable::ReadOnly => "the database is read-only",
            Unwritable::Io => "the file system fails the database's reads or writes",
            Unwritable::Busy => "another process holds the database's write lock",
            Unwritable::Unreachable => "the database cannot be reached",
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match Unwritable::of(&e) {
            Some(reason) => StoreError::Unwritable {
                reason,
                detail: e.to_string(),
            },
            None => StoreError::Sql(e),
        }
    }
}

impl StoreError {
    /// The same error for another caller of a failed grouped commit (`sqlx::Error` is not
    /// `Clone`): its reason kept, its SQLite error as text.
    pub(crate) fn shared(e: &sqlx::Error) -> StoreError {
        match Unwritable::of(e) {
            Some(reason) => StoreError::Unwritable {
                reason,
                detail: e.to_string(),
            },
            None => StoreError::Sql(sqlx::Error::Protocol(e.to_string())),
        }
    }

    /// Why the database cannot take a write, when that is what this error says.
    pub fn unwritable(&self) -> Option<Unwritable> {
        match self {
            StoreError::Unwritable { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Where uploaded files' bytes live (see [`files`]).
    files: FileBytes,
}

/// The backend the store's rows live in.
#[derive(Clone)]
enum Db {
    /// A SQLite file: every write through the one writer, reads on a read-only pool.
    Sqlite {
        read: SqlitePool,
        writer: writer::Writer,
    },
    /// A PostgreSQL server: each write is a transaction of its own on a pooled connection.
    Postgres(PgPool),
}

impl Store {
    /// Opens (creating it if needed) the SQLite file and applies the migrations. Uploaded
    /// files' bytes live beside it, in `<database>.files/`, unless [`Store::with_files`] says
    /// otherwise.
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
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut write_conn)
            .await?;
        sqlx::query(&format!(
            "PRAGMA wal_autocheckpoint = {}; PRAGMA journal_size_limit = {}",
            checkpointer::WRITER_THRESHOLD_PAGES,
            checkpointer::JOURNAL_SIZE_LIMIT,
        ))
        .execute(&mut write_conn)
        .await?;
        let checkpoint_conn = options
            .clone()
            .busy_timeout(checkpointer::BUSY_TIMEOUT)
            .connect()
            .await
            .map_err(open_err)?;

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
            db: Db::Sqlite { read, writer },
            files: FileBytes::Folder(path.with_extension("files")),
        })
    }

    /// Connects to the PostgreSQL database at `url` with at most `connections` connections
    /// and applies its migrations; uploaded files' bytes are kept where `files` says.
    pub async fn open_postgres(
        url: &crate::config::PostgresUrl,
        connections: u32,
        files: FileBytes,
    ) -> Result<Store, StoreError> {
        let pool = postgres::open(url, connections).await?;
        Ok(Store {
            db: Db::Postgres(pool),
            files,
        })
    }

    /// The same store, keeping uploaded files' bytes where `files` says
    /// ([`crate::config::ServerConfig::file_bytes`]).
    pub fn with_files(mut self, files: FileBytes) -> Store {
        self.files = files;
        self
    }

    /// Where this store keeps uploaded files' bytes.
    pub fn file_bytes(&self) -> &FileBytes {
        &self.files
    }

    /// The backend this store runs on.
    pub fn dialect(&self) -> Dialect {
        self.pool().dialect()
    }

    /// Runs `op` inside a transaction and returns its value once that transaction has
    /// committed; an error in `op` rolls back `op` alone. On SQLite the transaction is the
    /// writer's next grouped one; on Postgres, one of `op`'s own.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> WriteFuture<'c, T> + Send + 'static,
    {
        self.write_as(Undo::Savepoint, op).await
    }

    /// [`Store::write`] for an operation whose only write is one statement, and which fails
    /// only when that statement fails: SQLite undoes the statement itself, so the operation
    /// skips the savepoint and its round trips (see [`writer::Undo::ByStatement`]).
    pub async fn write_single<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> WriteFuture<'c, T> + Send + 'static,
    {
        self.write_as(Undo::ByStatement, op).await
    }

    /// [`Store::write`] or [`Store::write_single`], as `undo` says: for a caller that
    /// serves operations of both kinds.
    pub async fn write_as<T, F>(&self, undo: Undo, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> WriteFuture<'c, T> + Send + 'static,
    {
        match &self.db {
            Db::Sqlite { writer, .. } => writer.submit(undo, op).await,
            Db::Postgres(pool) => postgres::write(pool, op).await,
        }
    }

    /// Commits a write of one row, as any operation is committed: `Ok` when the store can
    /// record things now, else why not (disk full, read-only, ...). `GET /readyz` asks it,
    /// because a database that reads well may still refuse every write.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        self.write_single(|mut conn| {
            Box::pin(async move {
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO store_probe (id, written_at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                )
                .bind(now_ms())
                .execute(&mut *c)
                .await
                .map(|_| ()))
            })
        })
        .await
    }

    /// Runs the cheapest read: `Ok` when the store answers reads now.
    pub async fn probe_read(&self) -> Result<(), StoreError> {
        with_pool!(self.pool(), pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// The pool reads run on (see [`with_pool!`]).
    pub fn pool(&self) -> Pool<'_> {
        match &self.db {
            Db::Sqlite { read, .. } => Pool::Sqlite(read),
            Db::Postgres(pool) => Pool::Postgres(pool),
        }
    }

    /// The SQLite read pool, for the parts of Sluice that exist only on SQLite (the embedded
    /// queue) and for tests that read a SQLite store's rows; `None` on Postgres.
    pub fn sqlite_reader(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Sqlite { read, .. } => Some(read),
            Db::Postgres(_) => None,
        }
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
