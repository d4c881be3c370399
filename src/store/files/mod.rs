//! Uploaded files (`POST /v1/files`): their record (tenant, name, purpose, size) in the
//! `files` table, their bytes where [`FileBytes`] says, resolved once from the configuration:
//! in a folder (the default beside a SQLite file, `<database>.files/`), or in the store itself
//! in chunks ([`chunks`], the default with PostgreSQL, so any process on any machine reads
//! them). Either way they are streamed in ([`upload`]) and out ([`Store::file_content`]),
//! never held whole: files reach 200 MB.
//!
//! A file is recorded only once all its bytes are written, so a recorded file always has
//! them; a half-written upload is never listed or read, and what it leaves is removed when
//! it is dropped or by [`Store::sweep_abandoned_uploads`].
//!
//! Deleting is the other way round: the row goes first (in a write transaction that also
//! checks no unfinished batch still reads the file, see [`DeleteOutcome::InUse`]), with its
//! chunks in that same transaction; bytes in a folder go after it, so a crash in between
//! leaves unrecorded bytes, never a record without its bytes.

pub mod chunks;
pub mod upload;

pub use upload::Upload;

use super::batches::UNFINISHED_BATCH;
use super::{now_ms, Conn, Store, StoreError};
use crate::config::FileBytes;
use crate::{with_conn, with_pool};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// A stored file, as the `files` table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// `file-` and 32 hex digits.
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: u64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The prefix of every file id.
pub const FILE_ID_PREFIX: &str = "file-";

/// Which of a tenant's files [`Store::files`] reads: OpenAI's list parameters.
#[derive(Debug, Clone, Default)]
pub struct FileQuery {
    /// Only files of this purpose.
    pub purpose: Option<String>,
    /// A file id: only files after it in the chosen order (the page cursor).
    pub after: Option<String>,
    /// Oldest first; otherwise newest first.
    pub ascending: bool,
    pub limit: u32,
}

/// What [`Store::delete_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// The tenant has no file by that id.
    NotFound,
    /// The input file of this batch, whose submission has not finished: a restarted server
    /// reads the file again to resume it (see `api::batches::resume`), so it is kept.
    InUse(Uuid),
}

impl Store {
    /// The tenant's file `id`, if it has one by that id.
    pub async fn file(&self, tenant: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let sql = format!("{SELECT_FILE} WHERE id = $1 AND tenant = $2");
        let row: Option<FileRow> = with_pool!(self.pool(), p => sqlx::query_as(&sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(p)
            .await?);
        Ok(row.map(file_record))
    }

    /// The tenant's files that `query` asks for, in id order (UUIDv7: creation order).
    pub async fn files(
        &self,
        tenant: &str,
        query: &FileQuery,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let (beyond, order) = if query.ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let sql = format!(
            "{SELECT_FILE} WHERE tenant = $1 AND ($2 IS NULL OR purpose = $2) \
             AND ($3 IS NULL OR id {beyond} $3) ORDER BY id {order} LIMIT $4"
        );
        let rows: Vec<FileRow> = with_pool!(self.pool(), p => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(&query.purpose)
            .bind(&query.after)
            .bind(i64::from(query.limit))
            .fetch_all(p)
            .await?);
        Ok(rows.into_iter().map(file_record).collect())
    }

    /// Deletes the tenant's file `id`: its record, then its bytes; unless an unfinished
    /// batch still reads it.
    pub async fn delete_file(&self, tenant: &str, id: &str) -> Result<DeleteOutcome, StoreError> {
        let (tenant, file) = (tenant.to_string(), id.to_string());
        let outcome = self
            .write(move |mut conn| {
                Box::pin(async move {
                    // In the write's transaction, so no batch can start reading the file
                    // between the check and the delete (`create_batch` checks the file exists
                    // in its own). On SQLite the single writer orders the two; on Postgres
                    // the file's row is locked first, and `create_batch` locks it too
                    // (`FOR SHARE`): whichever comes second sees what the first committed.
                    if let Conn::Postgres(c) = conn.reborrow() {
                        sqlx::query(LOCK_FILE)
                            .bind(&file)
                            .bind(&tenant)
                            .execute(&mut *c)
                            .await?;
                    }
                    let sql = format!(
                        "SELECT id FROM bulks WHERE tenant = $1 AND input_file_id = $2 \
                         AND {UNFINISHED_BATCH} LIMIT 1"
                    );
                    let reader: Option<String> = with_conn!(conn, c => sqlx::query_scalar(&sql)
                        .bind(&tenant)
                        .bind(&file)
                        .fetch_optional(&mut *c)
                        .await?);
                    if let Some(batch) = reader {
                        let batch =
                            Uuid::parse_str(&batch).map_err(|e| sqlx::Error::Decode(e.into()))?;
                        return Ok(DeleteOutcome::InUse(batch));
                    }
                    let deleted = with_conn!(conn, c => sqlx::query(
                        "DELETE FROM files WHERE id = $1 AND tenant = $2",
                    )
                    .bind(&file)
                    .bind(&tenant)
                    .execute(&mut *c)
                    .await?
                    .rows_affected());
                    if deleted == 0 {
                        return Ok(DeleteOutcome::NotFound);
                    }
                    chunks::delete(conn, &file).await?;
                    Ok(DeleteOutcome::Deleted)
                })
            })
            .await?;
        if let (DeleteOutcome::Deleted, Some(path)) = (&outcome, self.file_path(id)) {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // The record is gone, so the file is deleted for every reader; the bytes
                // left behind only take disk space.
                Err(e) => tracing::warn!(
                    path = %path.display(), error = %e,
                    "a deleted file's bytes could not be removed"
                ),
            }
        }
        Ok(outcome)
    }

    /// The bytes of a recorded file, streamed from where they are kept: a chunk at a time
    /// from the store, or read from its folder. Ends with an error if they are shorter than
    /// the record says (a file deleted while it was read).
    pub fn file_content(&self, record: &FileRecord) -> BoxStream<'static, std::io::Result<Bytes>> {
        let (id, expected) = (record.id.clone(), record.bytes);
        match self.file_path(&id) {
            Some(path) => futures::stream::once(tokio::fs::File::open(path))
                .map_ok(|file| tokio_util::io::ReaderStream::with_capacity(file, 256 << 10))
                .try_flatten()
                .boxed(),
            None => {
                let store = self.clone();
                futures::stream::try_unfold((0i64, 0u64), move |(seq, read)| {
                    let (store, id) = (store.clone(), id.clone());
                    async move {
                        match chunks::read(&store, &id, seq)
                            .await
                            .map_err(std::io::Error::other)?
                        {
                            Some(chunk) => {
                                let read = read + chunk.len() as u64;
                                Ok(Some((chunk, (seq + 1, read))))
                            }
                            None if read == expected => Ok(None),
                            None => Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!(
                                    "file {id} has {read} of its {expected} bytes in the store \
                                     (deleted while read, or uploaded while files were kept in \
                                     a folder)"
                                ),
                            )),
                        }
                    }
                })
                .boxed()
            }
        }
    }

    /// Removes what uploads that never finished left behind (a killed process's, or one whose
    /// removal failed) once untouched for `idle`: their chunks in the store, and temporary
    /// files in the files folder. Returns how many uploads were removed. `App::serve` runs it
    /// at start and every hour (with [`ABANDONED_AFTER`]); an upload still being written is
    /// touched by each chunk and so never idle that long.
    pub async fn sweep_abandoned_uploads(&self, idle: Duration) -> Result<u64, StoreError> {
        let before = now_ms() - i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        // Always, whatever `FileBytes` says now: a store once run without a folder may have some.
        let mut swept = chunks::sweep(self, before).await?;
        if let FileBytes::Folder(folder) = &self.files {
            swept += sweep_folder(folder, idle)
                .await
                .map_err(StoreError::Files)?;
        }
        Ok(swept)
    }

    /// Where a recorded file's bytes are, when they are kept in a folder. Only ids read back
    /// from the `files` table may be passed (they are `file-` and hex digits, so they cannot
    /// name another path).
    pub fn file_path(&self, id: &str) -> Option<PathBuf> {
        match &self.files {
            FileBytes::Folder(folder) => Some(folder.join(id)),
            FileBytes::Store => None,
        }
    }
}

/// How long an upload may go untouched before the sweep takes it for abandoned: far longer
/// than a client pauses between the parts of one upload.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Removes the temporary upload files in `folder` last written over `idle` ago.
async fn sweep_folder(folder: &std::path::Path, idle: Duration) -> std::io::Result<u64> {
    let mut entries = match tokio::fs::read_dir(folder).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut swept = 0;
    while let Some(entry) = entries.next_entry().await? {
        let temporary = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(upload::TEMPORARY_PREFIX));
        if !temporary {
            continue;
        }
        let written = entry.metadata().await?.modified()?;
        if written.elapsed().unwrap_or_default() >= idle {
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => swept += 1,
                // Kept or removed by its own process meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(swept)
}

/// Records the tenant's file `record`, in the caller's transaction.
async fn insert_file(
    mut conn: Conn<'_>,
    tenant: &str,
    record: &FileRecord,
) -> Result<(), sqlx::Error> {
    with_conn!(conn, c => sqlx::query(
        "INSERT INTO files (id, tenant, filename, purpose, bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&record.id)
    .bind(tenant)
    .bind(&record.filename)
    .bind(&record.purpose)
    .bind(record.bytes as i64)
    .bind(record.created_at)
    .execute(&mut *c)
    .await
    .map(|_| ()))
}

const SELECT_FILE: &str = "SELECT id, filename, purpose, bytes, created_at FROM files";

/// [`SELECT_FILE`]'s columns, as both backends decode them.
type FileRow = (String, String, String, i64, i64);

/// Postgres only: locks the tenant's file `$1` before `delete_file` checks no batch reads it
/// (`create_batch` takes the same row `FOR SHARE`).
const LOCK_FILE: &str = "SELECT 1 FROM files WHERE id = $1 AND tenant = $2 FOR UPDATE";

fn file_record((id, filename, purpose, bytes, created_at): FileRow) -> FileRecord {
    FileRecord {
        id,
        filename,
        purpose,
        bytes: bytes as u64,
        created_at,
    }
}
