//! Gemini's batch mode (Developer API), simulated, with inline requests.
//!
//! - `POST /v1beta/models/{model}:batchGenerateContent` with
//!   `{"batch": {"displayName", "inputConfig": {"requests": {"requests": [{"request":
//!   {GenerateContentRequest}, "metadata": {…}}]}}}}` (camelCase or snake_case, as Google's
//!   parser takes both), answered with a long-running Operation: `name: "batches/…"`,
//!   `metadata` the batch (with its `@type`), `done: false`.
//! - `GET /v1beta/batches/{id}`: the same Operation, in the shape the `google-genai` SDK
//!   reads (`_BatchJob_from_mldev`): `metadata.state` (`BATCH_STATE_PENDING` in the create
//!   answer, then `RUNNING`, `SUCCEEDED`, `CANCELLED` or `EXPIRED`), `displayName`,
//!   `model`, `createTime`, `updateTime`, `endTime`, `batchStats` (int64 counts as strings),
//!   and once ended `metadata.output.inlinedResponses.inlinedResponses[]`, each
//!   `{response | error, metadata}` in request order; `done: true` with the same output as
//!   `response`.
//! - `POST /v1beta/batches/{id}:cancel` (answers `{}`), `GET /v1beta/batches`
//!   (`pageSize`, `pageToken`; `{operations, nextPageToken}`, newest first).
//! - All of it under `/v1` too, like the realtime Gemini routes.
//!
//! An item's `error` is a `google.rpc.Status`: `code` is the gRPC code (13 `INTERNAL` for
//! `batch=error`, 3 `INVALID_ARGUMENT` for `batch=invalid` or a bad request, 4
//! `DEADLINE_EXCEEDED` for an expired item, 1 `CANCELLED` for a cancelled one), with
//! `message` and, for readers of the REST error envelope, `status` (the code's name).
//! `FAILED` is never reached: an item's failure does not fail its batch.
//!
//! Not simulated: input files (`inputConfig.fileName`, answered with a 400 saying so) and
//! `responsesFile` output.

use super::{new_id, rfc3339, Batch, End, Item, ItemState, Phase};
use crate::gemini::{batch_call, check_key, field, rpc_status, ApiError, Gemini};
use crate::pipeline;
use crate::{Family, SimState};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

const BATCH_TYPE: &str =
    "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch";
const OUTPUT_TYPE: &str =
    "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput";

/// What a Gemini batch records beyond its items.
#[derive(Debug, Clone)]
pub(crate) struct Detail {
    /// `models/…`.
    model: String,
    display_name: String,
}

/// The `/v1beta` routes; those under `/v1` are shared with OpenAI: see `super::routes`.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1beta/batches", get(list))
        .route("/v1beta/batches/{target}", get(retrieve).post(cancel))
}

/// `POST …/models/{model}:batchGenerateContent`, reached through the realtime Gemini
/// module's model route.
pub(crate) fn create(
    state: &SimState,
    model: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    raw: &[u8],
) -> Response {
    let result = check_key(headers, query).and_then(|()| {
        let body: Value = serde_json::from_slice(raw)
            .map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))?;
        let (display_name, requests) = read_batch(&body)?;
        let model = format!("models/{}", model.trim_start_matches("models/"));
        let items: Vec<Item> = requests
            .into_iter()
            .enumerate()
            .map(|(index, (request, metadata))| Item {
                custom_id: metadata
                    .get("key")
                    .and_then(Value::as_str)
                    .map_or_else(|| index.to_string(), String::from),
                outcome: pipeline::batch_item::<Gemini>(state, &batch_call(&model), request),
                metadata,
            })
            .collect();
        state.batches.count(Family::Gemini, items.len());
        let batch = Batch::new(
            new_id(""),
            items,
            Detail {
                model,
                display_name,
            },
        );
        let operation = operation(&batch, state, true);
        state.batches.gemini.add(batch);
        Ok(operation)
    });
    answer(state, result)
}

fn answer(state: &SimState, result: Result<Value, ApiError>) -> Response {
    pipeline::respond::<Gemini>(state, Instant::now(), result.map(axum::Json))
}

/// A Google "field is missing" error, in the wording of its request validation.
fn missing(path: &str) -> ApiError {
    let name = path.rsplit('.').next().unwrap_or(path);
    ApiError::invalid(format!(
        "* BatchGenerateContentRequest.{path}: {name} is not specified\n"
    ))
}

/// An inline request: the `GenerateContentRequest` and its `metadata`.
type Inline<'a> = (&'a Value, Value);

/// The display name and the inline requests (each with its metadata, `Null` when none) of
/// a create body.
fn read_batch(body: &Value) -> Result<(String, Vec<Inline<'_>>), ApiError> {
    let batch = body
        .as_object()
        .and_then(|body| field(body, "batch"))
        .and_then(Value::as_object)
        .ok_or_else(|| missing("batch"))?;
    let display_name = field(batch, "displayName")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| missing("batch.display_name"))?
        .to_string();
    let input = field(batch, "inputConfig")
        .and_then(Value::as_object)
        .ok_or_else(|| missing("batch.input_config"))?;
    if field(input, "fileName").is_some() {
        return Err(ApiError::invalid(
            "* BatchGenerateContentRequest.batch.input_config.file_name: the simulator runs \
             inline requests only; send input_config.requests.requests\n",
        ));
    }
    let requests = field(input, "requests")
        .and_then(Value::as_object)
        .and_then(|requests| field(requests, "requests"))
        .and_then(Value::as_array)
        .filter(|requests| !requests.is_empty())
        .ok_or_else(|| missing("batch.input_config.requests.requests"))?;
    requests
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let entry = entry.as_object();
            let request = entry
                .and_then(|entry| field(entry, "request"))
                .ok_or_else(|| {
                    missing(&format!(
                        "batch.input_config.requests.requests[{i}].request"
                    ))
                })?;
            let metadata = entry
                .and_then(|entry| field(entry, "metadata"))
                .cloned()
                .unwrap_or(Value::Null);
            Ok((request, metadata))
        })
        .collect::<Result<_, _>>()
        .map(|requests| (display_name, requests))
}

/// The gRPC code of a `google.rpc.Code` name, as a `google.rpc.Status` carries it.
fn rpc_code(name: &str) -> u32 {
    match name {
        "CANCELLED" => 1,
        "INVALID_ARGUMENT" => 3,
        "DEADLINE_EXCEEDED" => 4,
        "NOT_FOUND" => 5,
        "PERMISSION_DENIED" => 7,
        "RESOURCE_EXHAUSTED" => 8,
        "FAILED_PRECONDITION" => 9,
        "ABORTED" => 10,
        "UNIMPLEMENTED" => 12,
        "UNAVAILABLE" => 14,
        "UNAUTHENTICATED" => 16,
        _ => 13, // INTERNAL
    }
}

/// A `google.rpc.Status` for an item's error.
fn status(name: &str, message: &str) -> Value {
    json!({"code": rpc_code(name), "message": message, "status": name})
}

/// One entry of `inlinedResponses`, or `None` while the item is pending.
fn inlined_response(item: &Item, state: ItemState<'_>) -> Option<Value> {
    let mut entry = match state {
        ItemState::Pending => return None,
        ItemState::Answered { body, .. } => json!({"response": body}),
        ItemState::Failed { status: http, body } => {
            let name = body
                .pointer("/error/status")
                .and_then(Value::as_str)
                .unwrap_or_else(|| rpc_status(http));
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            json!({"error": status(name, message)})
        }
        ItemState::Expired => json!({"error": status(
            "DEADLINE_EXCEEDED",
            "The batch's completion window ended before this request ran.",
        )}),
        ItemState::Cancelled => json!({"error": status(
            "CANCELLED",
            "The batch was cancelled before this request ran.",
        )}),
    };
    if !item.metadata.is_null() {
        entry["metadata"] = item.metadata.clone();
    }
    Some(entry)
}

/// The batch as a long-running Operation; `creating` for the create call's answer, which
/// is `BATCH_STATE_PENDING`.
fn operation(batch: &Batch<Detail>, state: &SimState, creating: bool) -> Value {
    let phase = batch.phase(state.batch_timing());
    let tally = batch.tally(phase);
    let name = format!("batches/{}", batch.id);
    let ended = phase.end().filter(|_| !creating);
    // Gemini has no cancelling state: a cancelled batch runs until the cancel settles.
    let batch_state = match ended {
        _ if creating => "BATCH_STATE_PENDING",
        Some(End::Completed) => "BATCH_STATE_SUCCEEDED",
        Some(End::Expired) => "BATCH_STATE_EXPIRED",
        Some(End::Cancelled) => "BATCH_STATE_CANCELLED",
        None => "BATCH_STATE_RUNNING",
    };
    let end_time = match phase {
        Phase::Ended { after, .. } if ended.is_some() => Some(rfc3339(batch.at(after))),
        _ => None,
    };
    let created = rfc3339(batch.created_at);
    let count = |n: u64| n.to_string();
    let mut metadata = json!({
        "@type": BATCH_TYPE,
        "name": name,
        "model": batch.detail.model,
        "displayName": batch.detail.display_name,
        "createTime": created,
        "updateTime": end_time.clone().unwrap_or_else(|| created.clone()),
        "batchStats": {
            "requestCount": count(batch.items.len() as u64),
            "successfulRequestCount": count(tally.succeeded),
            "failedRequestCount": count(tally.errored + tally.expired + tally.cancelled),
            "pendingRequestCount": count(tally.pending),
        },
        "state": batch_state,
    });
    let mut operation = json!({"name": name, "done": ended.is_some()});
    if let Some(end_time) = end_time {
        metadata["endTime"] = json!(end_time);
        let responses: Vec<Value> = batch
            .states(phase)
            .filter_map(|(item, state)| inlined_response(item, state))
            .collect();
        let inlined = json!({"inlinedResponses": responses});
        metadata["output"] = json!({"inlinedResponses": inlined});
        operation["response"] = json!({"@type": OUTPUT_TYPE, "inlinedResponses": inlined});
    }
    operation["metadata"] = metadata;
    operation
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Requested entity was not found: batches/{id}."),
    )
}

pub(super) async fn retrieve(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let result = check_key(&headers, &query).and_then(|()| {
        state
            .batches
            .gemini
            .with(&id, |batch| operation(batch, &state, false))
            .ok_or_else(|| not_found(&id))
    });
    answer(&state, result)
}

/// `POST batches/{id}:cancel`, the only custom method on a batch the simulator has.
pub(super) async fn cancel(
    State(state): State<Arc<SimState>>,
    Path(target): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(id) = target.strip_suffix(":cancel") else {
        return crate::gemini::unknown_route(State(state), method, uri).await;
    };
    let timing = state.batch_timing();
    let result = check_key(&headers, &query).and_then(|()| {
        state
            .batches
            .gemini
            .with(id, |batch| batch.cancel(timing))
            .map(|()| json!({}))
            .ok_or_else(|| not_found(id))
    });
    answer(&state, result)
}

pub(super) async fn list(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let result = check_key(&headers, &query).and_then(|()| {
        let size = match query.get("pageSize") {
            None => 50,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Invalid value at 'page_size' (TYPE_INT32), \"{text}\""
                    ))
                })?,
        };
        let all = state
            .batches
            .gemini
            .newest_first(|batch| operation(batch, &state, false));
        // The page token is the id of the last batch of the previous page.
        let (page, has_more) = super::page(all, query.get("pageToken").map(String::as_str), size);
        let mut body = json!({});
        if has_more {
            body["nextPageToken"] = json!(page.last().map(|(id, _)| id));
        }
        body["operations"] = page.into_iter().map(|(_, operation)| operation).collect();
        Ok(body)
    });
    answer(&state, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_body_is_read_in_either_case() {
        let body = json!({"batch": {"display_name": "nightly", "input_config": {"requests": {"requests": [
            {"request": {"contents": [{"parts": [{"text": "a"}]}]}, "metadata": {"key": "k1"}},
            {"request": {"contents": [{"parts": [{"text": "b"}]}]}},
        ]}}}});
        let (name, requests) = read_batch(&body).unwrap();
        assert_eq!(name, "nightly");
        assert_eq!(requests[0].1, json!({"key": "k1"}));
        assert_eq!(requests[1].1, Value::Null);
    }

    #[test]
    fn a_missing_part_is_named() {
        let message =
            |body: Value| read_batch(&body).unwrap_err().body()["error"]["message"].clone();
        assert!(message(json!({}))
            .to_string()
            .contains("BatchGenerateContentRequest.batch"));
        let no_name =
            json!({"batch": {"inputConfig": {"requests": {"requests": [{"request": {}}]}}}});
        assert!(message(no_name).to_string().contains("batch.display_name"));
        let no_request = json!({"batch": {"displayName": "x", "inputConfig": {"requests": {"requests": [{"metadata": {}}]}}}});
        assert!(message(no_request)
            .to_string()
            .contains("requests[0].request"));
        let file = json!({"batch": {"displayName": "x", "inputConfig": {"fileName": "files/a"}}});
        assert!(message(file).to_string().contains("inline requests only"));
    }

    #[test]
    fn item_errors_are_rpc_statuses() {
        let item = Item {
            custom_id: "0".into(),
            metadata: json!({"key": "a"}),
            outcome: super::super::Outcome::Expires,
        };
        let body = json!({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}});
        let failed = inlined_response(
            &item,
            ItemState::Failed {
                status: 500,
                body: &body,
            },
        )
        .unwrap();
        assert_eq!(
            failed,
            json!({"error": {"code": 13, "message": "boom", "status": "INTERNAL"}, "metadata": {"key": "a"}})
        );
        let expired = inlined_response(&item, ItemState::Expired).unwrap();
        assert_eq!(expired["error"]["code"], 4);
        assert_eq!(inlined_response(&item, ItemState::Pending), None);
    }
}
