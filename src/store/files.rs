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
use super::{now_ms, Store, StoreError};
use sqlx::Row;
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
        self.write(move |conn| {
            Box::pin(async move {
                let conn = conn.into_sqlite("this operation")?;
                sqlx::query(
                    "INSERT INTO files (id, tenant, filename, purpose, bytes, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&row.id)
                .bind(&tenant)
                .bind(&row.filename)
                .bind(&row.purpose)
                .bind(row.bytes as i64)
                .bind(row.created_at)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(record)
    }

    /// The tenant's file `id`, if it has one by that id.
    pub async fn file(&self, tenant: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_FILE} WHERE id = ? AND tenant = ?"))
            .bind(id)
            .bind(tenant)
            .fetch_optional(self.reader()?)
            .await?;
        Ok(row.as_ref().map(file_record))
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
            "{SELECT_FILE} WHERE tenant = ? AND (? IS NULL OR purpose = ?) \
             AND (? IS NULL OR id {beyond} ?) ORDER BY id {order} LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(&query.purpose)
            .bind(&query.purpose)
            .bind(&query.after)
            .bind(&query.after)
            .bind(query.limit)
            .fetch_all(self.reader()?)
            .await?;
        Ok(rows.iter().map(file_record).collect())
    }

    /// Deletes the tenant's file `id`: its record, then its bytes; unless an unfinished
    /// batch still reads it.
    pub async fn delete_file(&self, tenant: &str, id: &str) -> Result<DeleteOutcome, StoreError> {
        let (tenant, file) = (tenant.to_string(), id.to_string());
        let outcome = self
            .write(move |conn| {
                Box::pin(async move {
                    let conn = conn.into_sqlite("this operation")?;
                    // In the writer's transaction, so no batch can start reading the file
                    // between the check and the delete (`create_batch` checks the file exists
                    // in its own).
                    let reader: Option<String> = sqlx::query_scalar(&format!(
                        "SELECT id FROM bulks WHERE tenant = ? AND input_file_id = ? \
                         AND {UNFINISHED_BATCH} LIMIT 1"
                    ))
                    .bind(&tenant)
                    .bind(&file)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if let Some(batch) = reader {
                        let batch =
                            Uuid::parse_str(&batch).map_err(|e| sqlx::Error::Decode(e.into()))?;
                        return Ok(DeleteOutcome::InUse(batch));
                    }
                    let deleted = sqlx::query("DELETE FROM files WHERE id = ? AND tenant = ?")
                        .bind(&file)
                        .bind(&tenant)
                        .execute(&mut *conn)
                        .await?;
                    Ok(if deleted.rows_affected() == 0 {
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

fn file_record(row: &sqlx::sqlite::SqliteRow) -> FileRecord {
    FileRecord {
        id: row.get(0),
        filename: row.get(1),
        purpose: row.get(2),
        bytes: row.get::<i64, _>(3) as u64,
        created_at: row.get(4),
    }
}
