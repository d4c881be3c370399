//! `/v1/jobs`: submit, poll (with long-poll) and cancel jobs.
//!
//! A submission answers `202` with each job's id; a job whose `custom_id` the tenant already
//! used for the same request is not recorded again: the answer names the first job
//! (`duplicate: true`), with the same `202`.

use super::auth::Tenant;
use super::error::ApiError;
use super::ApiState;
use crate::job::{from_value_naming_field, JobSpec, JobStatus};
use crate::store::JobView;
use crate::submit::Submitted;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// The longest a `GET ?wait=` may hold a connection.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(300);
/// How often a long-poll looks at the store (workers may run in another process): often at
/// first, since a realtime answer takes milliseconds, then backing off to spare the store.
const FIRST_POLL: Duration = Duration::from_millis(2);
const SLOWEST_POLL: Duration = Duration::from_millis(50);

/// `POST /v1/jobs`: a job object, or an array of them.
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("", format!("the body is not valid JSON: {e}")))?;
    let (specs, several) = match value {
        Value::Array(items) => {
            let specs = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    from_value_naming_field::<JobSpec>(item)
                        .map_err(|e| ApiError::from(e.within(&format!("[{i}]"))))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (specs, true)
        }
        other => (
            vec![from_value_naming_field::<JobSpec>(other).map_err(ApiError::from)?],
            false,
        ),
    };
    if specs.is_empty() {
        return Err(ApiError::invalid("", "the array holds no jobs"));
    }
    state
        .tenant_limits
        .admit(&tenant, specs.iter().map(|spec| &spec.request))?;
    let submitted = state.submitter.submit(&tenant, specs).await?;
    let body = if several {
        json!({ "jobs": submitted.iter().map(submitted_json).collect::<Vec<_>>() })
    } else {
        submitted_json(&submitted[0])
    };
    // A repeat of a submission answers as the first did, `202`, as idempotency keys do
    // elsewhere (Stripe replays the original response; the IETF `Idempotency-Key` draft
    // asks the same), so a client retrying a request whose answer it lost reads the same
    // status; `duplicate: true` and the `idempotent-replayed` header (Stripe's name) say
    // that nothing new was recorded.
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if submitted.iter().all(|s| s.duplicate) {
        response.headers_mut().insert(
            REPLAYED_HEADER,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Set on the answer to a submission whose every job was already recorded under its
/// `custom_id`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

fn submitted_json(s: &Submitted) -> Value {
    json!({ "id": s.id, "duplicate": s.duplicate })
}

#[derive(Debug, Deserialize)]
pub struct GetParams {
    /// Long-poll: how long to wait for the job to become final, e.g. `30s`.
    wait: Option<String>,
}

/// `GET /v1/jobs/{id}`.
pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(params): Query<GetParams>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let wait = match params.wait.as_deref() {
        None => Duration::ZERO,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| {
                ApiError::invalid(
                    "wait",
                    format!("\"{text}\" is not a duration like 30s: {e}"),
                )
            })?
            .min(MAX_WAIT),
    };
    let job = wait_until_final(&state, &tenant, id, wait).await?;
    Ok(Json(serde_json::to_value(job).map_err(ApiError::internal)?))
}

/// The tenant's job `id`, once it is final or `wait` has passed, whichever comes first.
///
/// Polls the store rather than listening to the workers, because the workers may run in
/// another process (`sluice worker`); the read pool makes a poll cheap.
pub(super) async fn wait_until_final(
    state: &ApiState,
    tenant: &str,
    id: Uuid,
    wait: Duration,
) -> Result<JobView, ApiError> {
    let give_up = tokio::time::Instant::now() + wait;
    let mut pause = FIRST_POLL;
    loop {
        let job = state
            .store
            .job(tenant, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        if job.status.is_terminal() || tokio::time::Instant::now() >= give_up {
            return Ok(job);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(SLOWEST_POLL);
    }
}

/// `DELETE /v1/jobs/{id}`: cancels a queued job; a running or finished one is a 409.
pub async fn cancel(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    match state.store.cancel(&tenant, id).await? {
        None => Err(ApiError::not_found(format!("no job {id}"))),
        Some(JobStatus::Cancelled) => Ok(Json(json!({ "id": id, "status": "cancelled" }))),
        Some(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!("job {id} is {status}; only a queued job can be cancelled"),
        )),
    }
}

pub(super) fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    super::parse_id(text, "job")
}
