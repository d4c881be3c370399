//! `/v1/bulk`: submit a JSONL body as a bulk of jobs, follow it, download its results, cancel
//! it; and `/v1/models`, the model names a line may ask for (the CLI validates against it
//! before uploading).
//!
//! The body of `POST /v1/bulk` is read as a stream (never whole; see [`crate::bulk::submit`]).
//! The submission runs in a task of its own, so a client that disconnects does not leave it
//! half done. With `Accept: application/x-ndjson` the answer is a stream of progress events
//! (`{"type": "progress", "done", "total"}`) ending with `{"type": "submitted", "bulk": …}` or
//! `{"type": "error", "error": …}`; otherwise one JSON object once every job is published.

use super::auth::Tenant;
use super::error::ApiError;
use super::ApiState;
use crate::bulk::submit::prepare;
use crate::bulk::wire::{
    ProgressEvent, ResultsQuery, Submission, SubmitQuery, NDJSON, PENDING_HEADER,
};
use crate::bulk::{output::output_line, BulkError};
use crate::store::{BulkCancel, BulkView, ResultsFilter};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

/// `POST /v1/bulk`: a JSONL body; the query names the bulk and sets the defaults.
pub async fn submit(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(query): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = query
        .into_request()
        .map_err(|e| ApiError::invalid(e.field, e.message))?;
    let input =
        tokio_util::io::StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let prepared = prepare(&state.submitter, &tenant, input, &request)
        .await
        .map_err(bulk_error)?;
    let streamed = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains(NDJSON));
    let (events, mut receive) = tokio::sync::mpsc::channel::<ProgressEvent>(64);
    let submitter = state.submitter.clone();
    // A task of its own: the submission finishes even if the client goes away.
    let task = tokio::spawn(async move {
        let progress_events = events.clone();
        let mut progress = move |done: u64, total: u64| {
            // Progress is best effort: a slow reader misses some, never the last event.
            let _ = progress_events.try_send(ProgressEvent::Progress { done, total });
        };
        let outcome = prepared.submit(&submitter, &tenant, &mut progress).await;
        let last = match &outcome {
            Ok(submission) => ProgressEvent::Submitted {
                bulk: submission.clone(),
            },
            Err(e) => {
                let error = bulk_error_body(e);
                ProgressEvent::Error {
                    status: error.status.as_u16(),
                    error: json!({"type": error.kind, "message": error.message}),
                }
            }
        };
        let _ = events.send(last).await;
        outcome
    });
    if !streamed {
        drop(receive);
        let submission = task
            .await
            .map_err(ApiError::internal)?
            .map_err(bulk_error)?;
        return Ok(submitted_response(submission));
    }
    let stream = futures::stream::poll_fn(move |cx| receive.poll_recv(cx)).map(|event| {
        let mut line = serde_json::to_vec(&event).expect("a progress event always serialises");
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(stream),
    )
        .into_response())
}

fn submitted_response(submission: Submission) -> Response {
    let status = if submission.submitted > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(submission)).into_response()
}

fn bulk_error(e: BulkError) -> ApiError {
    bulk_error_body(&e)
}

/// The API error for a failed bulk submission, with the bad lines when there are some.
fn bulk_error_body(e: &BulkError) -> ApiError {
    match e {
        BulkError::Invalid {
            lines,
            invalid,
            errors,
        } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "{invalid} of {lines} lines are invalid; nothing was submitted. Fix them, or add \
                 skip_invalid=true to submit the valid lines (see \"lines\": the first {} bad lines)",
                errors.len()
            ),
        )
        .with("lines", json!(errors))
        .with("invalid_lines", json!(invalid))
        .with("total_lines", json!(lines)),
        BulkError::Empty(_) => ApiError::invalid("", "the body holds no request (every line is empty)"),
        BulkError::Usage(message) => ApiError::invalid("", message.clone()),
        BulkError::Read { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
        }
        BulkError::Cancelled(_) => ApiError::new(
            StatusCode::CONFLICT,
            "bulk_cancelled",
            "this bulk was cancelled; nothing more can be submitted to it (use another name)",
        ),
        BulkError::Interrupted { .. } | BulkError::Submit(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            e.to_string(),
        ),
        BulkError::Store(store) => match store.unwritable() {
            Some(reason) => ApiError::store_unwritable(reason),
            None => ApiError::internal(e),
        },
        BulkError::Write { .. } => ApiError::internal(e),
    }
}

/// `GET /v1/bulk/{id}`: counts by status, total, cost so far.
pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let bulk = owned_bulk(&state, &tenant, &id).await?;
    Ok(Json(
        serde_json::to_value(bulk).map_err(ApiError::internal)?,
    ))
}

/// `GET /v1/bulk/{id}/results`: one OpenAI batch output line per finished job, streamed.
pub async fn results(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(query): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let bulk = owned_bulk(&state, &tenant, &id).await?;
    let filter = ResultsFilter {
        ordered: query.ordered,
        errors_only: query.errors,
        successes_only: false,
    };
    let body = results_stream(&state, bulk.id, filter);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, NDJSON.to_string()),
            (
                header::HeaderName::from_static(PENDING_HEADER),
                (bulk.total - bulk.done).to_string(),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The finished jobs of the bulk `id` that `filter` picks, as OpenAI batch output lines (the
/// caller has checked the bulk is the tenant's).
pub(super) fn results_stream(
    state: &ApiState,
    id: Uuid,
    filter: ResultsFilter,
) -> impl futures::Stream<Item = Result<Bytes, crate::store::StoreError>> + Send + 'static {
    state
        .store
        .bulk_results(id, filter)
        .ready_chunks(256)
        .map(|rows| {
            let mut out = Vec::new();
            for row in rows {
                out.extend_from_slice(&output_line(&row?));
                out.push(b'\n');
            }
            Ok(Bytes::from(out))
        })
}

/// `POST /v1/bulk/{id}/cancel`: cancels every job of the bulk still queued; a finished bulk
/// is left as it is, with a 409 saying so ([`already_finished`]).
pub async fn cancel(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cancelled = match state
        .store
        .cancel_bulk(&tenant, resolve(&state, &tenant, &id).await?)
        .await?
        .ok_or_else(|| not_found(&id))?
    {
        BulkCancel::Cancelled { jobs } => jobs,
        BulkCancel::Finished => return Err(already_finished("bulk", &id, "completed")),
    };
    let bulk = owned_bulk(&state, &tenant, &id).await?;
    let id = bulk.id;
    Ok(Json(
        json!({ "id": id, "cancelled": cancelled, "status": bulk.status, "counts": bulk.counts }),
    ))
}

/// The answer to cancelling a bulk or batch that has finished: nothing was changed (the one
/// rule of `POST /v1/bulk/{id}/cancel` and `POST /v1/batches/{id}/cancel`, as OpenAI's 409).
pub(super) fn already_finished(what: &str, id: &str, status: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "invalid_request",
        format!(
            "{what} {id} is already {status}; there is nothing to cancel, and nothing was changed"
        ),
    )
}

/// `GET /v1/models`: every model name a job may ask for (OpenAI's list format).
pub async fn models(State(state): State<ApiState>, _tenant: Tenant) -> Json<Value> {
    let data: Vec<Value> = state
        .config
        .model_names()
        .into_iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "sluice" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// The tenant's bulk `id` (from the path), or a 404 (another tenant's is no different from
/// none).
async fn owned_bulk(state: &ApiState, tenant: &str, id: &str) -> Result<BulkView, ApiError> {
    let bulk = resolve(state, tenant, id).await?;
    state
        .store
        .bulk(tenant, bulk)
        .await?
        .ok_or_else(|| not_found(id))
}

/// The tenant's bulk that `id` names, in any form a command prints: its UUID, its batch id
/// (`batch_` + the UUID's hex, for a bulk made by `POST /v1/batches`) or its name.
async fn resolve(state: &ApiState, tenant: &str, id: &str) -> Result<Uuid, ApiError> {
    let by_id = Uuid::parse_str(id).ok().or_else(|| {
        id.strip_prefix(super::batches::BATCH_ID_PREFIX)
            .and_then(|hex| Uuid::try_parse(hex).ok())
    });
    match by_id {
        Some(id) => Ok(id),
        None => state
            .store
            .bulk_named(tenant, id)
            .await?
            .ok_or_else(|| not_found(id)),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no bulk {id}"))
}
