//! Uploaded files (`POST /v1/files`): their bytes on disk in `<database>.files/`, their
//! record (tenant, name, purpose, size) in the `files` table.
//!
//! Files are kept on disk, not in rows, because they reach 200 MB and are streamed both ways:
//! an upload is written to a temporary file in the same folder and renamed to its id only once
//! complete, then recorded; so a recorded file always has all its bytes, and a crash leaves at
//! most an unrecorded temporary file behind.

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
        let row = sqlx::query(
            "SELECT id, filename, purpose, bytes, created_at FROM files WHERE id = ? AND tenant = ?",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|row| FileRecord {
            id: row.get(0),
            filename: row.get(1),
            purpose: row.get(2),
            bytes: row.get::<i64, _>(3) as u64,
            created_at: row.get(4),
        }))
    }

    /// Where a recorded file's bytes are. Only ids read back from the `files` table may be
    /// passed (they are `file-` and hex digits, so they cannot name another path).
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.files.join(id)
    }
}
