//! Rows written straight into a test's store, on either backend, for cases whose subject is
//! a read (a bulk's counts and results, a cost report): a finished job with its last
//! attempt, its result and its cost record, without the worker that would write them.

use sluice::store::Store;
use sluice::with_conn;
use uuid::Uuid;

/// A job to write: `status` and, for a succeeded one, what it was charged.
pub struct Row<'a> {
    pub tenant: &'a str,
    pub bulk: Option<(Uuid, i64)>,
    pub custom_id: Option<&'a str>,
    pub status: &'a str,
    pub error_kind: Option<&'a str>,
    pub http_status: Option<i64>,
    pub cost: Option<Cost<'a>>,
}

/// A cost record's columns that reports read.
pub struct Cost<'a> {
    pub team: Option<&'a str>,
    pub model: &'a str,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub amount: i64,
    pub realtime_amount: i64,
    pub price_known: bool,
    pub primary: Option<(&'a str, i64)>,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Default for Row<'_> {
    fn default() -> Self {
        Row {
            tenant: "acme",
            bulk: None,
            custom_id: None,
            status: "queued",
            error_kind: None,
            http_status: None,
            cost: None,
        }
    }
}

/// Writes `row` (a job, an attempt when it has an HTTP status or a cost, its result and cost
/// when it has a cost) in a write of the store's own; returns the job's id.
pub async fn write(store: &Store, row: Row<'_>) -> Uuid {
    let id = Uuid::now_v7();
    let finished = matches!(row.status, "succeeded" | "failed" | "cancelled").then_some(2_000i64);
    let job = (
        id.to_string(),
        row.tenant.to_string(),
        row.custom_id.map(String::from),
        row.status.to_string(),
        row.error_kind.map(String::from),
        row.error_kind.map(|k| format!("{k} happened")),
        row.bulk.map(|(b, line)| (b.to_string(), line)),
    );
    let http_status = row.http_status;
    let cost = row.cost.map(|c| {
        (
            c.team.map(String::from),
            c.model.to_string(),
            [
                c.input_tokens,
                c.cached_tokens,
                c.output_tokens,
                c.amount,
                c.created_at,
            ],
            c.price_known,
            c.realtime_amount,
            c.primary.map(|(d, a)| (d.to_string(), a)),
        )
    });
    store
        .write(move |mut conn| {
            Box::pin(async move {
                let (id, tenant, custom_id, status, error_kind, error, bulk) = job;
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO jobs (id, tenant, custom_id, urgency, status, model, request, \
                     error_kind, error, created_at, updated_at, finished_at, published, bulk_id, \
                     bulk_line) VALUES ($1, $2, $3, 'standard', $4, 'fast', '{}', $5, $6, 1000, \
                     1000, $7, $8, $9, $10)",
                )
                .bind(&id)
                .bind(&tenant)
                .bind(custom_id)
                .bind(status)
                .bind(error_kind)
                .bind(error)
                .bind(finished)
                .bind(true)
                .bind(bulk.as_ref().map(|(b, _)| b.clone()))
                .bind(bulk.map(|(_, line)| line))
                .execute(&mut *c)
                .await?
                .rows_affected());
                if http_status.is_none() && cost.is_none() {
                    return Ok(());
                }
                let attempt: i64 = with_conn!(conn, c => sqlx::query_scalar(
                    "INSERT INTO attempts (job_id, number, deployment, provider, model, key_id, \
                     tier, outcome, http_status, started_at, finished_at) \
                     VALUES ($1, 1, 'mini', 'openai', 'gpt-mini', 'k1', 'realtime', 'ok', $2, 1, 2) \
                     RETURNING id",
                )
                .bind(&id)
                .bind(http_status)
                .fetch_one(&mut *c)
                .await?);
                let Some((team, model, [input, cached, output, amount, created_at], known, realtime, primary)) =
                    cost
                else {
                    return Ok(());
                };
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO results (job_id, response, created_at) VALUES ($1, $2, 2)",
                )
                .bind(&id)
                .bind(format!(r#"{{"id":"{id}"}}"#))
                .execute(&mut *c)
                .await?
                .rows_affected());
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO costs (job_id, attempt_id, tenant, team_tag, deployment, \
                     provider, model, tier, input_tokens, cached_tokens, output_tokens, \
                     input_price, cached_input_price, output_price, amount_pico_usd, created_at, \
                     price_known, realtime_amount_pico_usd, primary_deployment, \
                     primary_amount_pico_usd) VALUES ($1, $2, $3, $4, 'mini', 'openai', $5, \
                     'realtime', $6, $7, $8, 1, 1, 1, $9, $10, $11, $12, $13, $14)",
                )
                .bind(&id)
                .bind(attempt)
                .bind(&tenant)
                .bind(team)
                .bind(model)
                .bind(input)
                .bind(cached)
                .bind(output)
                .bind(amount)
                .bind(created_at)
                .bind(known)
                .bind(realtime)
                .bind(primary.as_ref().map(|(d, _)| d.clone()))
                .bind(primary.map(|(_, a)| a))
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(())
            })
        })
        .await
        .unwrap();
    id
}

impl Default for Cost<'_> {
    fn default() -> Self {
        Cost {
            team: None,
            model: "gpt-mini",
            input_tokens: 0,
            cached_tokens: 0,
            output_tokens: 0,
            amount: 0,
            realtime_amount: 0,
            price_known: true,
            primary: None,
            created_at: 1_000,
        }
    }
}
