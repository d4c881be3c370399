//! Bulk records: a named set of jobs submitted together from a JSONL file, its progress, cost
//! and results.
//!
//! A bulk is identified for idempotency by its tenant and name (`UNIQUE (tenant, name)`), and
//! its jobs' `custom_id`s are unique within it (a partial unique index), so the same file
//! submitted twice under the same name finds the same bulk and creates no second job for any
//! line (nor for a line changed since: its `custom_id` is a conflict, see
//! [`Store::insert_bulk_jobs`]). Each job keeps its line number in the file, for results in
//! input order. The bulk row also keeps what the OpenAI-compatible batch object will need
//! (`endpoint`, `metadata`, `input_file_id`, timestamps), so a batch can be a view of a bulk.

use super::jobs::{cancel_queued, insert_jobs, CancelScope, NewJob};
use super::{now_ms, Conn, InsertOutcome, Store, StoreError};
use crate::failure::JobFailure;
use crate::job::{Envelope, JobStatus};
use crate::pricing::PicoUsd;
use crate::{with_conn, with_pool};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

/// Opens a bulk, or finds the tenant's bulk of that name and marks it submitting again
/// (unless cancelled). The existing row's columns are named by its table, as Postgres needs.
const OPEN_BULK: &str = "INSERT INTO bulks (id, tenant, name, created_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tenant, name) DO UPDATE SET \
       submitting = CASE WHEN bulks.cancelled_at IS NULL THEN TRUE ELSE bulks.submitting END \
     RETURNING id, cancelled_at";

/// Whether the bulk is cancelled, before jobs are added to it. On Postgres the row is held
/// (`FOR SHARE`) until the jobs are in, so a concurrent [`Store::cancel_bulk`] (which locks
/// it `FOR UPDATE`) either comes first and is seen, or waits and then cancels the new jobs.
const BULK_CANCELLED_SQLITE: &str = "SELECT cancelled_at FROM bulks WHERE id = $1";
const BULK_CANCELLED_POSTGRES: &str = "SELECT cancelled_at FROM bulks WHERE id = $1 FOR SHARE";

/// Postgres only: locks the bulk before [`Store::cancel_bulk`] reads whether it is finished.
const LOCK_BULK: &str = "SELECT 1 FROM bulks WHERE id = $1 AND tenant = $2 FOR UPDATE";

/// A finished job of a bulk, in [`Store::bulk_results`]'s columns, as both backends decode it.
type ResultColumns = (
    String,
    Option<String>,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// What [`Store::open_bulk`] found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedBulk {
    pub id: Uuid,
    /// False when the tenant already had a bulk of this name: that one is being added to.
    pub created: bool,
    /// The existing bulk was cancelled; nothing more may be submitted to it.
    pub cancelled: bool,
}

/// What [`Store::cancel_bulk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkCancel {
    /// The bulk is cancelled (by this call or an earlier one); `jobs` of its queued jobs
    /// were cancelled by this call. Running jobs finish.
    Cancelled { jobs: u64 },
    /// Every line was submitted and every job is final: there is nothing to cancel, and the
    /// bulk was left as it was (it stays `completed`, never relabelled `cancelled`).
    Finished,
}

/// A bulk as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BulkView {
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    /// `submitting` (lines still being recorded), `in_progress`, `completed`, `cancelling`
    /// (cancelled; running jobs are finishing) or `cancelled`.
    pub status: &'static str,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Jobs in the bulk.
    pub total: u64,
    /// Jobs in a final state (succeeded, failed or cancelled).
    pub done: u64,
    pub counts: BulkCounts,
    pub cost: BulkCost,
}

/// Jobs of a bulk by status.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BulkCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// The cost so far: the exact sum of the bulk's cost records.
#[derive(Debug, Clone, Serialize)]
pub struct BulkCost {
    pub amount_usd: String,
    pub amount_pico_usd: i64,
}

/// One finished job of a bulk, as [`Store::bulk_results`] reads it.
#[derive(Debug, Clone)]
pub struct BulkResultRow {
    pub id: Uuid,
    pub custom_id: String,
    pub line: u64,
    pub status: JobStatus,
    /// The `chat.completion` object, as stored (JSON text), for a succeeded job.
    pub response: Option<String>,
    pub error_kind: Option<JobFailure>,
    pub error: Option<String>,
    /// The HTTP status of the job's last attempt, when it got that far.
    pub http_status: Option<u16>,
}

/// Which jobs [`Store::bulk_results`] reads, and in which order.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultsFilter {
    /// In input order (line numbers); otherwise in whatever order is cheapest.
    pub ordered: bool,
    /// Failed and cancelled jobs only.
    pub errors_only: bool,
    /// Succeeded jobs only (a batch's output file; its error file is `errors_only`).
    pub successes_only: bool,
}

fn ms_to_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Store {
    /// Finds the tenant's bulk called `name`, or creates it, and marks it as being submitted.
    pub async fn open_bulk(&self, tenant: &str, name: &str) -> Result<OpenedBulk, StoreError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        let fresh = Uuid::now_v7();
        self.write(move |mut conn| {
            Box::pin(async move {
                let (id, cancelled_at): (String, Option<i64>) =
                    with_conn!(conn, c => sqlx::query_as(OPEN_BULK)
                        .bind(fresh.to_string())
                        .bind(&tenant)
                        .bind(&name)
                        .bind(now_ms())
                        .fetch_one(&mut *c)
                        .await?);
                let id = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
                Ok(OpenedBulk {
                    id,
                    created: id == fresh,
                    cancelled: cancelled_at.is_some(),
                })
            })
        })
        .await
    }

    /// Records jobs of a bulk, each with its line number, in one grouped commit; see
    /// [`Store::insert_jobs`]. A `custom_id` the bulk already holds answers that job:
    /// [`InsertOutcome::Existing`] for the same request, [`InsertOutcome::Conflicting`] for a
    /// different one (neither writes anything). Unlike jobs submitted alone, a conflict does
    /// not refuse the others: a resubmitted file's other lines still go in.
    ///
    /// A cancelled bulk takes no more jobs: the same transaction that would record them
    /// finds the bulk cancelled and records nothing ([`StoreError::BulkCancelled`]), so a
    /// cancel that lands while a submission is under way stops it at its next chunk, never
    /// after a check that the cancel has made stale.
    pub async fn insert_bulk_jobs(
        &self,
        bulk: Uuid,
        jobs: Vec<(u64, Envelope)>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let cancelled: Option<Option<i64>> = with_conn!(conn, c,
                    sql = (BULK_CANCELLED_SQLITE, BULK_CANCELLED_POSTGRES) =>
                    sqlx::query_scalar(sql)
                        .bind(bulk.to_string())
                        .fetch_optional(&mut *c)
                        .await?);
                if matches!(cancelled, Some(Some(_))) {
                    return Ok(None);
                }
                let jobs: Vec<NewJob> = jobs
                    .iter()
                    .map(|(line, envelope)| NewJob {
                        envelope,
                        published: false,
                        bulk: Some((bulk, *line)),
                    })
                    .collect();
                insert_jobs(&mut conn, &jobs).await.map(Some)
            })
        })
        .await?
        .ok_or(StoreError::BulkCancelled(bulk))
    }

    /// Records that a submission to the bulk has recorded and published all its lines.
    pub async fn finish_bulk_submission(&self, bulk: Uuid) -> Result<(), StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                with_conn!(conn, c => sqlx::query(
                    "UPDATE bulks SET submitting = FALSE, submitted_at = $1 WHERE id = $2",
                )
                .bind(now_ms())
                .bind(bulk.to_string())
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(())
            })
        })
        .await
    }

    /// The id of the tenant's bulk called `name`, if it has one.
    pub async fn bulk_named(&self, tenant: &str, name: &str) -> Result<Option<Uuid>, StoreError> {
        let id: Option<String> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT id FROM bulks WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(p)
        .await?);
        id.map(|id| Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(e.into()).into()))
            .transpose()
    }

    /// The bulk with its counts by status and its cost so far, if it belongs to `tenant`.
    pub async fn bulk(&self, tenant: &str, id: Uuid) -> Result<Option<BulkView>, StoreError> {
        type BulkRow = (String, String, bool, i64, Option<i64>, Option<i64>);
        let row: Option<BulkRow> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT name, endpoint, submitting, created_at, submitted_at, cancelled_at \
             FROM bulks WHERE id = $1 AND tenant = $2",
        )
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(p)
        .await?);
        let Some((name, endpoint, submitting, created_at, submitted_at, cancelled_at)) = row else {
            return Ok(None);
        };
        let mut counts = BulkCounts::default();
        let by_status: Vec<(String, i64)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT status, COUNT(*) FROM jobs WHERE bulk_id = $1 \
             GROUP BY status",
        )
        .bind(id.to_string())
        .fetch_all(p)
        .await?);
        for (status, n) in by_status {
            let status: JobStatus = status.parse().map_err(StoreError::Corrupt)?;
            let n = n as u64;
            match status {
                JobStatus::Queued => counts.queued = n,
                JobStatus::Running => counts.running = n,
                JobStatus::Succeeded => counts.succeeded = n,
                JobStatus::Failed => counts.failed = n,
                JobStatus::Cancelled => counts.cancelled = n,
            }
        }
        // Postgres sums BIGINTs as NUMERIC: cast back (exact, or an error past BIGINT).
        let cost: Option<i64> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT CAST(SUM(c.amount_pico_usd) AS BIGINT) FROM jobs j \
             JOIN costs c ON c.job_id = j.id WHERE j.bulk_id = $1",
        )
        .bind(id.to_string())
        .fetch_one(p)
        .await?);
        let cost = PicoUsd(cost.unwrap_or(0));
        let done = counts.succeeded + counts.failed + counts.cancelled;
        let total = done + counts.queued + counts.running;
        let status = match (submitting, cancelled_at.is_some()) {
            (_, true) if done == total => "cancelled",
            (_, true) => "cancelling",
            (true, false) => "submitting",
            (false, false) if done == total => "completed",
            (false, false) => "in_progress",
        };
        Ok(Some(BulkView {
            id,
            name,
            endpoint,
            status,
            created_at: ms_to_time(created_at),
            submitted_at: submitted_at.map(ms_to_time),
            cancelled_at: cancelled_at.map(ms_to_time),
            total,
            done,
            counts,
            cost: BulkCost {
                amount_usd: cost.to_usd_string(),
                amount_pico_usd: cost.0,
            },
        }))
    }

    /// Cancels the bulk: every job of it still queued is cancelled (the same guarded
    /// transition as [`Store::cancel`]) and a submission in progress stops. A finished bulk
    /// (every line submitted, every job final) is left as it is: [`BulkCancel::Finished`].
    /// `None` when the tenant has no such bulk.
    pub async fn cancel_bulk(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<BulkCancel>, StoreError> {
        let tenant = tenant.to_string();
        self.write(move |mut conn| {
            Box::pin(async move {
                // On Postgres the bulk is locked first, so the check below reads the jobs
                // as a concurrent `insert_bulk_jobs` (which holds the row) left them.
                if let Conn::Postgres(c) = conn.reborrow() {
                    sqlx::query(LOCK_BULK)
                        .bind(id.to_string())
                        .bind(&tenant)
                        .execute(&mut *c)
                        .await?;
                }
                let finished: Option<bool> = with_conn!(conn, c => sqlx::query_scalar(
                    "SELECT cancelled_at IS NULL AND submitting = FALSE AND NOT EXISTS \
                     (SELECT 1 FROM jobs WHERE bulk_id = bulks.id \
                      AND status IN ('queued', 'running')) \
                     FROM bulks WHERE id = $1 AND tenant = $2",
                )
                .bind(id.to_string())
                .bind(&tenant)
                .fetch_optional(&mut *c)
                .await?);
                let Some(finished) = finished else {
                    return Ok(None);
                };
                if finished {
                    return Ok(Some(BulkCancel::Finished));
                }
                with_conn!(conn, c => sqlx::query(
                    "UPDATE bulks SET cancelled_at = COALESCE(cancelled_at, $1) WHERE id = $2",
                )
                .bind(now_ms())
                .bind(id.to_string())
                .execute(&mut *c)
                .await?
                .rows_affected());
                let jobs = cancel_queued(&mut conn, &tenant, CancelScope::Bulk(id)).await?;
                Ok(Some(BulkCancel::Cancelled { jobs }))
            })
        })
        .await
    }

    /// The finished jobs of a bulk (queued and running ones are left out), streamed from one
    /// read: memory does not grow with the bulk. The caller checks the bulk is the tenant's.
    pub fn bulk_results(
        &self,
        bulk: Uuid,
        filter: ResultsFilter,
    ) -> BoxStream<'static, Result<BulkResultRow, StoreError>> {
        let statuses = match (filter.errors_only, filter.successes_only) {
            (true, _) => "('failed', 'cancelled')",
            (false, true) => "('succeeded')",
            (false, false) => "('succeeded', 'failed', 'cancelled')",
        };
        let order = if filter.ordered {
            " ORDER BY j.bulk_line, j.id"
        } else {
            ""
        };
        let sql = format!(
            "SELECT j.id, j.custom_id, j.bulk_line, j.status, r.response, j.error_kind, j.error, \
             (SELECT a.http_status FROM attempts a WHERE a.job_id = j.id ORDER BY a.number DESC LIMIT 1) \
             FROM jobs j LEFT JOIN results r ON r.job_id = j.id \
             WHERE j.bulk_id = $1 AND j.status IN {statuses}{order}"
        );
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        // The query's stream borrows the pool; a task owns both (a clone of the backend's
        // pool) and hands rows over a bounded channel, so a slow reader holds the query back
        // instead of filling memory.
        with_pool!(self.pool(), p => {
            let pool = p.clone();
            tokio::spawn(async move {
                let rows = sqlx::query_as::<_, ResultColumns>(&sql)
                    .bind(bulk.to_string())
                    .fetch(&pool);
                forward_results(rows, tx).await;
            })
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed()
    }
}

/// Hands each row of `rows` to `tx`, decoded; stops at the first error (sent on) or when
/// the reader has gone.
async fn forward_results(
    mut rows: impl futures::Stream<Item = Result<ResultColumns, sqlx::Error>> + Unpin,
    tx: tokio::sync::mpsc::Sender<Result<BulkResultRow, StoreError>>,
) {
    while let Some(row) = rows.next().await {
        let item = row.map_err(StoreError::from).and_then(result_row);
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

fn result_row(
    (id, custom_id, line, status, response, error_kind, error, http_status): ResultColumns,
) -> Result<BulkResultRow, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(e);
    Ok(BulkResultRow {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(e.to_string()))?,
        custom_id: custom_id.unwrap_or_default(),
        line: line as u64,
        status: status.parse().map_err(corrupt)?,
        response,
        error_kind: error_kind.map(|name| JobFailure::from_name(&name)),
        error,
        http_status: http_status.map(|s| s as u16),
    })
}
