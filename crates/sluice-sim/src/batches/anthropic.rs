//! Anthropic's Message Batches API, simulated.
//!
//! - `POST /v1/messages/batches` (`{"requests": [{"custom_id", "params": {…Messages
//!   params…}}]}`), `GET /v1/messages/batches/{id}`, `GET /v1/messages/batches`
//!   (`before_id`, `after_id`, `limit`; `{data, has_more, first_id, last_id}`, newest first),
//!   `POST /v1/messages/batches/{id}/cancel`, `GET /v1/messages/batches/{id}/results` (JSONL).
//! - The MessageBatch object: `processing_status` `in_progress` | `canceling` | `ended`;
//!   `request_counts` with all five counts, of which all but `processing` stay 0 until the
//!   batch has ended (Anthropic gives no partial progress); RFC 3339 timestamps; `results_url`
//!   `null` until ended, then an absolute URL built from the request's `Host`.
//! - Result lines `{"custom_id", "result": {…}}` with `type` `succeeded` (the whole
//!   `Message`, `usage.service_tier: "batch"`), `errored` (`{"type": "error", "error":
//!   {"type", "message"}, "request_id"}`), `canceled` or `expired`.
//!
//! As on Anthropic, the create call checks the envelope (`requests`, each `custom_id` unique
//! and of 1–64 letters, digits, `_` or `-`, each `params` an object) and answers a 400 naming
//! the field; the params themselves are checked when the item runs, so a bad one is an
//! `errored` result with `invalid_request_error`. The headers are checked as on
//! `/v1/messages` (`x-api-key` or a bearer token, `anthropic-version`).

use super::{new_id, rfc3339, Batch, Item, ItemState, Phase};
use crate::anthropic::{check_headers, Anthropic, ApiError};
use crate::pipeline;
use crate::{Family, SimState};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1/messages/batches", post(create).get(list))
        .route("/v1/messages/batches/{id}", get(retrieve))
        .route("/v1/messages/batches/{id}/cancel", post(cancel))
        .route("/v1/messages/batches/{id}/results", get(results))
}

/// Adds Anthropic's headers to an answer, or answers the error.
fn respond(state: &SimState, started: Instant, result: Result<Response, ApiError>) -> Response {
    pipeline::respond::<Anthropic>(state, started, result)
}

/// `http://HOST`, from the request, for `results_url`.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// The MessageBatch object.
fn object(batch: &Batch<()>, state: &SimState, origin: &str) -> Value {
    let phase = batch.phase(state.batch_timing());
    let tally = batch.tally(phase);
    let (status, ended_at) = match phase {
        Phase::Running { .. } => ("in_progress", None),
        Phase::Cancelling { .. } => ("canceling", None),
        Phase::Ended { after, .. } => ("ended", Some(rfc3339(batch.at(after)))),
    };
    // Anthropic counts outcomes only once the whole batch has ended.
    let ended = ended_at.is_some();
    let final_count = |n: u64| if ended { n } else { 0 };
    json!({
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": if ended { 0 } else { batch.items.len() as u64 },
            "succeeded": final_count(tally.succeeded),
            "errored": final_count(tally.errored),
            "canceled": final_count(tally.cancelled),
            "expired": final_count(tally.expired),
        },
        "ended_at": ended_at,
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.at(state.config.batch_window)),
        "archived_at": null,
        "cancel_initiated_at": batch.cancel_asked_at().map(rfc3339),
        "results_url": ended.then(|| format!("{origin}/v1/messages/batches/{}/results", batch.id)),
    })
}

fn json_response(value: Value) -> Response {
    axum::Json(value).into_response()
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        format!("Message batch {id} not found."),
    )
}

/// A `custom_id` as Anthropic accepts it: 1 to 64 of `[a-zA-Z0-9_-]`.
fn valid_custom_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The requests of a create body, checked as Anthropic checks them: `(custom_id, params)`.
fn read_requests(body: &Value) -> Result<Vec<(String, Value)>, ApiError> {
    let requests = match body.get("requests") {
        None => return Err(ApiError::invalid("requests: Field required")),
        Some(Value::Array(requests)) if requests.is_empty() => {
            return Err(ApiError::invalid(
                "requests: List should have at least 1 item after validation, not 0",
            ))
        }
        Some(Value::Array(requests)) => requests,
        Some(_) => return Err(ApiError::invalid("requests: Input should be a valid list")),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let custom_id = match request.get("custom_id") {
            None => {
                return Err(ApiError::invalid(format!(
                    "requests.{i}.custom_id: Field required"
                )))
            }
            Some(Value::String(id)) if valid_custom_id(id) => id,
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )))
            }
        };
        if !seen.insert(custom_id.as_str()) {
            return Err(ApiError::invalid(format!(
                "requests.{i}.custom_id: Duplicate custom_id '{custom_id}'; each request in a batch needs a unique custom_id"
            )));
        }
        let params = match request.get("params") {
            None => {
                return Err(ApiError::invalid(format!(
                    "requests.{i}.params: Field required"
                )))
            }
            Some(params @ Value::Object(_)) => params.clone(),
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "requests.{i}.params: Input should be a valid dictionary"
                )))
            }
        };
        out.push((custom_id.clone(), params));
    }
    Ok(out)
}

async fn create(State(state): State<Arc<SimState>>, headers: HeaderMap, raw: Bytes) -> Response {
    let started = Instant::now();
    let result = check_headers(&headers).and_then(|()| {
        let body: Value = serde_json::from_slice(&raw).map_err(|e| {
            ApiError::invalid(format!("There was an error parsing the body as JSON: {e}"))
        })?;
        let items: Vec<Item> = read_requests(&body)?
            .into_iter()
            .map(|(custom_id, params)| Item {
                outcome: pipeline::batch_item::<Anthropic>(&state, &(), &params),
                custom_id,
                metadata: Value::Null,
            })
            .collect();
        state.batches.count(Family::Anthropic, items.len());
        let batch = Batch::new(new_id("msgbatch_"), items, ());
        let object = object(&batch, &state, &origin(&headers));
        state.batches.anthropic.add(batch);
        Ok(json_response(object))
    });
    respond(&state, started, result)
}

/// Runs `f` on the batch `id` for a caller with Anthropic's headers, and answers.
fn on_batch(
    state: &SimState,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut Batch<()>) -> Result<Response, ApiError>,
) -> Response {
    let started = Instant::now();
    let result = check_headers(headers).and_then(|()| {
        let found = state.batches.anthropic.with(id, f);
        found.unwrap_or_else(|| Err(not_found(id)))
    });
    respond(state, started, result)
}

async fn retrieve(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    on_batch(&state, &headers, &id, |batch| {
        Ok(json_response(object(batch, &state, &origin(&headers))))
    })
}

/// Cancels a batch still in progress; an ended batch is answered unchanged.
async fn cancel(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    on_batch(&state, &headers, &id, |batch| {
        batch.cancel(state.batch_timing());
        Ok(json_response(object(batch, &state, &origin(&headers))))
    })
}

/// One line of the results file.
fn result_line(item: &Item, state: ItemState<'_>) -> Option<Value> {
    let result = match state {
        ItemState::Pending => return None,
        ItemState::Answered { body, .. } => json!({"type": "succeeded", "message": body}),
        ItemState::Failed { body, .. } => json!({"type": "errored", "error": body}),
        ItemState::Cancelled => json!({"type": "canceled"}),
        ItemState::Expired => json!({"type": "expired"}),
    };
    Some(json!({"custom_id": item.custom_id, "result": result}))
}

async fn results(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    on_batch(&state, &headers, &id, |batch| {
        let phase = batch.phase(state.batch_timing());
        if phase.end().is_none() {
            return Err(ApiError::invalid(format!(
                "Message batch {id} has not ended yet; its results are available once its \
                 processing_status is ended."
            )));
        }
        let mut body = String::new();
        for line in batch
            .states(phase)
            .filter_map(|(item, state)| result_line(item, state))
        {
            body.push_str(&line.to_string());
            body.push('\n');
        }
        let mut response = body.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-jsonl"),
        );
        Ok(response)
    })
}

async fn list(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let result = check_headers(&headers).and_then(|()| {
        let limit = super::page_limit(&query, 1000).map_err(|text| {
            ApiError::invalid(format!(
                "limit: Input should be an integer from 1 to 1000, not '{text}'"
            ))
        })?;
        let origin = origin(&headers);
        let mut all = state
            .batches
            .anthropic
            .newest_first(|batch| object(batch, &state, &origin));
        // `before_id`: the page just before that batch, read backwards from it.
        let (data, has_more) = match query.get("before_id") {
            Some(before) => {
                all.reverse();
                let (mut data, has_more) = super::page(all, Some(before), limit);
                data.reverse();
                (data, has_more)
            }
            None => super::page(all, query.get("after_id").map(String::as_str), limit),
        };
        Ok(json_response(super::list_body(data, has_more)))
    });
    respond(&state, started, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Value {
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": text}]})
    }

    #[test]
    fn requests_are_checked_like_anthropic() {
        let error = |body: Value| read_requests(&body).unwrap_err().message;
        assert_eq!(error(json!({})), "requests: Field required");
        assert!(error(json!({"requests": []})).contains("at least 1 item"));
        assert_eq!(
            error(json!({"requests": [{"params": message("a")}]})),
            "requests.0.custom_id: Field required"
        );
        assert!(
            error(json!({"requests": [{"custom_id": "a b", "params": message("a")}]}))
                .contains("requests.0.custom_id: String should match pattern")
        );
        assert!(error(json!({"requests": [
            {"custom_id": "a", "params": message("a")},
            {"custom_id": "a", "params": message("b")},
        ]}))
        .starts_with("requests.1.custom_id: Duplicate"));
        assert_eq!(
            error(json!({"requests": [{"custom_id": "a"}]})),
            "requests.0.params: Field required"
        );
        let ok =
            read_requests(&json!({"requests": [{"custom_id": "job-1_a", "params": message("a")}]}));
        assert_eq!(ok.unwrap()[0].0, "job-1_a");
    }
}
