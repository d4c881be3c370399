//! Provider batches in the store: which batch-tier job sits in which provider batch, and where
//! each batch stands (see [`crate::batch`] for the life of a batch).
//!
//! The store is the batch tier's only memory. A job's queue message is acked once
//! [`Store::add_to_batch`] has committed its `batch_items` row, and every later step reads and
//! writes state here, so a process killed at any point resumes every batch where it was.
//!
//! Two guards keep a job from being answered or charged twice:
//! - an item's `state`: only a `pending` item may take a result; returning a job to the
//!   real-time tier (`returned`) or cancelling it (`cancelled`) moves it out of `pending` in
//!   the same transaction as the job's own transition, so a late result is dropped;
//! - the job's status, as everywhere ([`super::jobs::succeed_job`] only moves `running`).
//!
//! A batch is worked on by one process at a time: every step first takes the batch's lease
//! (`lease_until`), so two worker processes never submit the same batch twice.
//! On Postgres, where several processes share the store, leases are taken with `FOR UPDATE
//! SKIP LOCKED` and a placement locks its job and the open batch first (see each operation).

use super::jobs::{exhausted, fail_job, insert_attempt, interrupt_attempts};
use super::{now_ms, Conn, Store, StoreError};
use crate::job::{ChatRequest, Urgency};
use crate::store::AttemptRecord;
use crate::{with_conn, with_pool};
use sqlx::Row;
use uuid::Uuid;

/// A job joining a provider batch.
#[derive(Debug, Clone)]
pub struct NewBatchItem {
    pub job: Uuid,
    pub deployment: String,
    /// The deployment's key ids: a new batch takes the next one in turn.
    pub key_ids: Vec<String>,
    /// The request's size in the provider's batch format.
    pub bytes: usize,
    pub max_requests: usize,
    pub max_bytes: usize,
    /// How long a batch that is not full waits for more jobs.
    pub max_wait: std::time::Duration,
    /// The job's `max_attempts`: placing it counts an attempt, as a real-time start does.
    pub max_attempts: u32,
    /// The job's effective deadline, Unix ms.
    pub deadline: Option<i64>,
    pub chosen_because: String,
}

/// Where [`Store::add_to_batch`] put a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In this provider batch, as this attempt of the job (also when a redelivered message
    /// finds the job already placed).
    Placed { batch: Uuid, attempt: u32 },
    /// The job is finished or cancelled: nothing to do.
    NotRunnable,
    /// The job had all its `max_attempts` already: it has been failed instead, in the same
    /// transaction, with why (as [`Store::start_attempt`] does).
    Exhausted { attempts: u32 },
}

/// What a batch is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Open: jobs are joining it.
    Collecting,
    /// Closed (full, or its wait is over): to be sent to the provider.
    Submitting,
    /// With the provider: to be polled.
    Submitted,
    Ended,
    Failed,
    Cancelled,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Collecting => "collecting",
            BatchState::Submitting => "submitting",
            BatchState::Submitted => "submitted",
            BatchState::Ended => "ended",
            BatchState::Failed => "failed",
            BatchState::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Result<BatchState, StoreError> {
        Ok(match text {
            "collecting" => BatchState::Collecting,
            "submitting" => BatchState::Submitting,
            "submitted" => BatchState::Submitted,
            "ended" => BatchState::Ended,
            "failed" => BatchState::Failed,
            "cancelled" => BatchState::Cancelled,
            other => return Err(StoreError::Corrupt(format!("batch state \"{other}\""))),
        })
    }
}

/// A provider batch that needs a step now, as [`Store::claim_due_batches`] found it.
#[derive(Debug, Clone)]
pub struct DueBatch {
    pub id: Uuid,
    pub deployment: String,
    pub key_id: String,
    pub state: BatchState,
    pub provider_batch_id: Option<String>,
    pub submit_failures: u32,
    pub submitted_at: Option<i64>,
    /// Items still waiting for an answer.
    pub pending: u64,
    /// The earliest deadline among them, Unix ms.
    pub earliest_deadline: Option<i64>,
}

/// A pending item with what it takes to send it.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub job: Uuid,
    /// The job's tenant and urgency, which its metrics are labelled with.
    pub tenant: String,
    pub urgency: Urgency,
    pub attempt: u32,
    pub request: ChatRequest,
    pub chosen_because: String,
    pub deadline: Option<i64>,
}

/// A provider batch as `GET /v1/jobs/{id}` shows it for a job inside one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchRef {
    pub id: Uuid,
    pub deployment: String,
    pub state: &'static str,
    pub provider_batch_id: Option<String>,
    pub provider_status: Option<String>,
    /// The item's own state: `pending`, `done`, `returned` (went real-time), `cancelled`.
    pub item_state: String,
}

/// The open batch of a deployment, for a placement. On Postgres its row is locked until the
/// placement commits, so a concurrent placement or [`Store::claim_due_batches`] (which closes
/// it) waits, and the batch never takes more than `max_requests` items or closes with an item
/// joining it unseen; a row another transaction closed meanwhile is not returned.
const OPEN_BATCH_SQLITE: &str =
    "SELECT id, requests, bytes, max_requests, max_bytes FROM provider_batches \
     WHERE deployment = $1 AND state = 'collecting' ORDER BY created_at DESC LIMIT 1";
const OPEN_BATCH_POSTGRES: &str =
    "SELECT id, requests, bytes, max_requests, max_bytes FROM provider_batches \
     WHERE deployment = $1 AND state = 'collecting' ORDER BY created_at DESC LIMIT 1 FOR UPDATE";

/// Closes the open batches whose wait is over. On Postgres a batch a placement holds is
/// skipped (the next look closes it), so claiming never waits on a placement and two
/// processes claiming at once never wait on each other.
const CLOSE_EXPIRED_SQLITE: &str =
    "UPDATE provider_batches SET state = 'submitting', next_check_at = $1, updated_at = $1 \
     WHERE state = 'collecting' AND flush_at <= $1";
const CLOSE_EXPIRED_POSTGRES: &str =
    "UPDATE provider_batches SET state = 'submitting', next_check_at = $1, updated_at = $1 \
     WHERE id IN (SELECT id FROM provider_batches WHERE state = 'collecting' AND flush_at <= $1 \
        FOR UPDATE SKIP LOCKED)";

/// Leases the batches due a step. On Postgres the batches are picked with `FOR UPDATE SKIP
/// LOCKED`: a batch another process is leasing at the same moment is left to it, so of two
/// processes exactly one gets each lease (a plain subquery would let both: Postgres re-checks
/// the outer `WHERE` of a row it waited for, not the subquery's lease condition).
const LEASE_DUE_SQLITE: &str = "UPDATE provider_batches SET lease_until = $1 \
     WHERE id IN (SELECT id FROM provider_batches \
        WHERE state IN ('submitting', 'submitted') AND next_check_at <= $2 \
        AND (lease_until IS NULL OR lease_until < $2) ORDER BY next_check_at LIMIT $3) \
     RETURNING id, deployment, key_id, state, provider_batch_id, submit_failures, submitted_at, \
        (SELECT COUNT(*) FROM batch_items i WHERE i.batch_id = provider_batches.id AND i.state = 'pending'), \
        (SELECT MIN(deadline) FROM batch_items i WHERE i.batch_id = provider_batches.id AND i.state = 'pending')";
const LEASE_DUE_POSTGRES: &str = "UPDATE provider_batches SET lease_until = $1 \
     WHERE id IN (SELECT id FROM provider_batches \
        WHERE state IN ('submitting', 'submitted') AND next_check_at <= $2 \
        AND (lease_until IS NULL OR lease_until < $2) ORDER BY next_check_at LIMIT $3 \
        FOR UPDATE SKIP LOCKED) \
     RETURNING id, deployment, key_id, state, provider_batch_id, submit_failures, submitted_at, \
        (SELECT COUNT(*) FROM batch_items i WHERE i.batch_id = provider_batches.id AND i.state = 'pending'), \
        (SELECT MIN(deadline) FROM batch_items i WHERE i.batch_id = provider_batches.id AND i.state = 'pending')";

/// A leased batch as [`LEASE_DUE_SQLITE`] returns it.
type DueRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    Option<i64>,
);

impl Store {
    /// Puts a job into the open provider batch of `item.deployment` (opening one when there
    /// is none or the open one has no room) and counts the attempt, all in one transaction.
    /// A batch that is full once the job is in is closed for submission. A job that has had
    /// its `max_attempts` is failed instead, so it never reaches a provider more often.
    ///
    /// On Postgres the job's row is locked first, so two deliveries of one job placed at
    /// once by two processes end as one placement, and placements into one deployment's
    /// batches take turns (see [`lock_deployment`]).
    pub async fn add_to_batch(&self, item: NewBatchItem) -> Result<Placement, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let job = item.job.to_string();
                lock_job(&mut conn, &job).await?;
                // A redelivery of a message whose job is already placed: the first placement
                // stands.
                let placed: Option<(String, i64)> = with_conn!(conn, c => sqlx::query_as(
                    "SELECT batch_id, attempt FROM batch_items WHERE job_id = $1",
                )
                .bind(&job)
                .fetch_optional(&mut *c)
                .await?);
                if let Some((batch, attempt)) = placed {
                    return Ok(Placement::Placed {
                        batch: parse_uuid(batch)?,
                        attempt: attempt as u32,
                    });
                }
                let now = now_ms();
                // An attempt a crash cut short is over: this one takes the job on.
                interrupt_attempts(&mut conn, &job, now).await?;
                let started: Option<i64> = with_conn!(conn, c => sqlx::query_scalar(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = $1 \
                     WHERE id = $2 AND status IN ('queued', 'running') AND attempts < $3 \
                     RETURNING attempts",
                )
                .bind(now)
                .bind(&job)
                .bind(i64::from(item.max_attempts))
                .fetch_optional(&mut *c)
                .await?);
                let Some(started) = started else {
                    let attempts: Option<i64> = with_conn!(conn, c => sqlx::query_scalar(
                        "SELECT attempts FROM jobs WHERE id = $1",
                    )
                    .bind(&job)
                    .fetch_optional(&mut *c)
                    .await?);
                    let attempts = attempts.unwrap_or_default() as u32;
                    let (kind, message) =
                        exhausted(&mut conn, &job, attempts, item.max_attempts).await?;
                    // A final job is left as it is (`fail_job` is guarded): nothing to do.
                    return Ok(
                        if fail_job(&mut conn, item.job, None, kind, &message, None).await? {
                            Placement::Exhausted { attempts }
                        } else {
                            Placement::NotRunnable
                        },
                    );
                };
                let attempt = started as u32;

                lock_deployment(&mut conn, &item.deployment).await?;
                let open: Option<(String, i64, i64, i64, i64)> = with_conn!(conn, c,
                    sql = (OPEN_BATCH_SQLITE, OPEN_BATCH_POSTGRES) => sqlx::query_as(sql)
                    .bind(&item.deployment)
                    .fetch_optional(&mut *c)
                    .await?);
                let batch = match open {
                    Some((id, requests, bytes, max_requests, max_bytes))
                        if requests < max_requests && bytes + item.bytes as i64 <= max_bytes =>
                    {
                        id
                    }
                    other => {
                        if let Some((full, ..)) = other {
                            close_for_submission(&mut conn, &full, now).await?;
                        }
                        open_batch(&mut conn, &item, now).await?
                    }
                };
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO batch_items (job_id, batch_id, attempt, state, deadline, chosen_because, added_at) \
                     VALUES ($1, $2, $3, 'pending', $4, $5, $6)",
                )
                .bind(&job)
                .bind(&batch)
                .bind(attempt as i64)
                .bind(item.deadline)
                .bind(&item.chosen_because)
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected());
                let filled: bool = with_conn!(conn, c => sqlx::query_scalar(
                    "UPDATE provider_batches SET requests = requests + 1, bytes = bytes + $1, updated_at = $2 \
                     WHERE id = $3 RETURNING requests >= max_requests",
                )
                .bind(item.bytes as i64)
                .bind(now)
                .bind(&batch)
                .fetch_one(&mut *c)
                .await?);
                if filled {
                    close_for_submission(&mut conn, &batch, now).await?;
                }
                Ok(Placement::Placed {
                    batch: parse_uuid(batch)?,
                    attempt,
                })
            })
        })
        .await
    }

    /// Takes the lease, for `lease`, of every batch that needs a step now: an open batch whose
    /// wait is over (closed for submission as it is taken), a closed one to submit, a
    /// submitted one due for a poll. Batches another process holds are left alone: of
    /// processes claiming at once, each batch goes to exactly one.
    pub async fn claim_due_batches(
        &self,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<DueBatch>, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let now = now_ms();
                with_conn!(conn, c, sql = (CLOSE_EXPIRED_SQLITE, CLOSE_EXPIRED_POSTGRES) =>
                    sqlx::query(sql).bind(now).execute(&mut *c).await?.rows_affected());
                let rows: Vec<DueRow> = with_conn!(conn, c,
                    sql = (LEASE_DUE_SQLITE, LEASE_DUE_POSTGRES) => sqlx::query_as(sql)
                    .bind(now + lease.as_millis() as i64)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await?);
                let mut due = Vec::with_capacity(rows.len());
                for (
                    id,
                    deployment,
                    key_id,
                    state,
                    provider_batch_id,
                    submit_failures,
                    submitted_at,
                    pending,
                    earliest_deadline,
                ) in rows
                {
                    due.push(DueBatch {
                        id: parse_uuid(id)?,
                        deployment,
                        key_id,
                        state: BatchState::parse(&state)
                            .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
                        provider_batch_id,
                        submit_failures: submit_failures as u32,
                        submitted_at,
                        pending: pending as u64,
                        earliest_deadline,
                    });
                }
                Ok(due)
            })
        })
        .await
    }

    /// The batch's items still waiting for an answer, with their requests.
    pub async fn pending_items(&self, batch: Uuid) -> Result<Vec<PendingItem>, StoreError> {
        type PendingRow = (String, i64, String, String, Option<i64>, String, String);
        let rows: Vec<PendingRow> = with_pool!(self.pool(), p => sqlx::query_as(
                "SELECT i.job_id, i.attempt, j.request, i.chosen_because, i.deadline, j.tenant, j.urgency \
                 FROM batch_items i JOIN jobs j ON j.id = i.job_id \
                 WHERE i.batch_id = $1 AND i.state = 'pending' ORDER BY i.added_at",
            )
            .bind(batch.to_string())
            .fetch_all(p)
            .await?);
        rows.into_iter()
            .map(
                |(job, attempt, request, chosen_because, deadline, tenant, urgency)| {
                    Ok(PendingItem {
                        job: parse_uuid(job).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        tenant,
                        urgency: urgency.parse().map_err(StoreError::Corrupt)?,
                        attempt: attempt as u32,
                        request: serde_json::from_str(&request)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        chosen_because,
                        deadline,
                    })
                },
            )
            .collect()
    }

    /// Marks an answered item `done`: called after the job's own outcome is committed, so a
    /// crash in between only makes the next look find the job final and mark it then.
    pub async fn item_done(&self, job: Uuid) -> Result<(), StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                with_conn!(conn, c => sqlx::query(
                    "UPDATE batch_items SET state = 'done' WHERE job_id = $1 AND state = 'pending'",
                )
                .bind(job.to_string())
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(())
            })
        })
        .await
    }

    /// Sends a pending item's job back to the real-time tier: the item becomes `returned`,
    /// the batch attempt is recorded with why it did not answer, and the job is `queued` and
    /// unpublished again, all at once. The caller publishes it (or the relay does, should the
    /// caller die first). False, writing nothing, when the item was no longer pending.
    ///
    /// The item's guarded update comes first: of two processes returning (or answering) one
    /// item at once, Postgres lets exactly one move it out of `pending`; the other waits for
    /// it, finds it moved, and writes nothing.
    pub async fn return_item(&self, job: Uuid, attempt: AttemptRecord) -> Result<bool, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let returned = with_conn!(conn, c => sqlx::query(
                    "UPDATE batch_items SET state = 'returned' WHERE job_id = $1 AND state = 'pending'",
                )
                .bind(job.to_string())
                .execute(&mut *c)
                .await?
                .rows_affected());
                if returned == 0 {
                    return Ok(false);
                }
                insert_attempt(&mut conn, job, &attempt).await?;
                with_conn!(conn, c => sqlx::query(
                    "UPDATE jobs SET status = 'queued', published = FALSE, updated_at = $1 \
                     WHERE id = $2 AND status = 'running'",
                )
                .bind(now_ms())
                .bind(job.to_string())
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(true)
            })
        })
        .await
    }

    /// The provider accepted the batch: record its id and when to poll it first.
    pub async fn batch_submitted(
        &self,
        id: Uuid,
        provider_batch_id: String,
        next_check_at: i64,
    ) -> Result<(), StoreError> {
        self.update_batch(
            id,
            "UPDATE provider_batches SET state = 'submitted', provider_batch_id = $1, \
             provider_status = NULL, submitted_at = $2, next_check_at = $3, lease_until = NULL, \
             last_error = NULL, updated_at = $2 WHERE id = $4",
            provider_batch_id,
            next_check_at,
        )
        .await
    }

    /// A submission failed and will be tried again at `next_check_at`.
    pub async fn batch_submit_failed(
        &self,
        id: Uuid,
        error: String,
        next_check_at: i64,
    ) -> Result<(), StoreError> {
        self.update_batch(
            id,
            "UPDATE provider_batches SET submit_failures = submit_failures + 1, last_error = $1, \
             next_check_at = $3, lease_until = NULL, updated_at = $2 WHERE id = $4",
            error,
            next_check_at,
        )
        .await
    }

    /// A poll found the batch still running: note what the provider said, look again at
    /// `next_check_at`.
    pub async fn batch_checked(
        &self,
        id: Uuid,
        provider_status: String,
        next_check_at: i64,
    ) -> Result<(), StoreError> {
        self.update_batch(
            id,
            "UPDATE provider_batches SET provider_status = $1, next_check_at = $3, \
             lease_until = NULL, updated_at = $2 WHERE id = $4",
            provider_status,
            next_check_at,
        )
        .await
    }

    /// The batch is over (`Ended`, `Failed` or `Cancelled`): every item has been dealt with.
    pub async fn batch_finished(
        &self,
        id: Uuid,
        state: BatchState,
        provider_status: Option<String>,
    ) -> Result<(), StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let now = now_ms();
                with_conn!(conn, c => sqlx::query(
                    "UPDATE provider_batches SET state = $1, provider_status = COALESCE($2, provider_status), \
                     ended_at = $3, lease_until = NULL, updated_at = $4 WHERE id = $5",
                )
                .bind(state.as_str())
                .bind(&provider_status)
                .bind(now)
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(())
            })
        })
        .await
    }

    async fn update_batch(
        &self,
        id: Uuid,
        sql: &'static str,
        text: String,
        next_check_at: i64,
    ) -> Result<(), StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let now = now_ms();
                with_conn!(conn, c => sqlx::query(sql)
                    .bind(&text)
                    .bind(now)
                    .bind(next_check_at)
                    .bind(id.to_string())
                    .execute(&mut *c)
                    .await?
                    .rows_affected());
                Ok(())
            })
        })
        .await
    }
}

/// The columns [`batch_ref_of`] reads, for a query over `jobs` joined (LEFT) with
/// `batch_items i` and `provider_batches b`.
pub(super) const BATCH_REF_COLUMNS: &str =
    "b.id, b.deployment, b.state, b.provider_batch_id, b.provider_status, i.state";

/// The provider batch a job was sent to, from [`BATCH_REF_COLUMNS`] starting at column
/// `first` of a row of either backend; `None` for a job that never went to the batch tier.
pub(super) fn batch_ref_of<R: Row>(row: &R, first: usize) -> Result<Option<BatchRef>, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let Some(id) = row.get::<Option<String>, _>(first) else {
        return Ok(None);
    };
    Ok(Some(BatchRef {
        id: parse_uuid(id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        deployment: row.get(first + 1),
        state: BatchState::parse(&row.get::<String, _>(first + 2))?.as_str(),
        provider_batch_id: row.get(first + 3),
        provider_status: row.get(first + 4),
        item_state: row.get(first + 5),
    }))
}

/// On Postgres, locks the job's row until the write commits: a step that reads the job's
/// batch item or attempts and then writes them sees no concurrent process change them in
/// between. SQLite's single writer already runs such steps one at a time.
async fn lock_job(conn: &mut Conn<'_>, job: &str) -> Result<(), sqlx::Error> {
    if let Conn::Postgres(c) = conn.reborrow() {
        sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(job)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// On Postgres, makes placements into `deployment`'s batches take turns until the write
/// commits (a transaction-level advisory lock on the deployment's name), so two processes
/// finding no open batch at once do not both open one. SQLite's single writer already does.
async fn lock_deployment(conn: &mut Conn<'_>, deployment: &str) -> Result<(), sqlx::Error> {
    if let Conn::Postgres(c) = conn.reborrow() {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(PLACEMENT_LOCK_CLASS)
            .bind(deployment)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// The first key of [`lock_deployment`]'s advisory locks (the second is the deployment's
/// name hashed): the class of locks that stand for "placing into this deployment's batches".
const PLACEMENT_LOCK_CLASS: i32 = 0x5b_a7_c4;

/// Opens a new batch for the item's deployment, on the deployment's next key in turn.
async fn open_batch(
    conn: &mut Conn<'_>,
    item: &NewBatchItem,
    now: i64,
) -> Result<String, sqlx::Error> {
    let opened: i64 = with_conn!(conn, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM provider_batches WHERE deployment = $1",
    )
    .bind(&item.deployment)
    .fetch_one(&mut *c)
    .await?);
    let key = item
        .key_ids
        .get(opened as usize % item.key_ids.len().max(1))
        .cloned()
        .unwrap_or_default();
    let id = Uuid::now_v7().to_string();
    let flush_at = now + item.max_wait.as_millis() as i64;
    with_conn!(conn, c => sqlx::query(
        "INSERT INTO provider_batches (id, deployment, key_id, state, max_requests, max_bytes, \
         flush_at, next_check_at, created_at, updated_at) \
         VALUES ($1, $2, $3, 'collecting', $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&item.deployment)
    .bind(&key)
    .bind(item.max_requests as i64)
    .bind(item.max_bytes as i64)
    .bind(flush_at)
    .bind(flush_at)
    .bind(now)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(id)
}

async fn close_for_submission(
    conn: &mut Conn<'_>,
    batch: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    with_conn!(conn, c => sqlx::query(
        "UPDATE provider_batches SET state = 'submitting', next_check_at = $1, updated_at = $1 \
         WHERE id = $2 AND state = 'collecting'",
    )
    .bind(now)
    .bind(batch)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

fn parse_uuid(text: String) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ChatRequest, Envelope, JobSpec, JobStatus, Urgency};

    fn envelope() -> Envelope {
        let request: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "fast", "messages": [{"role": "user", "content": "hi"}],
        }))
        .unwrap();
        Envelope::new("acme", JobSpec::new(Urgency::Batch, request))
    }

    fn item(job: Uuid, max_attempts: u32) -> NewBatchItem {
        NewBatchItem {
            job,
            deployment: "mini".into(),
            key_ids: vec!["k1".into()],
            bytes: 10,
            max_requests: 10,
            max_bytes: 1000,
            max_wait: std::time::Duration::from_secs(60),
            deadline: None,
            chosen_because: "batch tier: no deadline".into(),
            max_attempts,
        }
    }

    /// Placing a job counts an attempt, so a job that has had its `max_attempts` (a
    /// delivery that read its count before another attempt started) is failed, not placed.
    #[tokio::test]
    async fn a_job_that_had_its_max_attempts_is_failed_not_placed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let (spent, fresh) = (envelope(), envelope());
        for job in [&spent, &fresh] {
            store.insert_job(job, true).await.unwrap();
        }
        let id = spent.id.to_string();
        store
            .write(move |mut conn| {
                Box::pin(async move {
                    with_conn!(conn, c => sqlx::query("UPDATE jobs SET attempts = 2 WHERE id = $1")
                        .bind(id)
                        .execute(&mut *c)
                        .await?
                        .rows_affected());
                    Ok(())
                })
            })
            .await
            .unwrap();
        assert_eq!(
            store.add_to_batch(item(spent.id, 2)).await.unwrap(),
            Placement::Exhausted { attempts: 2 }
        );
        assert_eq!(
            store.progress(spent.id).await.unwrap(),
            Some((JobStatus::Failed, 2))
        );
        let placed = store.add_to_batch(item(fresh.id, 2)).await.unwrap();
        assert!(
            matches!(placed, Placement::Placed { attempt: 1, .. }),
            "{placed:?}"
        );
    }
}
