//! A job's transitions after its attempt: success (one query, guarded by `running`), failure,
//! retry and cancel, each releasing the job's budget reservations in its own transaction.
//! Apart from recording and reading because these are the guarded writes the state machine
//! rests on.

use super::attempts::{
    bind_attempt, insert_attempt, interrupt_attempts, AttemptRecord, ATTEMPT_COLUMNS,
    ATTEMPT_UPSERT, INSERT_ATTEMPT, INTERRUPTED,
};
use crate::failure::JobFailure;
use crate::job::{JobStatus, Tags};
use crate::pricing::{MicrosPerMillion, PicoUsd, Price};
use crate::providers::Usage;
use crate::store::{budgets, now_ms, Conn, Store, StoreError};
use crate::tier::Tier;
use crate::with_conn;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The cost of a successful attempt, with what reports need to explain it.
#[derive(Debug, Clone)]
pub struct CostRecord {
    /// The tier the call was priced at: `realtime`, `batch` or `flex` (a flex call's attempt
    /// says `realtime`, the endpoint it called).
    pub tier: Tier,
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

impl Store {
    /// Fails a job whose message the queue gave up delivering (its delivery limit: every
    /// delivery ended unsettled, its worker crashing, killed or cut off each time), unless
    /// it is final already; `reason` says so. Its attempts still `running` become
    /// `interrupted`. True when this failed it.
    pub async fn fail_undelivered(&self, id: Uuid, reason: String) -> Result<bool, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                fail_job(&mut conn, id, None, INTERRUPTED, &reason, None).await
            })
        })
        .await
    }

    /// Stores a failed attempt that will be retried: the job goes back to `queued`.
    pub async fn record_retry(&self, id: Uuid, attempt: AttemptRecord) -> Result<(), StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                insert_attempt(&mut conn, id, &attempt).await?;
                with_conn!(conn, c => sqlx::query(
                    "UPDATE jobs SET status = 'queued', updated_at = $1 WHERE id = $2 AND status = 'running'",
                )
                .bind(now_ms())
                .bind(id.to_string())
                .execute(&mut *c)
                .await?
                .rows_affected());
                // The next attempt reserves again, on whichever deployment it gets.
                budgets::release(&mut conn, id).await?;
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
                let mut conn = conn;
                fail_job(
                    &mut conn,
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
                let mut conn = conn;
                cancel_queued(&mut conn, &tenant, CancelScope::Job(id)).await?;
                let status: Option<String> = with_conn!(conn, c => sqlx::query_scalar(
                    "SELECT status FROM jobs WHERE id = $1 AND tenant = $2",
                )
                .bind(id.to_string())
                .bind(&tenant)
                .fetch_optional(&mut *c)
                .await?);
                status
                    .map(|s| s.parse().map_err(|e: String| sqlx::Error::Decode(e.into())))
                    .transpose()
            })
        })
        .await
    }
}

/// Whose a job is: the tenant and the tags its cost counts under (for its budgets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOwner {
    pub tenant: String,
    pub tags: Tags,
}

/// Binds a cost record's figures, in the order both dialects' `costs` inserts list them after
/// the job, attempt and owner columns: tier, tokens, unit prices (an unknown price as zeros,
/// flagged by `price_known`), amount, time, cache writes, the real-time amount, the route and
/// the primary it fell back from.
macro_rules! bind_cost_figures {
    ($query:expr, $cost:expr, $now:expr) => {{
        let cost: &CostRecord = $cost;
        let price = cost.price.unwrap_or(ZERO_PRICE);
        $query
            .bind(cost.tier.as_str())
            .bind(cost.usage.prompt_tokens as i64)
            .bind(cost.usage.cached_tokens as i64)
            .bind(cost.usage.completion_tokens as i64)
            .bind(price.input.0)
            .bind(price.cached_input_or_input().0)
            .bind(price.output.0)
            .bind(cost.amount.0)
            .bind($now)
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
    }};
}

/// Stores a successful attempt, its result and its cost, marks the job `succeeded` and
/// releases its budget reservations, on a connection inside a [`Store::write`] (the caller
/// adds the cost to the job's budgets in the same transaction). Returns whose job it is, or
/// `None`, writing nothing, when the job was no longer running (finished or cancelled
/// meanwhile): that answer is discarded, not charged.
pub async fn succeed_job(
    conn: &mut Conn<'_>,
    id: Uuid,
    attempt: &AttemptRecord,
    response: &Value,
    cost: &CostRecord,
) -> Result<Option<JobOwner>, sqlx::Error> {
    let conn = match conn.reborrow() {
        Conn::Sqlite(c) => c,
        Conn::Postgres(c) => return succeed_postgres(c, id, attempt, response, cost).await,
    };
    let job_id = id.to_string();
    // One query (see [`FINISH`]): the guarded transition, then the attempt, the result, the
    // cost and the release, each only if the one before it wrote.
    let now = now_ms();
    let query = sqlx::query(&FINISH).bind(now).bind(now).bind(&job_id);
    let finished = bind_attempt!(query, &job_id, attempt)
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
        .bind(&attempt.model);
    let finished = bind_cost_figures!(finished, cost, now)
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

/// [`succeed_job`] on Postgres, one statement after another in the caller's transaction: the
/// guarded transition `running → succeeded` first (it locks the job's row, and of two
/// processes finishing the same job exactly one applies it), then, only if it applied, the
/// attempt, the result, the cost with the tenant and tags the transition returned, and the
/// release of the job's reservations.
async fn succeed_postgres(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: &AttemptRecord,
    response: &Value,
    cost: &CostRecord,
) -> Result<Option<JobOwner>, sqlx::Error> {
    let job_id = id.to_string();
    let now = now_ms();
    // The tenant and the tags: user, team, feature.
    type OwnerRow = (String, Option<String>, Option<String>, Option<String>);
    let owner: Option<OwnerRow> = sqlx::query_as(
        "UPDATE jobs SET status = 'succeeded', updated_at = $1, finished_at = $1, \
         error = NULL, error_kind = NULL, error_param = NULL WHERE id = $2 AND status = 'running' \
         RETURNING tenant, user_tag, team_tag, feature_tag",
    )
    .bind(now)
    .bind(&job_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((tenant, user, team, feature)) = owner else {
        return Ok(None);
    };
    let attempt_id: i64 = bind_attempt!(
        sqlx::query_scalar(&INSERT_ATTEMPT_RETURNING_ID),
        &job_id,
        attempt
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO results (job_id, response, created_at) VALUES ($1, $2, $3)")
        .bind(&job_id)
        .bind(response.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let insert = sqlx::query(
        "INSERT INTO costs (job_id, attempt_id, tenant, user_tag, team_tag, feature_tag, \
         deployment, provider, model, tier, input_tokens, cached_tokens, output_tokens, \
         input_price, cached_input_price, output_price, amount_pico_usd, created_at, \
         cache_write_tokens, cache_write_price, price_known, realtime_amount_pico_usd, \
         route, primary_deployment, primary_amount_pico_usd) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25)",
    )
    .bind(&job_id)
    .bind(attempt_id)
    .bind(&tenant)
    .bind(&user)
    .bind(&team)
    .bind(&feature)
    .bind(&attempt.deployment)
    .bind(&attempt.provider)
    .bind(&attempt.model);
    bind_cost_figures!(insert, cost, now)
        .execute(&mut *conn)
        .await?;
    // The transition applied in this transaction: the reservations are this job's to release.
    budgets::release(&mut Conn::Postgres(&mut *conn), id).await?;
    Ok(Some(JobOwner {
        tenant,
        tags: Tags {
            user,
            team,
            feature,
        },
    }))
}

/// [`INSERT_ATTEMPT`] returning the attempt's id, for its cost row.
static INSERT_ATTEMPT_RETURNING_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} RETURNING id", *INSERT_ATTEMPT));

/// Everything [`succeed_job`] writes, as one query, since each statement is a round trip to
/// SQLite's thread. The transition `running → succeeded` comes first and guards the rest:
/// each later write runs only if the one before it wrote its row (`changes() = 1`), so a job
/// finished or cancelled meanwhile gets no attempt, result or cost from this answer. Then
/// the attempt (an upsert, like `INSERT_ATTEMPT`), the result, the cost (with the job's
/// tenant and tags, and its `attempt_id` looked up by job and number), a row with the tenant
/// and tags if and only if the cost was written (for the budgets' totals), and the release of
/// the job's reservations ([`budgets::RELEASE_SUCCEEDED`]).
///
/// Parameters are plain `?`s, bound in statement order (sqlx binds numbered ones wrongly when
/// a statement of several skips a number). SQLite only: Postgres prepares one statement at a
/// time ([`succeed_postgres`]).
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

/// The guarded transition `queued | running → failed`, with `kind`, `message` and the
/// parameter the provider blamed: stores the last attempt if any, marks attempts left
/// `running` `interrupted` and releases the job's budget reservations. False, writing
/// nothing, when the job was final already.
pub(crate) async fn fail_job(
    conn: &mut Conn<'_>,
    id: Uuid,
    attempt: Option<&AttemptRecord>,
    failure: JobFailure,
    message: &str,
    param: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let failed = with_conn!(conn, c => sqlx::query(
        "UPDATE jobs SET status = 'failed', error_kind = $1, error = $2, error_param = $3, \
         updated_at = $4, finished_at = $5 WHERE id = $6 AND status IN ('queued', 'running')",
    )
    .bind(failure.as_str())
    .bind(message)
    .bind(param)
    .bind(now)
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *c)
    .await?
    .rows_affected());
    if failed == 0 {
        return Ok(false);
    }
    if let Some(attempt) = attempt {
        insert_attempt(conn, id, attempt).await?;
    }
    interrupt_attempts(conn, &id.to_string(), now).await?;
    budgets::release(conn, id).await?;
    Ok(true)
}

/// Which queued jobs [`cancel_queued`] cancels.
pub(in crate::store) enum CancelScope {
    Job(Uuid),
    Bulk(Uuid),
}

/// The guarded cancel: the tenant's `queued` jobs in `scope`, and those waiting in a provider
/// batch, become `cancelled`; a job running a real-time call or finished is left as it is.
/// A cancelled job's batch item leaves `pending`, so its answer is dropped when the batch
/// ends (and a provider batch left with no pending item is cancelled upstream, see
/// [`crate::batch`]). Returns how many were cancelled.
pub(in crate::store) async fn cancel_queued(
    conn: &mut Conn<'_>,
    tenant: &str,
    scope: CancelScope,
) -> Result<u64, sqlx::Error> {
    let (scope_sql, id) = match scope {
        CancelScope::Job(id) => ("id = $2", id),
        CancelScope::Bulk(id) => ("bulk_id = $2", id),
    };
    let now = now_ms();
    // The items first: `running` jobs are cancellable only while their item is pending.
    let items = format!(
        "UPDATE batch_items SET state = 'cancelled' WHERE state = 'pending' AND job_id IN \
         (SELECT id FROM jobs WHERE status = 'running' AND tenant = $1 AND {scope_sql})"
    );
    with_conn!(conn, c => sqlx::query(&items)
        .bind(tenant)
        .bind(id.to_string())
        .execute(&mut *c)
        .await?
        .rows_affected());
    let jobs = format!(
        "UPDATE jobs SET status = 'cancelled', updated_at = $3, finished_at = $3 \
         WHERE tenant = $1 AND {scope_sql} AND (status = 'queued' OR (status = 'running' AND EXISTS \
         (SELECT 1 FROM batch_items b WHERE b.job_id = jobs.id AND b.state = 'cancelled')))"
    );
    let done = with_conn!(conn, c => sqlx::query(&jobs)
        .bind(tenant)
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected());
    if done > 0 {
        budgets::release_cancelled(conn).await?;
    }
    Ok(done)
}
