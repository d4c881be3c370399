//! `/v1/batches`: OpenAI's Batches API as a view of Sluice's bulks, so a program written for
//! the official `openai` SDK's batch calls runs unchanged against Sluice, and its requests go
//! through Sluice's routing, fallback, limits and cost records like any job.
//!
//! - `POST /v1/batches` (`input_file_id`, `endpoint`, `completion_window`, `metadata`): checks
//!   the request (a 400 naming the field), records a bulk, and answers at once with status
//!   `validating`. A task then submits the input file exactly as `POST /v1/bulk` does
//!   ([`crate::bulk::submit::prepare`]: every line checked, nothing submitted if one is bad),
//!   with urgency `batch` and a deadline at the end of the completion window. A bad file
//!   makes the batch `failed` with OpenAI's `errors` list (`code`, `message`, `param`, `line`),
//!   not a 400, as on OpenAI.
//! - `GET /v1/batches/{id}`, `GET /v1/batches?limit=&after=` (newest first),
//!   `POST /v1/batches/{id}/cancel` (cancels the queued jobs; running ones finish).
//!
//! Each create makes a new batch (as on OpenAI): the bulk's name is the batch id. A batch id
//! is its bulk's UUID (`batch_` + 32 hex digits), so there is no mapping to keep, and every
//! bulk, however it was submitted, can be read as a batch.
//!
//! The status is derived, never stored, from the bulk and its jobs' counts: `failed` (input
//! invalid), `cancelling` / `cancelled` (after a cancel, until no job runs), `validating`
//! (no job recorded yet), `in_progress`, `expired` (the window passed with jobs unfinished,
//! or finished by failing past their deadline), `completed`. `finalizing` is never shown:
//! the output files are views of the jobs, there is nothing to finalize. `request_counts`:
//! `completed` = succeeded jobs, `failed` = failed and cancelled ones (those in the error
//! file). `usage` sums the cost records' tokens. The object also carries
//! `sluice: {bulk_id, cost_usd}` (OpenAI's SDK keeps unknown fields).
//!
//! A crash while a batch's file is being submitted leaves it `validating` or `in_progress`
//! with the jobs recorded so far (the relay publishes any left unpublished). The next API
//! server to start on the store resumes it ([`resume`]): the same task runs again over the
//! stored input file, and since a bulk holds each `custom_id` once, only the missing lines
//! become jobs. The jobs keep the batch's deadline, so a batch resumed after its window ends
//! is `expired` (its new jobs fail `deadline_exceeded` without a call). That is why an
//! unfinished batch's input file cannot be deleted (see [`super::files`]). Two servers
//! starting on one store both resume it, and the bulk's unique `custom_id`s still keep one job
//! a line.

use super::auth::Tenant;
use super::bulk::already_finished;
use super::error::ApiError;
use super::files::{error_file_id, output_file_id, PURPOSE_BATCH};
use super::ApiState;
use crate::bulk::submit::prepare;
use crate::bulk::wire::BulkRequest;
use crate::bulk::{BulkError, Defaults, CHAT_COMPLETIONS_URL};
use crate::job::from_value_naming_field;
use crate::store::{BatchFields, BulkCancel, BulkView, NewBatch};
use crate::submit::Submitter;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_util::io::StreamReader;
use uuid::Uuid;

/// The prefix of a batch id.
pub const BATCH_ID_PREFIX: &str = "batch_";
/// The only completion window (OpenAI's).
pub const COMPLETION_WINDOW: &str = "24h";
const WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The body of `POST /v1/batches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    /// Accepted for compatibility; output files here are views of the jobs and never expire.
    #[serde(default)]
    #[allow(dead_code)]
    output_expires_after: Option<Value>,
}

/// A bulk read as a batch.
pub struct BatchView {
    pub bulk: BulkView,
    pub fields: BatchFields,
    pub status: &'static str,
}

impl BatchView {
    pub fn id(&self) -> String {
        batch_id(self.bulk.id)
    }

    fn is_final(&self) -> bool {
        matches!(
            self.status,
            "completed" | "failed" | "expired" | "cancelled"
        )
    }

    /// The output file's id, once the batch is final and some job succeeded.
    pub fn output_file_id(&self) -> Option<String> {
        (self.is_final() && self.bulk.counts.succeeded > 0).then(|| output_file_id(self.bulk.id))
    }

    /// The error file's id, once the batch is final and some job failed or was cancelled.
    pub fn error_file_id(&self) -> Option<String> {
        (self.is_final() && self.bulk.counts.failed + self.bulk.counts.cancelled > 0)
            .then(|| error_file_id(self.bulk.id))
    }

    /// When the batch reached its final status (Unix seconds).
    pub fn finished_at(&self) -> Option<i64> {
        let seconds = |ms: i64| ms / 1000;
        match self.status {
            "failed" => self.fields.failed_at.map(seconds),
            "expired" => self.fields.expires_at.map(seconds),
            "completed" | "cancelled" => [
                self.fields.last_finished_at,
                self.bulk.submitted_at.map(|t| t.timestamp_millis()),
                self.bulk.cancelled_at.map(|t| t.timestamp_millis()),
            ]
            .into_iter()
            .flatten()
            .max()
            .map(seconds),
            _ => None,
        }
    }

    /// OpenAI's batch object.
    fn object(&self) -> Value {
        let (bulk, fields) = (&self.bulk, &self.fields);
        let seconds = |ms: Option<i64>| ms.map(|ms| ms / 1000);
        let at = |status: &str| {
            if self.status == status {
                self.finished_at()
            } else {
                None
            }
        };
        let errors = fields
            .errors
            .as_ref()
            .map(|data| json!({ "object": "list", "data": data }));
        let input = fields.input_tokens;
        json!({
            "id": self.id(),
            "object": "batch",
            "endpoint": bulk.endpoint,
            "model": null,
            "errors": errors,
            "input_file_id": fields.input_file_id,
            "completion_window": fields.completion_window.as_deref().unwrap_or(COMPLETION_WINDOW),
            "status": self.status,
            "output_file_id": self.output_file_id(),
            "error_file_id": self.error_file_id(),
            "created_at": bulk.created_at.timestamp(),
            "in_progress_at": seconds(fields.in_progress_at)
                .or_else(|| bulk.submitted_at.map(|t| t.timestamp())),
            "expires_at": seconds(fields.expires_at),
            "finalizing_at": at("completed"),
            "completed_at": at("completed"),
            "failed_at": at("failed"),
            "expired_at": at("expired"),
            "cancelling_at": bulk.cancelled_at.map(|t| t.timestamp()),
            "cancelled_at": at("cancelled"),
            "request_counts": {
                "total": bulk.total,
                "completed": bulk.counts.succeeded,
                "failed": bulk.counts.failed + bulk.counts.cancelled,
            },
            "usage": {
                "input_tokens": input,
                "input_tokens_details": { "cached_tokens": fields.cached_tokens },
                "output_tokens": fields.output_tokens,
                "output_tokens_details": { "reasoning_tokens": 0 },
                "total_tokens": input + fields.output_tokens,
            },
            "metadata": fields.metadata,
            "sluice": { "bulk_id": bulk.id, "cost_usd": bulk.cost.amount_usd },
        })
    }
}

/// The batch id of a bulk.
pub fn batch_id(bulk: Uuid) -> String {
    format!("{BATCH_ID_PREFIX}{}", bulk.simple())
}

/// The batch status of a bulk; see the module doc.
fn status(bulk: &BulkView, fields: &BatchFields, now_ms: i64) -> &'static str {
    let all_done = bulk.done == bulk.total;
    let expired = fields.expires_at.is_some_and(|end| {
        end < now_ms && (!all_done || fields.last_finished_at.is_some_and(|last| last > end))
    });
    match bulk.status {
        _ if fields.failed_at.is_some() => "failed",
        "cancelling" | "cancelled" => bulk.status,
        "submitting" if bulk.total == 0 && fields.in_progress_at.is_none() => "validating",
        _ if expired => "expired",
        "completed" => "completed",
        _ => "in_progress",
    }
}

/// The tenant's bulk `id` as a batch, or `None` when the tenant has no such bulk.
pub(super) async fn batch_view(
    state: &ApiState,
    tenant: &str,
    id: Uuid,
) -> Result<Option<BatchView>, ApiError> {
    let Some(bulk) = state.store.bulk(tenant, id).await? else {
        return Ok(None);
    };
    let fields = state.store.batch_fields(id).await?;
    let status = status(&bulk, &fields, crate::store::now_ms());
    Ok(Some(BatchView {
        bulk,
        fields,
        status,
    }))
}

/// `POST /v1/batches`.
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("", format!("the body is not valid JSON: {e}")))?;
    let request: CreateBatch = from_value_naming_field(value)?;
    if request.endpoint != CHAT_COMPLETIONS_URL {
        return Err(ApiError::invalid(
            "endpoint",
            format!(
                "\"{}\" is not supported; Sluice runs batches of \"{CHAT_COMPLETIONS_URL}\" only",
                request.endpoint
            ),
        ));
    }
    if request.completion_window != COMPLETION_WINDOW {
        return Err(ApiError::invalid(
            "completion_window",
            format!(
                "\"{}\" is not supported; the only window is \"{COMPLETION_WINDOW}\"",
                request.completion_window
            ),
        ));
    }
    check_metadata(request.metadata.as_ref())?;
    let file = state
        .store
        .file(&tenant, &request.input_file_id)
        .await?
        .ok_or_else(|| input_file_not_found(&request.input_file_id))?;
    if file.purpose != PURPOSE_BATCH {
        return Err(ApiError::invalid(
            "input_file_id",
            format!(
                "file {} has purpose \"{}\"; a batch's input must be uploaded with purpose \"batch\"",
                file.id, file.purpose
            ),
        ));
    }
    let id = Uuid::now_v7();
    let created = chrono::Utc::now();
    let deadline = created + WINDOW;
    let recorded = state
        .store
        .create_batch(
            &tenant,
            NewBatch {
                id,
                name: batch_id(id),
                endpoint: request.endpoint,
                metadata: request.metadata.map(Value::Object),
                input_file_id: file.id.clone(),
                completion_window: request.completion_window,
                expires_at: deadline.timestamp_millis(),
            },
        )
        .await?;
    if !recorded {
        return Err(input_file_not_found(&request.input_file_id));
    }
    // A task of its own: the submission goes on whatever the client does, as a batch should.
    tokio::spawn(run(
        state.submitter.clone(),
        tenant.clone(),
        id,
        file.id,
        Some(deadline),
    ));
    let batch = batch_view(&state, &tenant, id)
        .await?
        .ok_or_else(|| ApiError::internal("a batch just recorded cannot be read"))?;
    Ok((StatusCode::OK, Json(batch.object())))
}

fn input_file_not_found(id: &str) -> ApiError {
    let mut e = ApiError::not_found(format!(
        "input_file_id: no file {id}; upload it first with POST /v1/files (purpose=batch)"
    ));
    e.field = Some("input_file_id".into());
    e
}

/// Resumes every batch whose submission a stopped process left unfinished, each in a task
/// of its own (see the module doc); returns how many. `App::serve` calls it before serving.
pub async fn resume(submitter: &Submitter) -> Result<usize, crate::store::StoreError> {
    let unfinished = submitter.store.unfinished_batches().await?;
    for batch in &unfinished {
        tracing::info!(batch = %batch_id(batch.id), tenant = %batch.tenant, "resuming the submission of a batch");
        tokio::spawn(run(
            submitter.clone(),
            batch.tenant.clone(),
            batch.id,
            batch.input_file_id.clone(),
            batch
                .expires_at
                .and_then(chrono::DateTime::from_timestamp_millis),
        ));
    }
    Ok(unfinished.len())
}

/// Submits the batch's input file as its bulk (again, after a restart: only the lines the
/// bulk lacks become jobs); a bad file, or a submission that cannot finish, makes the batch
/// `failed`. The file is streamed from where the store keeps it (in the store itself with
/// PostgreSQL, so any API process may run this for a file another one took).
async fn run(
    submitter: Submitter,
    tenant: String,
    id: Uuid,
    input_file_id: String,
    deadline: Option<chrono::DateTime<chrono::Utc>>,
) {
    let request = BulkRequest {
        name: Some(batch_id(id)),
        defaults: Defaults {
            deadline,
            ..Defaults::default()
        },
        skip_invalid: false,
    };
    let outcome = async {
        // Kept while the batch is unfinished (`delete_file` refuses it), so it is there.
        let file = submitter
            .store
            .file(&tenant, &input_file_id)
            .await?
            .ok_or_else(|| BulkError::Read {
                what: format!("the input file {input_file_id}"),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        let content = StreamReader::new(submitter.store.file_content(&file));
        let reader = tokio::io::BufReader::with_capacity(256 << 10, content);
        let prepared = prepare(&submitter, &tenant, reader, &request).await?;
        submitter.store.start_batch(id).await?;
        prepared.submit(&submitter, &tenant, &mut |_, _| {}).await
    }
    .await;
    let errors = match outcome {
        // Cancelled while validating or submitting: the cancel is the outcome.
        Ok(_) | Err(BulkError::Cancelled(_)) => return,
        Err(BulkError::Invalid { errors, .. }) => errors
            .iter()
            .map(|e| {
                json!({
                    "code": "invalid_request",
                    "message": e.message,
                    "param": if e.field.is_empty() { None } else { Some(&e.field) },
                    "line": e.line,
                })
            })
            .collect(),
        Err(e) => {
            tracing::warn!(batch = %batch_id(id), error = %e, "batch submission failed");
            let code = match e {
                BulkError::Empty(_) => "empty_file",
                _ => "submission_failed",
            };
            vec![json!({ "code": code, "message": e.to_string(), "param": null, "line": null })]
        }
    };
    if let Err(e) = submitter.store.fail_batch(id, Value::Array(errors)).await {
        tracing::error!(batch = %batch_id(id), error = %e, "cannot record that a batch failed");
    }
}

/// OpenAI's limits on `metadata`: 16 pairs, keys up to 64 characters, string values up to 512.
fn check_metadata(metadata: Option<&Map<String, Value>>) -> Result<(), ApiError> {
    let Some(metadata) = metadata else {
        return Ok(());
    };
    if metadata.len() > 16 {
        return Err(ApiError::invalid(
            "metadata",
            format!("{} pairs; at most 16 are allowed", metadata.len()),
        ));
    }
    for (key, value) in metadata {
        let field = format!("metadata.{key}");
        if key.chars().count() > 64 {
            return Err(ApiError::invalid(field, "keys are at most 64 characters"));
        }
        match value {
            Value::String(text) if text.chars().count() <= 512 => {}
            Value::String(_) => {
                return Err(ApiError::invalid(
                    field,
                    "values are at most 512 characters",
                ))
            }
            _ => return Err(ApiError::invalid(field, "values must be strings")),
        }
    }
    Ok(())
}

/// `GET /v1/batches/{id}`.
pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(owned(&state, &tenant, &id).await?.object()))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<u32>,
    after: Option<String>,
}

/// `GET /v1/batches?limit=&after=`: newest first, OpenAI's cursor page.
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be from 1 to 100"));
    }
    let after = params
        .after
        .as_deref()
        .map(|after| {
            parse_batch_id(after)
                .ok_or_else(|| ApiError::invalid("after", format!("\"{after}\" is not a batch id")))
        })
        .transpose()?;
    let mut ids = state.store.bulk_ids(&tenant, after, limit + 1).await?;
    let has_more = ids.len() > limit as usize;
    ids.truncate(limit as usize);
    let mut data = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(batch) = batch_view(&state, &tenant, id).await? {
            data.push(batch.object());
        }
    }
    Ok(Json(super::cursor_page(data, has_more)))
}

/// `POST /v1/batches/{id}/cancel`: cancels the jobs still queued; the batch is `cancelling`
/// until its running jobs finish, then `cancelled`.
pub async fn cancel(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let batch = owned(&state, &tenant, &id).await?;
    // Expired is the batch's own notion (its window), final although jobs may be queued.
    if batch.status == "expired" {
        return Err(already_finished("batch", &id, batch.status));
    }
    // The store decides whether the bulk has finished, as for `POST /v1/bulk/{id}/cancel`.
    if let Some(BulkCancel::Finished) = state.store.cancel_bulk(&tenant, batch.bulk.id).await? {
        let status = owned(&state, &tenant, &id).await?.status;
        return Err(already_finished("batch", &id, status));
    }
    Ok(Json(owned(&state, &tenant, &id).await?.object()))
}

fn parse_batch_id(id: &str) -> Option<Uuid> {
    id.strip_prefix(BATCH_ID_PREFIX)
        .and_then(|hex| Uuid::try_parse(hex).ok())
}

/// The tenant's batch `id`, or a 404 (another tenant's is no different from none).
async fn owned(state: &ApiState, tenant: &str, id: &str) -> Result<BatchView, ApiError> {
    let not_found = || ApiError::not_found(format!("no batch {id}"));
    let bulk = parse_batch_id(id).ok_or_else(not_found)?;
    batch_view(state, tenant, bulk).await?.ok_or_else(not_found)
}
