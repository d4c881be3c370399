//! What OpenAI's batch object needs of a bulk beyond its jobs (see `api::batches`): the
//! create request's fields, the validation outcome (`in_progress_at`, or `failed_at` with the
//! bad lines), and the times and token sums read from its jobs and cost records.
//!
//! These are columns of the `bulks` row (migration 0007), not a table of their own, because a
//! batch *is* a bulk: every bulk can be read as a batch, whichever way it was submitted.
//!
//! A batch's submission has finished when its bulk's `submitting` is 0: set when every line
//! of the input file is recorded and published, or when the file failed validation. A batch
//! still `submitting`, neither failed nor cancelled, is [`UNFINISHED_BATCH`]: a server
//! starting up resumes it from its input file ([`Store::unfinished_batches`]).

use super::{now_ms, Store, StoreError};
use sqlx::Row;
use uuid::Uuid;

/// A batch being created: the bulk row recorded before its input file is read.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: Uuid,
    /// The bulk's name (unique per tenant).
    pub name: String,
    pub endpoint: String,
    /// A JSON object.
    pub metadata: Option<serde_json::Value>,
    pub input_file_id: String,
    pub completion_window: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// The SQL condition on a `bulks` row for a batch whose submission began and has not
/// finished: it still needs its input file.
pub(super) const UNFINISHED_BATCH: &str =
    "input_file_id IS NOT NULL AND submitting = 1 AND failed_at IS NULL AND cancelled_at IS NULL";

/// A batch whose submission has not finished, with what resuming it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedBatch {
    pub id: Uuid,
    pub tenant: String,
    pub input_file_id: String,
    /// The jobs' deadline, Unix milliseconds.
    pub expires_at: Option<i64>,
}

/// The batch parts of a bulk row, and sums over its jobs.
#[derive(Debug, Clone, Default)]
pub struct BatchFields {
    pub metadata: Option<serde_json::Value>,
    pub input_file_id: Option<String>,
    pub completion_window: Option<String>,
    /// Unix milliseconds, as every time here.
    pub expires_at: Option<i64>,
    pub in_progress_at: Option<i64>,
    pub failed_at: Option<i64>,
    /// OpenAI's `errors.data` (JSON array), when the input file failed validation.
    pub errors: Option<serde_json::Value>,
    /// When the last of its jobs finished.
    pub last_finished_at: Option<i64>,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
}

impl Store {
    /// Records a batch's bulk, still empty and `submitting`, for `tenant`; false (nothing
    /// recorded) when the tenant no longer has its input file.
    pub async fn create_batch(&self, tenant: &str, batch: NewBatch) -> Result<bool, StoreError> {
        let tenant = tenant.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let conn = conn.into_sqlite("this operation")?;
                // The file's existence is checked in the same transaction as the insert, so a
                // concurrent delete either comes first (no batch) or sees the batch and keeps
                // the file.
                let created = sqlx::query(
                    "INSERT INTO bulks (id, tenant, name, endpoint, metadata, input_file_id, \
                     completion_window, expires_at, created_at) \
                     SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? \
                     WHERE EXISTS (SELECT 1 FROM files WHERE id = ? AND tenant = ?)",
                )
                .bind(batch.id.to_string())
                .bind(&tenant)
                .bind(&batch.name)
                .bind(&batch.endpoint)
                .bind(batch.metadata.as_ref().map(|m| m.to_string()))
                .bind(&batch.input_file_id)
                .bind(&batch.completion_window)
                .bind(batch.expires_at)
                .bind(now_ms())
                .bind(&batch.input_file_id)
                .bind(&tenant)
                .execute(&mut *conn)
                .await?;
                Ok(created.rows_affected() == 1)
            })
        })
        .await
    }

    /// Every batch whose submission began and has not finished (see [`UNFINISHED_BATCH`]),
    /// oldest first.
    pub async fn unfinished_batches(&self) -> Result<Vec<UnfinishedBatch>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT id, tenant, input_file_id, expires_at FROM bulks \
             WHERE {UNFINISHED_BATCH} ORDER BY id"
        ))
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UnfinishedBatch {
                    id: Uuid::parse_str(&row.get::<String, _>(0))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    tenant: row.get(1),
                    input_file_id: row.get(2),
                    expires_at: row.get(3),
                })
            })
            .collect()
    }

    /// Records that the batch's input file passed validation: its jobs are being submitted.
    /// A resumed submission keeps the first time.
    pub async fn start_batch(&self, id: Uuid) -> Result<(), StoreError> {
        self.set_batch(id, "in_progress_at = COALESCE(in_progress_at, ?)", None)
            .await
    }

    /// Records that the batch's input file failed validation, with OpenAI's `errors.data`.
    pub async fn fail_batch(&self, id: Uuid, errors: serde_json::Value) -> Result<(), StoreError> {
        self.set_batch(
            id,
            "failed_at = ?, submitting = 0, errors = ?",
            Some(errors),
        )
        .await
    }

    async fn set_batch(
        &self,
        id: Uuid,
        set: &'static str,
        errors: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let conn = conn.into_sqlite("this operation")?;
                let sql = format!("UPDATE bulks SET {set} WHERE id = ?");
                let mut query = sqlx::query(&sql).bind(now_ms());
                if let Some(errors) = &errors {
                    query = query.bind(errors.to_string());
                }
                query.bind(id.to_string()).execute(&mut *conn).await?;
                Ok(())
            })
        })
        .await
    }

    /// The batch parts of the bulk `id` (the caller has checked it is the tenant's).
    pub async fn batch_fields(&self, id: Uuid) -> Result<BatchFields, StoreError> {
        let id = id.to_string();
        let row = sqlx::query(
            "SELECT metadata, input_file_id, completion_window, expires_at, in_progress_at, \
             failed_at, errors, (SELECT MAX(finished_at) FROM jobs WHERE bulk_id = b.id) \
             FROM bulks b WHERE id = ?",
        )
        .bind(&id)
        .fetch_optional(self.reader()?)
        .await?;
        let Some(row) = row else {
            return Ok(BatchFields::default());
        };
        let json = |text: Option<String>| -> Result<Option<serde_json::Value>, StoreError> {
            text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        };
        let usage = sqlx::query(
            "SELECT COALESCE(SUM(c.input_tokens), 0), COALESCE(SUM(c.cached_tokens), 0), \
             COALESCE(SUM(c.output_tokens), 0) FROM jobs j JOIN costs c ON c.job_id = j.id \
             WHERE j.bulk_id = ?",
        )
        .bind(&id)
        .fetch_one(self.reader()?)
        .await?;
        Ok(BatchFields {
            metadata: json(row.get(0))?,
            input_file_id: row.get(1),
            completion_window: row.get(2),
            expires_at: row.get(3),
            in_progress_at: row.get(4),
            failed_at: row.get(5),
            errors: json(row.get(6))?,
            last_finished_at: row.get(7),
            input_tokens: usage.get::<i64, _>(0) as u64,
            cached_tokens: usage.get::<i64, _>(1) as u64,
            output_tokens: usage.get::<i64, _>(2) as u64,
        })
    }

    /// The tenant's bulks, newest first, after (older than) `after`, at most `limit`.
    pub async fn bulk_ids(
        &self,
        tenant: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        // UUIDv7 ids sort by creation time.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM bulks WHERE tenant = ? AND (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(tenant)
        .bind(after.map(|a| a.to_string()))
        .bind(after.map(|a| a.to_string()))
        .bind(limit)
        .fetch_all(self.reader()?)
        .await?;
        ids.iter()
            .map(|id| Uuid::parse_str(id).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }
}
