//! Uploaded files (`POST /v1/files`): their bytes on disk in `<database>.files/`, their
//! record (tenant, name, purpose, size) in the `files` table.
//!
//! Files are kept on disk, not in rows, because they reach 200 MB and are streamed both ways:
//! an upload is written to a temporary file in the same folder and renamed to its id only once
//! complete, then recorded; so a recorded file always has all its bytes, and a crash leaves at
//! most an unrecorded temporary file behind.
//!
//! Deleting is the other way round: the row goes first (in a writer transaction that also
//! checks no unfinished batch still reads the file, see [`DeleteOutcome::InUse`]), then the
//! bytes; a crash in between leaves unrecorded bytes, never a record without its bytes.

use super::batches::UNFINISHED_BATCH;
use super::{now_ms, Conn, Store, StoreError};
use crate::{with_conn, with_pool};
use std::path::PathBuf;
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
    /// A new, empty temporary file in the files folder, for an upload to be streamed into.
    pub fn new_upload(&self) -> std::io::Result<tempfile::NamedTempFile> {
        std::fs::create_dir_all(&self.files)?;
        tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(&self.files)
    }

    /// Keeps a complete upload: renames it to a fresh id and records it for `tenant`.
    pub async fn keep_upload(
        &self,
        tenant: &str,
        upload: tempfile::NamedTempFile,
        filename: &str,
        purpose: &str,
        bytes: u64,
    ) -> Result<FileRecord, StoreError> {
        let record = FileRecord {
            id: format!("{FILE_ID_PREFIX}{}", Uuid::now_v7().simple()),
            filename: filename.to_string(),
            purpose: purpose.to_string(),
            bytes,
            created_at: now_ms(),
        };
        upload
            .persist(self.file_path(&record.id))
            .map_err(|e| StoreError::Files(e.error))?;
        let (tenant, row) = (tenant.to_string(), record.clone());
        self.write(move |mut conn| {
            Box::pin(async move {
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO files (id, tenant, filename, purpose, bytes, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&row.id)
                .bind(&tenant)
                .bind(&row.filename)
                .bind(&row.purpose)
                .bind(row.bytes as i64)
                .bind(row.created_at)
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(())
            })
        })
        .await?;
        Ok(record)
    }

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
                    Ok(if deleted == 0 {
                        DeleteOutcome::NotFound
                    } else {
                        DeleteOutcome::Deleted
                    })
                })
            })
            .await?;
        if outcome == DeleteOutcome::Deleted {
            let path = self.file_path(id);
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

    /// Where a recorded file's bytes are. Only ids read back from the `files` table may be
    /// passed (they are `file-` and hex digits, so they cannot name another path).
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.files.join(id)
    }
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
