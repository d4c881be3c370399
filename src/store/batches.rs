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

use super::{now_ms, Conn, Store, StoreError};
use crate::{with_conn, with_pool};
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
    "input_file_id IS NOT NULL AND submitting = TRUE AND failed_at IS NULL AND cancelled_at IS NULL";

/// Postgres only: holds the tenant's file `$1` while `create_batch` records a batch reading
/// it, so a concurrent `delete_file` (which locks it `FOR UPDATE` before looking for such a
/// batch) either deletes it first or sees the batch.
const SHARE_FILE: &str = "SELECT 1 FROM files WHERE id = $1 AND tenant = $2 FOR SHARE";

/// Marks a batch's input file validated, keeping the first time.
const START_BATCH: &str =
    "UPDATE bulks SET in_progress_at = COALESCE(in_progress_at, $1) WHERE id = $2";

/// Marks a batch's input file failed, with its errors; its submission is over.
const FAIL_BATCH: &str =
    "UPDATE bulks SET failed_at = $1, submitting = FALSE, errors = $2 WHERE id = $3";

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
        self.write(move |mut conn| {
            Box::pin(async move {
                // The file's existence is checked in the same transaction as the insert, so a
                // concurrent delete either comes first (no batch) or sees the batch and keeps
                // the file. On Postgres the file's row is held first (see [`SHARE_FILE`]).
                if let Conn::Postgres(c) = conn.reborrow() {
                    sqlx::query(SHARE_FILE)
                        .bind(&batch.input_file_id)
                        .bind(&tenant)
                        .execute(&mut *c)
                        .await?;
                }
                let created = with_conn!(conn, c => sqlx::query(
                    "INSERT INTO bulks (id, tenant, name, endpoint, metadata, input_file_id, \
                     completion_window, expires_at, created_at) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
                     WHERE EXISTS (SELECT 1 FROM files WHERE id = $6 AND tenant = $2)",
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
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(created == 1)
            })
        })
        .await
    }

    /// Every batch whose submission began and has not finished (see [`UNFINISHED_BATCH`]),
    /// oldest first.
    pub async fn unfinished_batches(&self) -> Result<Vec<UnfinishedBatch>, StoreError> {
        let sql = format!(
            "SELECT id, tenant, input_file_id, expires_at FROM bulks \
             WHERE {UNFINISHED_BATCH} ORDER BY id"
        );
        let rows: Vec<(String, String, String, Option<i64>)> =
            with_pool!(self.pool(), p => sqlx::query_as(&sql).fetch_all(p).await?);
        rows.into_iter()
            .map(|(id, tenant, input_file_id, expires_at)| {
                Ok(UnfinishedBatch {
                    id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    tenant,
                    input_file_id,
                    expires_at,
                })
            })
            .collect()
    }

    /// Records that the batch's input file passed validation: its jobs are being submitted.
    /// A resumed submission keeps the first time.
    pub async fn start_batch(&self, id: Uuid) -> Result<(), StoreError> {
        self.set_batch(id, START_BATCH, None).await
    }

    /// Records that the batch's input file failed validation, with OpenAI's `errors.data`.
    pub async fn fail_batch(&self, id: Uuid, errors: serde_json::Value) -> Result<(), StoreError> {
        self.set_batch(id, FAIL_BATCH, Some(errors)).await
    }

    /// Runs `sql` ([`START_BATCH`] or [`FAIL_BATCH`]) on the bulk `id`: the time now, then
    /// `errors` when given, then the id.
    async fn set_batch(
        &self,
        id: Uuid,
        sql: &'static str,
        errors: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                with_conn!(conn, c => {
                    let mut query = sqlx::query(sql).bind(now_ms());
                    if let Some(errors) = &errors {
                        query = query.bind(errors.to_string());
                    }
                    query.bind(id.to_string()).execute(&mut *c).await?.rows_affected()
                });
                Ok(())
            })
        })
        .await
    }

    /// The batch parts of the bulk `id` (the caller has checked it is the tenant's).
    pub async fn batch_fields(&self, id: Uuid) -> Result<BatchFields, StoreError> {
        let id = id.to_string();
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<i64>,
        );
        let row: Option<Row> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT metadata, input_file_id, completion_window, expires_at, in_progress_at, \
             failed_at, errors, (SELECT MAX(finished_at) FROM jobs WHERE bulk_id = b.id) \
             FROM bulks b WHERE id = $1",
        )
        .bind(&id)
        .fetch_optional(p)
        .await?);
        let Some(row) = row else {
            return Ok(BatchFields::default());
        };
        let json = |text: Option<String>| -> Result<Option<serde_json::Value>, StoreError> {
            text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        };
        // Postgres sums BIGINTs as NUMERIC: cast back (exact, or an error past BIGINT).
        let (input, cached, output): (i64, i64, i64) = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(c.input_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(c.cached_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(c.output_tokens), 0) AS BIGINT) \
             FROM jobs j JOIN costs c ON c.job_id = j.id WHERE j.bulk_id = $1",
        )
        .bind(&id)
        .fetch_one(p)
        .await?);
        let (
            metadata,
            input_file_id,
            completion_window,
            expires_at,
            in_progress_at,
            failed_at,
            errors,
            last_finished_at,
        ) = row;
        Ok(BatchFields {
            metadata: json(metadata)?,
            input_file_id,
            completion_window,
            expires_at,
            in_progress_at,
            failed_at,
            errors: json(errors)?,
            last_finished_at,
            input_tokens: input as u64,
            cached_tokens: cached as u64,
            output_tokens: output as u64,
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
        let ids: Vec<String> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT id FROM bulks WHERE tenant = $1 AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(after.map(|a| a.to_string()))
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?);
        ids.iter()
            .map(|id| Uuid::parse_str(id).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }
}
