//! Reading jobs back: a job's view (row, result, attempts, cost, provider batch), the short
//! outcome a worker reads after a streamed delivery, a job's progress, and the cost total.
//! Apart from the writes because reads go through the read pool and never change a job.

use super::attempts::AttemptOutcome;
use crate::failure::JobFailure;
use crate::job::{JobStatus, Tags, Urgency};
use crate::pricing::{MicrosPerMillion, PicoUsd};
use crate::store::provider_batches::{batch_ref_of, BatchRef, BATCH_REF_COLUMNS};
use crate::store::{ms_to_time, now_ms, Store, StoreError};
use crate::with_pool;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

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
    pub batch: Option<BatchRef>,
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
    /// A job's status and how many attempts it has had, without changing it: the worker asks
    /// before it looks for capacity, so a job that must wait for a key is not charged an
    /// attempt. `None` when the store has no such job.
    pub async fn progress(&self, id: Uuid) -> Result<Option<(JobStatus, u32)>, StoreError> {
        let row: Option<(String, i64)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT status, attempts FROM jobs WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(p)
        .await?);
        row.map(|(status, attempts)| {
            let status = status.parse().map_err(|e: String| StoreError::Corrupt(e))?;
            Ok((status, attempts as u32))
        })
        .transpose()
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
        type OutcomeRow = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<OutcomeRow> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT j.status, j.error_kind, j.error, a.outcome, a.error, \
             CASE WHEN $1 THEN (SELECT response FROM results WHERE job_id = j.id) END, \
             j.error_param \
             FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id \
             AND a.number = (SELECT MAX(number) FROM attempts WHERE job_id = j.id) \
             WHERE j.id = $2 AND j.tenant = $3",
        )
        .bind(with_answer)
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(p)
        .await?);
        let Some((status, error_kind, error, outcome, attempt_error, answer, param)) = row else {
            return Ok(None);
        };
        let status = status.parse().map_err(|e: String| StoreError::Corrupt(e))?;
        let error = JobError::stored(error_kind, error, param);
        let last_attempt = outcome.map(|outcome| LastAttempt {
            outcome,
            error: attempt_error,
        });
        let answer = answer.as_deref().map(stored_answer).transpose()?;
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
             WHERE j.id = $1 AND j.tenant = $2"
        );
        let row = with_pool!(self.pool(), p => {
            let row = sqlx::query(&sql)
                .bind(id.to_string())
                .bind(tenant)
                .fetch_optional(p)
                .await?;
            row.map(|row| -> Result<JobRow, StoreError> {
                Ok(JobRow {
                    status: row.get(1),
                    urgency: row.get(2),
                    model: row.get(3),
                    custom_id: row.get(4),
                    tags: Tags {
                        user: row.get(5),
                        team: row.get(6),
                        feature: row.get(7),
                    },
                    deadline: row.get(8),
                    created_at: row.get(9),
                    finished_at: row.get(10),
                    error: JobError::stored(row.get(11), row.get(12), row.get(19)),
                    batch: batch_ref_of(&row, 13)?,
                })
            })
            .transpose()?
        });
        let Some(row) = row else { return Ok(None) };
        let corrupt = |e: String| StoreError::Corrupt(e);
        let status: JobStatus = row.status.parse().map_err(corrupt)?;
        let urgency: Urgency = row.urgency.parse().map_err(corrupt)?;
        let result: Option<String> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT response FROM results WHERE job_id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(p)
        .await?);
        let result = result.as_deref().map(stored_answer).transpose()?;
        let attempts = with_pool!(self.pool(), p => sqlx::query(
            "SELECT number, deployment, provider, model, key_id, tier, outcome, http_status, \
             error, retry_after_ms, started_at, finished_at, first_token_ms, chosen_because \
             FROM attempts WHERE job_id = $1 ORDER BY number",
        )
        .bind(id.to_string())
        .fetch_all(p)
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
        .collect());
        let cost = with_pool!(self.pool(), p => sqlx::query(
            "SELECT deployment, tier, input_tokens, cached_tokens, output_tokens, input_price, \
             cached_input_price, output_price, amount_pico_usd, price_known, realtime_amount_pico_usd \
             FROM costs WHERE job_id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(p)
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
        }));
        Ok(Some(JobView {
            id,
            status,
            urgency,
            model: row.model,
            custom_id: row.custom_id,
            tags: row.tags,
            deadline: row.deadline.map(ms_to_time),
            created_at: ms_to_time(row.created_at),
            finished_at: row.finished_at.map(ms_to_time),
            error: row.error,
            result,
            attempts,
            cost,
            batch: row.batch,
        }))
    }

    /// The sum of every cost record, exactly.
    pub async fn total_cost(&self) -> Result<PicoUsd, StoreError> {
        let total: Option<i64> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT CAST(SUM(amount_pico_usd) AS BIGINT) FROM costs",
        )
        .fetch_one(p)
        .await?);
        Ok(PicoUsd(total.unwrap_or(0)))
    }
}

/// A job's row as [`Store::job`] reads it, decoded the same from either backend's row.
struct JobRow {
    status: String,
    urgency: String,
    model: String,
    custom_id: Option<String>,
    tags: Tags,
    deadline: Option<i64>,
    created_at: i64,
    finished_at: Option<i64>,
    error: Option<JobError>,
    batch: Option<BatchRef>,
}
