//! Job records: a job's row, its attempts, its result and its cost.
//!
//! The state machine is enforced here, in SQL, not in the worker: every transition names the
//! states it may start from (`… WHERE status IN (…)`), so a delivery seen twice, a lease that
//! expired under a slow worker, or a cancel racing a finish cannot produce a second result or
//! a second charge. `costs.job_id` is UNIQUE as a last line of defence.

use super::provider_batches::{batch_ref_of, BATCH_REF_COLUMNS};
use super::{budgets, ms_to_time, now_ms, Store, StoreError};
use crate::failure::JobFailure;
use crate::job::{Envelope, JobStatus, Tags, Urgency};
use crate::pricing::{MicrosPerMillion, PicoUsd, Price};
use crate::providers::Usage;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

/// What happened when a job was offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new job row was written.
    Created,
    /// The tenant already has a job with this `custom_id` (or this id): that one stands.
    Existing(Uuid),
    /// The bulk already holds this `custom_id` for a different request: that job stands and
    /// nothing of this one was written. Answering with that job would let the client believe
    /// its changed line runs. Only a bulk's jobs get this; jobs submitted alone are refused
    /// together instead ([`CustomIdReused`]).
    Conflicting(Uuid),
}

/// A `custom_id` (the `idempotency-key` of `/v1/chat/completions`) offered again with a
/// different request. Answering with the first job would hand the client an answer to a
/// question it did not ask, so the second request is refused and nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "custom_id \"{custom_id}\" already names job {existing}, whose request is different; \
     a retry must repeat its request exactly, and a new request needs a new custom_id"
)]
pub struct CustomIdReused {
    pub custom_id: String,
    pub existing: Uuid,
}

/// What [`Store::refuse_unpublished`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every job was refused: none will run, whatever the broker does with their messages.
    Refused,
    /// A worker already has one of them: nothing was refused, the jobs stand (accepted).
    TooLate,
}

/// What [`Store::adopt`] made of a consumed envelope the store had no row for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted {
    /// Recorded now: run it.
    Recorded,
    /// The tenant's job with this `custom_id` (or this id) stands: not run again.
    Existing(Uuid),
    /// Not a job to run, for the reason given.
    Orphan(Orphan),
}

/// A message whose job must not run although the envelope is well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Orphan {
    /// The late message of a job refused at submission (the producer heard a 503).
    #[error(
        "job {0} was refused when it was submitted (the queue did not confirm its message in \
         time, and the producer was told nothing was accepted); this is that message, arriving \
         late, and it is not run"
    )]
    Refused(Uuid),
    /// A message Sluice published for a job it had recorded, but the store has no such job.
    #[error(
        "job {0} was recorded by Sluice before it was published, but this store has no such \
         job (is another Sluice, with another database, using the same queue prefix?); it is \
         not run"
    )]
    Unrecorded(Uuid),
}

/// What [`Store::start_attempt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// The job is now `running`; this is attempt number `n` (1-based).
    Started(u32),
    /// The job is already finished (or cancelled): do not call the provider again.
    AlreadyFinal(JobStatus),
    /// The job had all its `max_attempts` already (the last one, typically, interrupted by a
    /// crash): it has been failed instead, in the same transaction, with why.
    Exhausted { attempts: u32 },
    /// No such job.
    Missing,
}

/// How an attempt ended, or that it has not yet: an attempt is recorded `running` when it
/// starts, so one its worker never finishes (a crash, a kill, a lost connection) stays
/// visible, and becomes `interrupted` when the job is picked up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Started and not finished: at the provider now, or its worker died and the job has
    /// not been picked up since.
    Running,
    /// Its worker stopped before recording the outcome; found when the job was picked up
    /// again (or failed for good).
    Interrupted,
    /// Answered.
    Ok,
    /// Ended with this error: an [`ErrorKind`](crate::providers::ErrorKind)'s name
    /// (`rate_limited`, `server_error`, …), or why a batch item did not answer.
    Failed(String),
}

impl AttemptOutcome {
    /// The word stored in `attempts.outcome` and shown in a job's view.
    pub fn as_str(&self) -> &str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Failed(kind) => kind,
        }
    }

    /// The outcome a stored word means (any other word is an error kind).
    pub fn from_stored(word: &str) -> Self {
        match word {
            "running" => AttemptOutcome::Running,
            "interrupted" => AttemptOutcome::Interrupted,
            "ok" => AttemptOutcome::Ok,
            kind => AttemptOutcome::Failed(kind.to_string()),
        }
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AttemptOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The error kind of a job failed because its attempts were interrupted (its workers
/// stopped mid-call until `max_attempts` or the queue's delivery limit ran out).
pub const INTERRUPTED: JobFailure = JobFailure::Interrupted;

/// What an interrupted attempt's `error` says.
const INTERRUPTED_ATTEMPT: &str = "interrupted: its worker stopped (a crash, a kill, a lost \
     queue connection) before the outcome was recorded; found when the job was picked up again";

/// One attempt, as the worker reports it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub number: u32,
    pub deployment: String,
    pub provider: String,
    pub model: String,
    pub key_id: String,
    pub tier: &'static str,
    pub outcome: AttemptOutcome,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub retry_after_ms: Option<i64>,
    pub started_at: i64,
    pub finished_at: i64,
    /// Why the router sent the attempt where it did (see [`crate::router::Route::choose`]).
    pub chosen_because: Option<String>,
    /// Milliseconds to the first token, when known.
    pub first_token_ms: Option<i64>,
}

/// An attempt about to be made, as [`Store::start_attempt`] records it (`running`): where it
/// goes and why, known before the call.
#[derive(Debug, Clone)]
pub struct AttemptStart {
    pub deployment: String,
    pub provider: String,
    pub model: String,
    pub key_id: String,
    pub tier: &'static str,
    pub started_at: i64,
    pub chosen_because: Option<String>,
}

/// The cost of a successful attempt, with what reports need to explain it.
#[derive(Debug, Clone)]
pub struct CostRecord {
    /// The tier the call was priced at: `realtime`, `batch` or `flex` (a flex call's attempt
    /// says `realtime`, the endpoint it called).
    pub tier: &'static str,
    pub usage: Usage,
    /// The unit prices charged; `None` when the deployment's price is unknown (amount 0,
    /// recorded with `price_known = 0`).
    pub price: Option<Price>,
    pub amount: PicoUsd,
    /// The same usage at the deployment's real-time price (`amount` on the realtime tier);
    /// reports call the difference "batch saved".
    pub realtime_amount: PicoUsd,
    /// The route (model name) the job asked for.
    pub route: String,
    /// For a job answered by a deployment other than its route's primary: the primary, and
    /// what it would have charged for the same usage on the same tier (`None` when its
    /// price is unknown).
    pub fallback_from: Option<(String, Option<PicoUsd>)>,
}

/// The unit prices stored for a deployment whose price is unknown (`price_known = 0`).
const ZERO_PRICE: Price = Price {
    input: MicrosPerMillion(0),
    output: MicrosPerMillion(0),
    cached_input: None,
    cache_write: None,
};

/// A job as the API shows it: its row, the result, every attempt and the cost.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: Uuid,
    pub status: JobStatus,
    pub urgency: Urgency,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    pub tags: Tags,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    pub attempts: Vec<AttemptView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostView>,
    /// The provider batch the job was sent to, if it went to the batch tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<super::provider_batches::BatchRef>,
}

/// What a job came to: see [`Store::job_outcome`].
#[derive(Debug)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub error: Option<JobError>,
    pub last_attempt: Option<LastAttempt>,
    /// The stored answer, when it was asked for and there is one.
    pub answer: Option<Value>,
}

/// How a job's latest attempt ended: why a job still queued or running goes round again.
#[derive(Debug)]
pub struct LastAttempt {
    pub outcome: String,
    pub error: Option<String>,
}

/// A stored answer (`results.response`), read back.
fn stored_answer(response: &str) -> Result<Value, StoreError> {
    serde_json::from_str(response).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Why a failed job failed. Shown as `{"kind", "message", "param"?, "status", "type", "code"}`:
/// the failure's stable name, then what `/v1/chat/completions` answers for it
/// ([`JobFailure::answer`]), so a client polling the job reads the same classification.
#[derive(Debug, Clone)]
pub struct JobError {
    pub kind: JobFailure,
    pub message: String,
    /// The request parameter the provider blamed, when its error named one
    /// ([`crate::providers::ProviderError::param`]): kept with the job so whoever reads the
    /// failure (the waiting `/v1/chat/completions` request, in another process perhaps) can
    /// hand it on in OpenAI's `param`.
    pub param: Option<String>,
}

impl JobError {
    /// A job's error from its columns (`error_kind`, `error`, `error_param`): none unless
    /// both kind and message are set.
    fn stored(
        kind: Option<String>,
        message: Option<String>,
        param: Option<String>,
    ) -> Option<Self> {
        Some(JobError {
            kind: JobFailure::from_name(&kind?),
            message: message?,
            param,
        })
    }
}

impl Serialize for JobError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let answer = self.kind.answer();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", &self.kind)?;
        map.serialize_entry("message", &self.message)?;
        if let Some(param) = &self.param {
            map.serialize_entry("param", param)?;
        }
        map.serialize_entry("status", &answer.status)?;
        map.serialize_entry("type", answer.error_type)?;
        map.serialize_entry("code", answer.code)?;
        map.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub number: u32,
    pub deployment: String,
    pub provider: String,
    pub model: String,
    pub key_id: String,
    pub tier: String,
    pub outcome: AttemptOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<i64>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_because: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CostView {
    pub deployment: String,
    pub tier: String,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    /// USD per million tokens, exact decimal text.
    pub input_price_per_mtok: String,
    pub cached_input_price_per_mtok: String,
    pub output_price_per_mtok: String,
    /// USD, exact decimal text.
    pub amount_usd: String,
    pub amount_pico_usd: i64,
    /// False when the deployment's price is unknown: the amount is 0 because nobody knows
    /// it, not because the call was free.
    pub price_known: bool,
    /// On the batch (or flex) tier: what the same usage would have cost on the default
    /// real-time tier, minus the amount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_saved_usd: Option<String>,
}

impl Store {
    /// Records a new job as `queued`, unless the tenant already has one with the same id or
    /// `custom_id`, in which case that job's id is returned and nothing is written.
    ///
    /// `published` says whether the job's message is already on the queue (a job recorded on
    /// first consume) or is still to be published (see [`Store::mark_published`]).
    pub async fn insert_job(
        &self,
        envelope: &Envelope,
        published: bool,
    ) -> Result<InsertOutcome, StoreError> {
        let envelope = envelope.clone();
        let mut outcomes = self
            .write(move |conn| {
                Box::pin(async move {
                    let job = NewJob {
                        envelope: &envelope,
                        published,
                        bulk: None,
                    };
                    insert_jobs(conn, &[job]).await
                })
            })
            .await?;
        Ok(outcomes.remove(0))
    }

    /// Records many jobs in one grouped commit; see [`Store::insert_job`].
    /// A `custom_id` reused for a different request refuses them all ([`CustomIdReused`]).
    pub async fn insert_jobs(
        &self,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        self.write(move |conn| Box::pin(async move { insert_alone(conn, &envelopes, false).await }))
            .await?
            .map_err(StoreError::CustomIdReused)
    }

    /// Refuses jobs that were recorded but whose messages the queue did not confirm, all or
    /// none: when no worker has touched any of them, their rows are deleted (which frees
    /// their `custom_id`s for the producer's retry) and their ids kept in `refused_jobs`, so
    /// that a message the broker takes late is recognised ([`Store::adopt`]) and never run.
    /// When a worker has already started or reserved one, the broker evidently took the
    /// messages: nothing is refused, and the rows stay for the relay to publish what may
    /// still be missing.
    pub async fn refuse_unpublished(&self, ids: Vec<Uuid>) -> Result<Refusal, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let ids = serde_json::to_string(&ids).expect("ids always serialise");
                let touched: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) \
                     AND (status != 'queued' OR attempts > 0 OR published = 1 OR EXISTS \
                     (SELECT 1 FROM budget_reservations r WHERE r.job_id = jobs.id))",
                )
                .bind(&ids)
                .fetch_one(&mut *conn)
                .await?;
                if touched > 0 {
                    return Ok(Refusal::TooLate);
                }
                sqlx::query(
                    "INSERT INTO refused_jobs (id, refused_at) \
                     SELECT id, ?2 FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&ids)
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
                sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))")
                    .bind(&ids)
                    .execute(&mut *conn)
                    .await?;
                Ok(Refusal::Refused)
            })
        })
        .await
    }

    /// Records a job whose message a worker consumed before the store knew it: a job
    /// published straight onto the exchange (see `docs/envelope.md`). A message of a job
    /// Sluice recorded itself (`envelope.recorded`) is never recorded again from the message,
    /// nor one refused at submission ([`Store::refuse_unpublished`]): those are
    /// [`Adopted::Orphan`], not to be run.
    pub async fn adopt(&self, envelope: &Envelope) -> Result<Adopted, StoreError> {
        let envelope = envelope.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let refused: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM refused_jobs WHERE id = ?")
                        .bind(envelope.id.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                if refused.is_some() {
                    return Ok(Adopted::Orphan(Orphan::Refused(envelope.id)));
                }
                if envelope.recorded {
                    // Its row would have been found; a job whose row is gone stays gone.
                    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
                        .bind(envelope.id.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                    if exists.is_none() {
                        return Ok(Adopted::Orphan(Orphan::Unrecorded(envelope.id)));
                    }
                }
                let job = NewJob {
                    envelope: &envelope,
                    published: true,
                    bulk: None,
                };
                Ok(match insert_jobs(conn, &[job]).await?.remove(0) {
                    InsertOutcome::Created => Adopted::Recorded,
                    InsertOutcome::Existing(id) | InsertOutcome::Conflicting(id) => {
                        Adopted::Existing(id)
                    }
                })
            })
        })
        .await
    }

    /// Records that the queue has confirmed these jobs' messages.
    pub async fn mark_published(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        self.write_single(move |conn| {
            Box::pin(async move {
                execute_for_each(
                    conn,
                    "UPDATE jobs SET published = 1 WHERE id IN (SELECT value FROM json_each(?)) \
                     AND published = 0",
                    &ids,
                )
                .await
            })
        })
        .await
    }

    /// Jobs recorded at least `older_than` ago whose message was never confirmed (a crash
    /// between recording and publishing), with their envelopes, oldest first.
    pub async fn stranded_jobs(
        &self,
        older_than: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let cutoff = now_ms() - older_than.as_millis() as i64;
        let sql = format!(
            "SELECT {ENVELOPE_COLUMNS} FROM jobs WHERE published = 0 AND status = 'queued' \
             AND created_at <= ? ORDER BY created_at LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(envelope_of).collect()
    }

    /// The envelopes of `ids` (those that exist), to publish them again.
    pub async fn envelopes(&self, ids: &[Uuid]) -> Result<Vec<Envelope>, StoreError> {
        let mut envelopes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {ENVELOPE_COLUMNS} FROM jobs WHERE id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(self.reader()).await? {
                envelopes.push(envelope_of(&row)?);
            }
        }
        Ok(envelopes)
    }

    /// A job's status and how many attempts it has had, without changing it: the worker asks
    /// before it looks for capacity, so a job that must wait for a key is not charged an
    /// attempt. `None` when the store has no such job.
    pub async fn progress(&self, id: Uuid) -> Result<Option<(JobStatus, u32)>, StoreError> {
        let row = sqlx::query("SELECT status, attempts FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(self.reader())
            .await?;
        row.map(|row| {
            let status = row
                .get::<String, _>(0)
                .parse()
                .map_err(|e: String| StoreError::Corrupt(e))?;
            Ok((status, row.get::<i64, _>(1) as u32))
        })
        .transpose()
    }

    /// Starts the next attempt of a job, in one transaction: any attempt of it still
    /// `running` (its worker died mid-call) becomes `interrupted`; the job moves to `running`
    /// and counts the attempt; the attempt is recorded `running`, so a crash during the call
    /// leaves it visible. Guarded in SQL: a final job is not started
    /// ([`StartOutcome::AlreadyFinal`]), nor one that has had `max_attempts` already, counted
    /// across crashes, which is failed instead with why ([`StartOutcome::Exhausted`]).
    pub async fn start_attempt(
        &self,
        id: Uuid,
        max_attempts: u32,
        attempt: AttemptStart,
    ) -> Result<StartOutcome, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let now = now_ms();
                let job = id.to_string();
                // One query (see [`START`]), since each statement is a round trip to
                // SQLite's thread: every row is read, so SQLite runs every statement.
                let started: Vec<i64> = sqlx::query_scalar(&START)
                    .bind(INTERRUPTED_ATTEMPT)
                    .bind(now)
                    .bind(&job)
                    .bind(now)
                    .bind(&job)
                    .bind(i64::from(max_attempts))
                    .bind(&job)
                    .bind(&attempt.deployment)
                    .bind(&attempt.provider)
                    .bind(&attempt.model)
                    .bind(&attempt.key_id)
                    .bind(attempt.tier)
                    .bind(attempt.started_at)
                    .bind(attempt.started_at)
                    .bind(&attempt.chosen_because)
                    .bind(&job)
                    .fetch_all(&mut *conn)
                    .await?;
                if let Some(&number) = started.first() {
                    return Ok(StartOutcome::Started(number as u32));
                }
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT status, attempts FROM jobs WHERE id = ?")
                        .bind(&job)
                        .fetch_optional(&mut *conn)
                        .await?;
                let Some((status, attempts)) = row else {
                    return Ok(StartOutcome::Missing);
                };
                let status: JobStatus = status
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
                if status.is_final() {
                    return Ok(StartOutcome::AlreadyFinal(status));
                }
                let attempts = attempts as u32;
                let (kind, message) = exhausted(conn, &job, attempts, max_attempts).await?;
                fail_job(conn, id, None, kind, &message, None).await?;
                Ok(StartOutcome::Exhausted { attempts })
            })
        })
        .await
    }

    /// Fails a job whose message the queue gave up delivering (its delivery limit: every
    /// delivery ended unsettled, its worker crashing, killed or cut off each time), unless
    /// it is final already; `reason` says so. Its attempts still `running` become
    /// `interrupted`. True when this failed it.
    pub async fn fail_undelivered(&self, id: Uuid, reason: String) -> Result<bool, StoreError> {
        self.write(move |conn| {
            Box::pin(async move { fail_job(conn, id, None, INTERRUPTED, &reason, None).await })
        })
        .await
    }

    /// Stores a failed attempt that will be retried: the job goes back to `queued`.
    pub async fn record_retry(&self, id: Uuid, attempt: AttemptRecord) -> Result<(), StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                insert_attempt(conn, id, &attempt).await?;
                sqlx::query(
                    "UPDATE jobs SET status = 'queued', updated_at = ? WHERE id = ? AND status = 'running'",
                )
                .bind(now_ms())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?;
                // The next attempt reserves again, on whichever deployment it gets.
                budgets::release(conn, id).await?;
                Ok(())
            })
        })
        .await
    }

    /// Marks a job `failed` with the failure that ended it (stored by its stable name), its
    /// message and the parameter the provider blamed, if it named one, storing the last
    /// attempt if any.
    pub async fn finish_failed(
        &self,
        id: Uuid,
        attempt: Option<AttemptRecord>,
        failure: JobFailure,
        message: String,
        param: Option<String>,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                fail_job(
                    conn,
                    id,
                    attempt.as_ref(),
                    failure,
                    &message,
                    param.as_deref(),
                )
                .await
            })
        })
        .await
    }

    /// Cancels a queued job of `tenant`. Returns the status the job has afterwards, or `None`
    /// when the tenant has no such job. A running or finished job is not cancelled.
    pub async fn cancel(&self, tenant: &str, id: Uuid) -> Result<Option<JobStatus>, StoreError> {
        let tenant = tenant.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                cancel_queued(conn, &tenant, CancelScope::Job(id)).await?;
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM jobs WHERE id = ? AND tenant = ?")
                        .bind(id.to_string())
                        .bind(&tenant)
                        .fetch_optional(&mut *conn)
                        .await?;
                status
                    .map(|s| s.parse().map_err(|e: String| sqlx::Error::Decode(e.into())))
                    .transpose()
            })
        })
        .await
    }

    /// What a job came to, in one read (against four for [`Store::job`]): its status, its
    /// error, its last attempt, and its answer when `with_answer`. A worker reads it after
    /// every streamed delivery to tell the waiting client, so it is kept to what that needs.
    pub async fn job_outcome(
        &self,
        tenant: &str,
        id: Uuid,
        with_answer: bool,
    ) -> Result<Option<JobOutcome>, StoreError> {
        let row = sqlx::query(
            "SELECT j.status, j.error_kind, j.error, a.outcome, a.error, \
             CASE WHEN ? THEN (SELECT response FROM results WHERE job_id = j.id) END, \
             j.error_param \
             FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id \
             AND a.number = (SELECT MAX(number) FROM attempts WHERE job_id = j.id) \
             WHERE j.id = ? AND j.tenant = ?",
        )
        .bind(with_answer)
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let status = row
            .get::<String, _>(0)
            .parse()
            .map_err(|e: String| StoreError::Corrupt(e))?;
        let error = JobError::stored(row.get(1), row.get(2), row.get(6));
        let last_attempt = row.get::<Option<String>, _>(3).map(|outcome| LastAttempt {
            outcome,
            error: row.get(4),
        });
        let answer = row
            .get::<Option<String>, _>(5)
            .as_deref()
            .map(stored_answer)
            .transpose()?;
        Ok(Some(JobOutcome {
            status,
            error,
            last_attempt,
            answer,
        }))
    }

    /// The job with its result, attempts and cost, if it belongs to `tenant`.
    pub async fn job(&self, tenant: &str, id: Uuid) -> Result<Option<JobView>, StoreError> {
        // The provider batch, if any, comes in the same read (columns 13 to 18), then the
        // param of a failed job's error (19).
        let sql = format!(
            "SELECT j.id, j.status, j.urgency, j.model, j.custom_id, j.user_tag, j.team_tag, \
             j.feature_tag, j.deadline, j.created_at, j.finished_at, j.error_kind, j.error, \
             {BATCH_REF_COLUMNS}, j.error_param \
             FROM jobs j LEFT JOIN batch_items i ON i.job_id = j.id \
             LEFT JOIN provider_batches b ON b.id = i.batch_id \
             WHERE j.id = ? AND j.tenant = ?"
        );
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(self.reader())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = |e: String| StoreError::Corrupt(e);
        let status: JobStatus = row.get::<String, _>(1).parse().map_err(corrupt)?;
        let urgency: Urgency = row.get::<String, _>(2).parse().map_err(corrupt)?;
        let error = JobError::stored(row.get(11), row.get(12), row.get(19));
        let result: Option<String> =
            sqlx::query_scalar("SELECT response FROM results WHERE job_id = ?")
                .bind(id.to_string())
                .fetch_optional(self.reader())
                .await?;
        let result = result.as_deref().map(stored_answer).transpose()?;
        let attempts = sqlx::query(
            "SELECT number, deployment, provider, model, key_id, tier, outcome, http_status, \
             error, retry_after_ms, started_at, finished_at, first_token_ms, chosen_because \
             FROM attempts WHERE job_id = ? ORDER BY number",
        )
        .bind(id.to_string())
        .fetch_all(self.reader())
        .await?
        .into_iter()
        .map(|a| {
            let outcome = AttemptOutcome::from_stored(&a.get::<String, _>(6));
            let started_at: i64 = a.get(10);
            // A running attempt has no end yet: its duration so far.
            let ended_at = match outcome {
                AttemptOutcome::Running => now_ms(),
                _ => a.get(11),
            };
            AttemptView {
                number: a.get::<i64, _>(0) as u32,
                deployment: a.get(1),
                provider: a.get(2),
                model: a.get(3),
                key_id: a.get(4),
                tier: a.get(5),
                outcome,
                http_status: a.get::<Option<i64>, _>(7).map(|s| s as u16),
                error: a.get(8),
                retry_after_ms: a.get(9),
                started_at: ms_to_time(started_at),
                duration_ms: ended_at - started_at,
                first_token_ms: a.get(12),
                chosen_because: a.get(13),
            }
        })
        .collect();
        let cost = sqlx::query(
            "SELECT deployment, tier, input_tokens, cached_tokens, output_tokens, input_price, \
             cached_input_price, output_price, amount_pico_usd, price_known, realtime_amount_pico_usd \
             FROM costs WHERE job_id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(self.reader())
        .await?
        .map(|c| CostView {
            deployment: c.get(0),
            tier: c.get(1),
            input_tokens: c.get(2),
            cached_tokens: c.get(3),
            output_tokens: c.get(4),
            input_price_per_mtok: MicrosPerMillion(c.get(5)).to_usd_string(),
            cached_input_price_per_mtok: MicrosPerMillion(c.get(6)).to_usd_string(),
            output_price_per_mtok: MicrosPerMillion(c.get(7)).to_usd_string(),
            amount_usd: PicoUsd(c.get(8)).to_usd_string(),
            amount_pico_usd: c.get(8),
            price_known: c.get(9),
            batch_saved_usd: (c.get::<String, _>(1) != "realtime")
                .then(|| PicoUsd(c.get::<i64, _>(10) - c.get::<i64, _>(8)).to_usd_string()),
        });
        Ok(Some(JobView {
            id,
            status,
            urgency,
            model: row.get(3),
            custom_id: row.get(4),
            tags: Tags {
                user: row.get(5),
                team: row.get(6),
                feature: row.get(7),
            },
            deadline: row.get::<Option<i64>, _>(8).map(ms_to_time),
            created_at: ms_to_time(row.get(9)),
            finished_at: row.get::<Option<i64>, _>(10).map(ms_to_time),
            error,
            result,
            attempts,
            cost,
            batch: batch_ref_of(&row, 13)?,
        }))
    }

    /// The sum of every cost record, exactly.
    pub async fn total_cost(&self) -> Result<PicoUsd, StoreError> {
        let total: Option<i64> = sqlx::query_scalar("SELECT SUM(amount_pico_usd) FROM costs")
            .fetch_one(self.reader())
            .await?;
        Ok(PicoUsd(total.unwrap_or(0)))
    }
}

/// A job to record: its envelope, whether its message is already on the queue, and for a job
/// of a bulk the bulk's id and the job's line number in the submitted file.
pub(super) struct NewJob<'a> {
    pub envelope: &'a Envelope,
    pub published: bool,
    pub bulk: Option<(Uuid, u64)>,
}

/// The columns `insert_jobs` writes, one `?` each (`status` is a constant).
const JOB_COLUMNS: &str = "id, tenant, custom_id, urgency, status, model, user_tag, team_tag, \
     feature_tag, deadline, request, created_at, updated_at, published, bulk_id, bulk_line";
const JOB_VALUES: &str = "(?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Rows in one `INSERT` statement: 15 parameters a row stays well under SQLite's limit of
/// 32,766 parameters a statement.
const ROWS_PER_INSERT: usize = 500;

/// The envelopes whose jobs an insert created, `outcomes` being its answer for each, in order
/// (the others' `custom_id` was already held by a job).
pub fn newly_created<'e>(
    envelopes: &'e [Envelope],
    outcomes: &'e [InsertOutcome],
) -> impl Iterator<Item = &'e Envelope> {
    envelopes
        .iter()
        .zip(outcomes)
        .filter(|(_, outcome)| matches!(outcome, InsertOutcome::Created))
        .map(|(envelope, _)| envelope)
}

/// Inserts jobs submitted alone (outside any bulk), `published` or not, unless one of them
/// reuses a `custom_id` for a different request ([`reused_custom_id`]): then nothing is
/// written and the reuse is the answer. Runs on a connection inside a [`Store::write`], so
/// a caller can add its own writes to the same transaction (the embedded queue queues the
/// created jobs' messages there, marking them `published`).
pub async fn insert_alone(
    conn: &mut sqlx::SqliteConnection,
    envelopes: &[Envelope],
    published: bool,
) -> Result<Result<Vec<InsertOutcome>, CustomIdReused>, sqlx::Error> {
    if let Some(reused) = reused_custom_id(conn, envelopes).await? {
        return Ok(Err(reused));
    }
    let jobs: Vec<NewJob> = envelopes
        .iter()
        .map(|envelope| NewJob {
            envelope,
            published,
            bulk: None,
        })
        .collect();
    insert_jobs(conn, &jobs).await.map(Ok)
}

/// Inserts job rows unless their id or `custom_id` is taken, and says for each, in order,
/// whether it was created or which job already stands. The `custom_id` is unique per tenant
/// for jobs submitted alone, and per bulk for jobs of a bulk; a bulk's job whose `custom_id`
/// stands for a different request is [`InsertOutcome::Conflicting`].
///
/// Up to [`ROWS_PER_INSERT`] rows go in one statement (`ON CONFLICT DO NOTHING RETURNING id`
/// names the rows created): a statement is a round trip to SQLite's thread, and a bulk of a
/// million lines would otherwise make a million of them. Only a row that was not created costs
/// one more, to find the job that stands in its place.
pub(super) async fn insert_jobs(
    conn: &mut sqlx::SqliteConnection,
    jobs: &[NewJob<'_>],
) -> Result<Vec<InsertOutcome>, sqlx::Error> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING RETURNING id",
            vec![JOB_VALUES; chunk.len()].join(", ")
        );
        let now = now_ms();
        let mut query = sqlx::query(&sql);
        for job in chunk {
            let spec = &job.envelope.spec;
            query = query
                .bind(job.envelope.id.to_string())
                .bind(&job.envelope.tenant)
                .bind(&spec.custom_id)
                .bind(spec.urgency.as_str())
                .bind(&spec.request.model)
                .bind(&spec.tags.user)
                .bind(&spec.tags.team)
                .bind(&spec.tags.feature)
                .bind(spec.deadline.map(|d| d.timestamp_millis()))
                .bind(serde_json::to_string(&spec.request).expect("a request always serialises"))
                .bind(now)
                .bind(now)
                .bind(job.published)
                .bind(job.bulk.map(|(id, _)| id.to_string()))
                .bind(job.bulk.map(|(_, line)| line as i64));
        }
        let created: std::collections::HashSet<String> = query
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for job in chunk {
            if created.contains(&job.envelope.id.to_string()) {
                outcomes.push(InsertOutcome::Created);
                continue;
            }
            let (id, request) = existing_job(conn, job).await?;
            let existing = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            // Jobs submitted alone are compared before their insert, all or none
            // ([`reused_custom_id`]); a bulk's line is judged on its own, here, in the
            // inserting transaction, so no concurrent submission slips in between.
            outcomes.push(
                if job.bulk.is_some() && !same_request(&id, &request, job.envelope) {
                    InsertOutcome::Conflicting(existing)
                } else {
                    InsertOutcome::Existing(existing)
                },
            );
        }
    }
    Ok(outcomes)
}

/// The first `custom_id` among `envelopes` (jobs outside any bulk) that names a different
/// request than its envelope's: an earlier envelope's, or a stored job's. Read in the
/// transaction that then inserts, so no concurrent submission slips between the two. A job
/// offered again under its own id (a republished envelope) is the same job, not a reuse.
async fn reused_custom_id(
    conn: &mut sqlx::SqliteConnection,
    envelopes: &[Envelope],
) -> Result<Option<CustomIdReused>, sqlx::Error> {
    let mut seen: std::collections::HashMap<&str, &Envelope> = std::collections::HashMap::new();
    for envelope in envelopes {
        let Some(custom_id) = envelope.spec.custom_id.as_deref() else {
            continue;
        };
        let reused = |existing: Uuid| CustomIdReused {
            custom_id: custom_id.to_string(),
            existing,
        };
        if let Some(first) = seen.get(custom_id) {
            if first.spec.request != envelope.spec.request {
                return Ok(Some(reused(first.id)));
            }
            continue;
        }
        seen.insert(custom_id, envelope);
        let stored: Option<(String, String)> = sqlx::query_as(
            "SELECT id, request FROM jobs WHERE tenant = ? AND custom_id = ? AND bulk_id IS NULL",
        )
        .bind(&envelope.tenant)
        .bind(custom_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((id, request)) = stored else {
            continue;
        };
        if !same_request(&id, &request, envelope) {
            let existing = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            return Ok(Some(reused(existing)));
        }
    }
    Ok(None)
}

/// Whether a stored job (its id and its `request` column) is what `envelope` asks for: the
/// same job offered again under its own id (a republished envelope), or the same request.
/// The one comparison behind both idempotency checks, so a retry that is a duplicate alone is
/// one in a bulk too.
fn same_request(stored_id: &str, stored_request: &str, envelope: &Envelope) -> bool {
    stored_id == envelope.id.to_string()
        || serde_json::from_str::<crate::job::ChatRequest>(stored_request)
            .is_ok_and(|stored| stored == envelope.spec.request)
}

/// The job that holds a new job's id or `custom_id`: its id and its request (to tell a
/// duplicate from a conflict; the row is read anyway). Each form matches one partial unique
/// index exactly, so the lookup is an index probe.
async fn existing_job(
    conn: &mut sqlx::SqliteConnection,
    job: &NewJob<'_>,
) -> Result<(String, String), sqlx::Error> {
    let envelope = job.envelope;
    let bulk_id = job.bulk.map(|(id, _)| id.to_string());
    let (sql, scope) = match &bulk_id {
        None => (
            "SELECT id, request FROM jobs WHERE id = ? OR (tenant = ? AND custom_id = ? AND bulk_id IS NULL) LIMIT 1",
            &envelope.tenant,
        ),
        Some(bulk_id) => (
            "SELECT id, request FROM jobs WHERE id = ? OR (bulk_id = ? AND custom_id = ?) LIMIT 1",
            bulk_id,
        ),
    };
    let existing: Option<(String, String)> = sqlx::query_as(sql)
        .bind(envelope.id.to_string())
        .bind(scope)
        .bind(&envelope.spec.custom_id)
        .fetch_optional(&mut *conn)
        .await?;
    existing.ok_or(sqlx::Error::RowNotFound)
}

/// Which queued jobs [`cancel_queued`] cancels.
pub(super) enum CancelScope {
    Job(Uuid),
    Bulk(Uuid),
}

/// The guarded cancel: the tenant's `queued` jobs in `scope`, and those waiting in a provider
/// batch, become `cancelled`; a job running a real-time call or finished is left as it is.
/// A cancelled job's batch item leaves `pending`, so its answer is dropped when the batch
/// ends (and a provider batch left with no pending item is cancelled upstream, see
/// [`crate::batch`]). Returns how many were cancelled.
pub(super) async fn cancel_queued(
    conn: &mut sqlx::SqliteConnection,
    tenant: &str,
    scope: CancelScope,
) -> Result<u64, sqlx::Error> {
    let (scope_sql, id) = match scope {
        CancelScope::Job(id) => ("id = ?2", id),
        CancelScope::Bulk(id) => ("bulk_id = ?2", id),
    };
    let now = now_ms();
    // The items first: `running` jobs are cancellable only while their item is pending.
    sqlx::query(&format!(
        "UPDATE batch_items SET state = 'cancelled' WHERE state = 'pending' AND job_id IN \
         (SELECT id FROM jobs WHERE status = 'running' AND tenant = ?1 AND {scope_sql})"
    ))
    .bind(tenant)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(&format!(
        "UPDATE jobs SET status = 'cancelled', updated_at = ?3, finished_at = ?3 \
         WHERE tenant = ?1 AND {scope_sql} AND (status = 'queued' OR (status = 'running' AND EXISTS \
         (SELECT 1 FROM batch_items b WHERE b.job_id = jobs.id AND b.state = 'cancelled')))"
    ))
    .bind(tenant)
    .bind(id.to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        budgets::release_cancelled(conn).await?;
    }
    Ok(done.rows_affected())
}

/// The columns [`envelope_of`] reads, in its order.
const ENVELOPE_COLUMNS: &str =
    "id, tenant, custom_id, urgency, user_tag, team_tag, feature_tag, deadline, request";

/// A job's envelope from its row (selected with [`ENVELOPE_COLUMNS`]).
fn envelope_of(row: &sqlx::sqlite::SqliteRow) -> Result<Envelope, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(e);
    let id = Uuid::parse_str(&row.get::<String, _>(0)).map_err(|e| corrupt(e.to_string()))?;
    let request =
        serde_json::from_str(&row.get::<String, _>(8)).map_err(|e| corrupt(e.to_string()))?;
    Ok(Envelope {
        version: crate::job::ENVELOPE_VERSION,
        id,
        tenant: row.get(1),
        // Whoever waited on a republished job's replies has long given up.
        reply_to: None,
        recorded: true,
        spec: crate::job::JobSpec {
            urgency: row.get::<String, _>(3).parse().map_err(corrupt)?,
            tags: Tags {
                user: row.get(4),
                team: row.get(5),
                feature: row.get(6),
            },
            custom_id: row.get(2),
            deadline: row.get::<Option<i64>, _>(7).map(ms_to_time),
            request,
        },
    })
}

/// Runs a statement over many job ids at once: its one parameter is the ids as a JSON array,
/// read with `json_each`, so a chunk of 500 confirmed jobs is one round trip to SQLite's
/// thread rather than 500.
async fn execute_for_each(
    conn: &mut sqlx::SqliteConnection,
    sql: &'static str,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    let ids = serde_json::to_string(ids).expect("ids always serialise");
    sqlx::query(sql).bind(ids).execute(&mut *conn).await?;
    Ok(())
}

/// The columns of an attempt, in [`bind_attempt`]'s order.
const ATTEMPT_COLUMNS: &str = "job_id, number, deployment, provider, model, key_id, tier, \
     outcome, http_status, error, retry_after_ms, started_at, finished_at, chosen_because, \
     first_token_ms";

/// What recording an attempt number already recorded does (the row [`Store::start_attempt`]
/// wrote `running`): completes it.
const ATTEMPT_UPSERT: &str = "ON CONFLICT (job_id, number) DO UPDATE SET \
     outcome = excluded.outcome, http_status = excluded.http_status, error = excluded.error, \
     retry_after_ms = excluded.retry_after_ms, finished_at = excluded.finished_at, \
     chosen_because = excluded.chosen_because, first_token_ms = excluded.first_token_ms";

/// Inserts an attempt, or completes the row of an attempt number already recorded. Bound by
/// [`bind_attempt`].
static INSERT_ATTEMPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {ATTEMPT_UPSERT}"
    )
});

/// Everything `start_attempt` writes, as one query: the attempts still `running` become
/// `interrupted` (no worker holds the job any more), then the guarded transition
/// `queued | running → running` that counts the attempt only while `attempts < max_attempts`,
/// then the attempt's row, `running`, numbered by that count, only if the transition wrote
/// (`changes() = 1`). Returns the attempt's number, or no row when no attempt started.
static START: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE attempts SET outcome = '{interrupted}', error = ?, finished_at = ? \
         WHERE job_id = ? AND outcome = '{running}'; \
         UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ? \
         WHERE id = ? AND status IN ('queued', 'running') AND attempts < ?; \
         INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         SELECT ?, attempts, ?, ?, ?, ?, ?, '{running}', NULL, NULL, NULL, ?, ?, ?, NULL \
         FROM jobs WHERE id = ? AND changes() = 1 {ATTEMPT_UPSERT} RETURNING number",
        interrupted = AttemptOutcome::Interrupted.as_str(),
        running = AttemptOutcome::Running.as_str(),
    )
});

/// Whose a job is: the tenant and the tags its cost counts under (for its budgets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOwner {
    pub tenant: String,
    pub tags: Tags,
}

/// Stores a successful attempt, its result and its cost, marks the job `succeeded` and
/// releases its budget reservations, on a connection inside a [`Store::write`] (the caller
/// adds the cost to the job's budgets in the same transaction). Returns whose job it is, or
/// `None`, writing nothing, when the job was no longer running (finished or cancelled
/// meanwhile): that answer is discarded, not charged.
pub async fn succeed_job(
    conn: &mut sqlx::SqliteConnection,
    id: Uuid,
    attempt: &AttemptRecord,
    response: &Value,
    cost: &CostRecord,
) -> Result<Option<JobOwner>, sqlx::Error> {
    let job_id = id.to_string();
    let price = cost.price.unwrap_or(ZERO_PRICE);
    // One query (see [`FINISH`]): the guarded transition, then the attempt, the result, the
    // cost and the release, each only if the one before it wrote.
    let now = now_ms();
    let query = sqlx::query(&FINISH).bind(now).bind(now).bind(&job_id);
    let finished = bind_attempt(query, &job_id, attempt)
        // results
        .bind(&job_id)
        .bind(response.to_string())
        .bind(now)
        // costs, whose attempt_id is looked up by job and attempt number
        .bind(&job_id)
        .bind(&job_id)
        .bind(attempt.number as i64)
        .bind(&attempt.deployment)
        .bind(&attempt.provider)
        .bind(&attempt.model)
        .bind(cost.tier)
        .bind(cost.usage.prompt_tokens as i64)
        .bind(cost.usage.cached_tokens as i64)
        .bind(cost.usage.completion_tokens as i64)
        // An unknown price is stored as zero unit prices, flagged by price_known.
        .bind(price.input.0)
        .bind(price.cached_input_or_input().0)
        .bind(price.output.0)
        .bind(cost.amount.0)
        .bind(now)
        .bind(cost.usage.cache_write_tokens as i64)
        .bind(price.cache_write_or_input().0)
        .bind(cost.price.is_some())
        .bind(cost.realtime_amount.0)
        .bind(&cost.route)
        .bind(cost.fallback_from.as_ref().map(|(name, _)| name.as_str()))
        .bind(
            cost.fallback_from
                .as_ref()
                .and_then(|(_, a)| a.map(|a| a.0)),
        )
        // the costs' job row
        .bind(&job_id)
        // the row that says the job finished here
        .bind(&job_id)
        // budgets::RELEASE_SUCCEEDED
        .bind(&job_id)
        .bind(&job_id)
        .bind(&job_id)
        // Every row is read, so SQLite runs every statement.
        .fetch_all(&mut *conn)
        .await?;
    Ok(finished.first().map(|job| JobOwner {
        tenant: job.get(0),
        tags: Tags {
            user: job.get(1),
            team: job.get(2),
            feature: job.get(3),
        },
    }))
}

/// Everything [`succeed_job`] writes, as one query, since each statement is a round trip to
/// SQLite's thread. The transition `running → succeeded` comes first and guards the rest:
/// each later write runs only if the one before it wrote its row (`changes() = 1`), so a job
/// finished or cancelled meanwhile gets no attempt, result or cost from this answer. Then
/// the attempt (an upsert, like [`INSERT_ATTEMPT`]), the result, the cost (with the job's
/// tenant and tags, and its `attempt_id` looked up by job and number), a row with the tenant
/// and tags if and only if the cost was written (for the budgets' totals), and the release of
/// the job's reservations ([`budgets::RELEASE_SUCCEEDED`]).
///
/// Parameters are plain `?`s, bound in statement order (sqlx binds numbered ones wrongly when
/// a statement of several skips a number).
static FINISH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE jobs SET status = 'succeeded', updated_at = ?, finished_at = ?, \
         error = NULL, error_kind = NULL, error_param = NULL WHERE id = ? AND status = 'running'; \
         INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE changes() = 1 {ATTEMPT_UPSERT}; \
         INSERT INTO results (job_id, response, created_at) SELECT ?, ?, ? WHERE changes() = 1; \
         INSERT INTO costs (job_id, attempt_id, tenant, user_tag, team_tag, feature_tag, \
         deployment, provider, model, tier, input_tokens, cached_tokens, output_tokens, \
         input_price, cached_input_price, output_price, amount_pico_usd, created_at, \
         cache_write_tokens, cache_write_price, price_known, realtime_amount_pico_usd, \
         route, primary_deployment, primary_amount_pico_usd) \
         SELECT ?, (SELECT id FROM attempts WHERE job_id = ? AND number = ?), \
         tenant, user_tag, team_tag, feature_tag, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
         FROM jobs WHERE id = ? AND changes() = 1; \
         SELECT tenant, user_tag, team_tag, feature_tag FROM jobs \
         WHERE id = ? AND changes() = 1; \
         {}",
        budgets::RELEASE_SUCCEEDED
    )
});

/// Binds [`INSERT_ATTEMPT`]'s parameters, in its order, to `query`.
fn bind_attempt<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    job: &'q str,
    a: &'q AttemptRecord,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(job)
        .bind(a.number as i64)
        .bind(&a.deployment)
        .bind(&a.provider)
        .bind(&a.model)
        .bind(&a.key_id)
        .bind(a.tier)
        .bind(a.outcome.as_str())
        .bind(a.http_status.map(i64::from))
        .bind(&a.error)
        .bind(a.retry_after_ms)
        .bind(a.started_at)
        .bind(a.finished_at)
        .bind(&a.chosen_because)
        .bind(a.first_token_ms)
}

pub(super) async fn insert_attempt(
    conn: &mut sqlx::SqliteConnection,
    job: Uuid,
    a: &AttemptRecord,
) -> Result<(), sqlx::Error> {
    let job = job.to_string();
    bind_attempt(sqlx::query(&INSERT_ATTEMPT), &job, a)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks the attempts of `job` still `running` as `interrupted`: whoever picks the job up
/// again (to start an attempt, place it in a provider batch or fail it) knows that no
/// worker holds it any more, so the one that made them stopped before their outcome.
pub(super) async fn interrupt_attempts(
    conn: &mut sqlx::SqliteConnection,
    job: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE attempts SET outcome = ?, error = ?, finished_at = ? \
         WHERE job_id = ? AND outcome = ?",
    )
    .bind(AttemptOutcome::Interrupted.as_str())
    .bind(INTERRUPTED_ATTEMPT)
    .bind(now)
    .bind(job)
    .bind(AttemptOutcome::Running.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The guarded transition `queued | running → failed`, with `kind`, `message` and the
/// parameter the provider blamed: stores the last attempt if any, marks attempts left
/// `running` `interrupted` and releases the job's budget reservations. False, writing
/// nothing, when the job was final already.
pub(crate) async fn fail_job(
    conn: &mut sqlx::SqliteConnection,
    id: Uuid,
    attempt: Option<&AttemptRecord>,
    failure: JobFailure,
    message: &str,
    param: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let failed = sqlx::query(
        "UPDATE jobs SET status = 'failed', error_kind = ?, error = ?, error_param = ?, \
         updated_at = ?, finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(failure.as_str())
    .bind(message)
    .bind(param)
    .bind(now)
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    if failed.rows_affected() == 0 {
        return Ok(false);
    }
    if let Some(attempt) = attempt {
        insert_attempt(conn, id, attempt).await?;
    }
    interrupt_attempts(conn, &id.to_string(), now).await?;
    budgets::release(conn, id).await?;
    Ok(true)
}

/// Why a job that has had all its `max_attempts` fails: the error kind and the message,
/// from how its last attempt ended (interrupted, as a rule: a worker that sees an attempt
/// fail decides the job's fate itself).
pub(super) async fn exhausted(
    conn: &mut sqlx::SqliteConnection,
    job: &str,
    attempts: u32,
    max_attempts: u32,
) -> Result<(JobFailure, String), sqlx::Error> {
    let last: Option<String> =
        sqlx::query_scalar("SELECT outcome FROM attempts WHERE job_id = ? AND number = ?")
            .bind(job)
            .bind(i64::from(attempts))
            .fetch_optional(&mut *conn)
            .await?;
    let (kind, how) = match last.as_deref().map(AttemptOutcome::from_stored) {
        Some(AttemptOutcome::Failed(kind)) => {
            let how = format!("ended {kind}");
            (JobFailure::from_name(&kind), how)
        }
        _ => (
            INTERRUPTED,
            "was interrupted before its outcome was recorded (its worker stopped or lost its \
             queue connection)"
                .to_string(),
        ),
    };
    let message = format!(
        "gave up after {attempts} attempts (max_attempts {max_attempts}): attempt {attempts} {how}"
    );
    Ok((kind, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ChatRequest, JobSpec, Urgency};

    fn envelope() -> Envelope {
        let request: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "fast",
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .unwrap();
        let mut spec = JobSpec::new(Urgency::Standard, request);
        spec.tags.team = Some("search".into());
        Envelope::new("acme", spec)
    }

    /// Within a bulk, a `custom_id` offered again is a duplicate for the same request and a
    /// conflict for another; neither writes, and a conflict does not stop the lines after it.
    #[tokio::test]
    async fn a_bulk_tells_a_changed_request_from_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let bulk = store.open_bulk("acme", "b").await.unwrap().id;
        let line = |custom_id: &str, content: &str| {
            let mut job = envelope();
            job.spec.custom_id = Some(custom_id.into());
            job.spec.request.messages[0]["content"] = content.into();
            job
        };
        let (changed, kept) = (line("c", "before"), line("k", "same"));
        let first = store
            .insert_bulk_jobs(bulk, vec![(1, changed.clone()), (2, kept.clone())])
            .await
            .unwrap();
        assert_eq!(first, vec![InsertOutcome::Created; 2]);

        let again = store
            .insert_bulk_jobs(bulk, vec![(1, line("c", "after")), (2, line("k", "same"))])
            .await
            .unwrap();
        assert_eq!(
            again,
            vec![
                InsertOutcome::Conflicting(changed.id),
                InsertOutcome::Existing(kept.id)
            ]
        );
        let request: String = sqlx::query_scalar("SELECT request FROM jobs WHERE custom_id = 'c'")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert!(request.contains("before"), "{request}");
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(jobs, 2);
    }

    fn attempt(number: u32) -> AttemptRecord {
        AttemptRecord {
            number,
            deployment: "gpt-mini".into(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            key_id: "k1".into(),
            tier: "realtime",
            outcome: AttemptOutcome::Ok,
            http_status: Some(200),
            error: None,
            retry_after_ms: None,
            started_at: 1,
            finished_at: 2,
            chosen_because: None,
            first_token_ms: None,
        }
    }

    fn start() -> AttemptStart {
        AttemptStart {
            deployment: "gpt-mini".into(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            key_id: "k1".into(),
            tier: "realtime",
            started_at: 1,
            chosen_because: None,
        }
    }

    /// A crash leaves the attempt it cut short `running`; picking the job up again marks it
    /// `interrupted`, and attempts counted across crashes stop at `max_attempts`: the start
    /// after the last one fails the job instead.
    #[tokio::test]
    async fn attempts_cut_short_are_interrupted_and_count_toward_max_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let job = envelope();
        store.insert_job(&job, true).await.unwrap();
        let outcomes = |view: JobView| {
            view.attempts
                .into_iter()
                .map(|a| a.outcome)
                .collect::<Vec<_>>()
        };

        let started = store.start_attempt(job.id, 2, start()).await.unwrap();
        assert_eq!(started, StartOutcome::Started(1));
        let view = store.job("acme", job.id).await.unwrap().unwrap();
        assert_eq!(outcomes(view), [AttemptOutcome::Running]);

        // The worker died mid-call; the job is delivered again.
        let started = store.start_attempt(job.id, 2, start()).await.unwrap();
        assert_eq!(started, StartOutcome::Started(2));
        let view = store.job("acme", job.id).await.unwrap().unwrap();
        assert_eq!(
            outcomes(view),
            [AttemptOutcome::Interrupted, AttemptOutcome::Running]
        );

        // And again: both attempts are used up.
        let started = store.start_attempt(job.id, 2, start()).await.unwrap();
        assert_eq!(started, StartOutcome::Exhausted { attempts: 2 });
        let view = store.job("acme", job.id).await.unwrap().unwrap();
        assert_eq!(view.status, JobStatus::Failed);
        let error = view.error.clone().unwrap();
        assert_eq!(error.kind, INTERRUPTED);
        assert!(
            error.message.contains("max_attempts 2"),
            "{}",
            error.message
        );
        assert_eq!(
            outcomes(view),
            [AttemptOutcome::Interrupted, AttemptOutcome::Interrupted]
        );
        let again = store.start_attempt(job.id, 2, start()).await.unwrap();
        assert_eq!(again, StartOutcome::AlreadyFinal(JobStatus::Failed));
    }

    fn cost(amount: i64) -> CostRecord {
        CostRecord {
            tier: "realtime",
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 0,
                cache_write_tokens: 0,
            },
            price: None,
            amount: PicoUsd(amount),
            realtime_amount: PicoUsd(amount),
            route: "fast".into(),
            fallback_from: None,
        }
    }

    /// [`succeed_job`] in a write of its own: whether it finished the job.
    async fn succeed(
        store: &Store,
        id: Uuid,
        attempt: AttemptRecord,
        response: Value,
        cost: CostRecord,
    ) -> bool {
        store
            .write(move |conn| {
                Box::pin(async move {
                    let owner = succeed_job(conn, id, &attempt, &response, &cost).await?;
                    Ok(owner.is_some())
                })
            })
            .await
            .unwrap()
    }

    async fn count(store: &Store, table: &str, job: Uuid) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE job_id = ?"))
            .bind(job.to_string())
            .fetch_one(store.reader())
            .await
            .unwrap()
    }

    /// The finish writes its attempt, result and cost only behind the transition from
    /// `running`: a job never started, or already finished by another answer, gets nothing
    /// from it and is not charged twice.
    #[tokio::test]
    async fn a_finish_writes_only_for_a_running_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let job = envelope();
        store.insert_job(&job, true).await.unwrap();

        let queued = succeed(
            &store,
            job.id,
            attempt(1),
            serde_json::json!({"n": 0}),
            cost(7),
        )
        .await;
        assert!(!queued, "a queued job is not finished by an answer");
        for table in ["attempts", "results", "costs"] {
            assert_eq!(count(&store, table, job.id).await, 0, "{table}");
        }

        assert_eq!(
            store.start_attempt(job.id, 5, start()).await.unwrap(),
            StartOutcome::Started(1)
        );
        let first = succeed(
            &store,
            job.id,
            attempt(1),
            serde_json::json!({"n": 1}),
            cost(7),
        )
        .await;
        assert!(first);
        let second = succeed(
            &store,
            job.id,
            attempt(2),
            serde_json::json!({"n": 2}),
            cost(9),
        )
        .await;
        assert!(!second, "a second answer is discarded");
        for table in ["attempts", "results", "costs"] {
            assert_eq!(count(&store, table, job.id).await, 1, "{table}");
        }
        let (tenant, team, amount, attempt_number): (String, Option<String>, i64, i64) =
            sqlx::query_as(
                "SELECT c.tenant, c.team_tag, c.amount_pico_usd, a.number FROM costs c \
                 JOIN attempts a ON a.id = c.attempt_id WHERE c.job_id = ?",
            )
            .bind(job.id.to_string())
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(
            (tenant.as_str(), team.as_deref(), amount, attempt_number),
            ("acme", Some("search"), 7, 1)
        );
        assert_eq!(store.total_cost().await.unwrap(), PicoUsd(7));
    }
}
