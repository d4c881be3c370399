//! OpenAI's Files and Batches API, simulated: upload a JSONL input file, create a batch of
//! chat completions from it, poll, list, cancel, download the output and error files.
//!
//! - `POST /v1/files` (multipart: `purpose`, `file`), `GET /v1/files/{id}`,
//!   `GET /v1/files/{id}/content`: the File object (`file-…`, `status: "processed"`). Files
//!   are kept in memory.
//! - `POST /v1/batches` (`input_file_id`, `endpoint` = `/v1/chat/completions`,
//!   `completion_window` = `"24h"`, optional `metadata`), `GET /v1/batches/{id}`,
//!   `GET /v1/batches?after=&limit=`, `POST /v1/batches/{id}/cancel`: the Batch object with
//!   every documented field (Unix-second timestamps, `request_counts`, `usage`, `errors`).
//!
//! The input file is checked line by line as OpenAI does: a line that is not JSON, whose
//! `method` is not `POST`, whose `url` is not the batch's endpoint, without `custom_id` or
//! `body`, or whose `custom_id` repeats an earlier one makes the batch `failed`, with each
//! problem in `errors.data` (`code`, `message`, `param`, `line`). The create call itself
//! answers `validating`, as OpenAI's does; after it the status follows the shared lifecycle
//! (`in_progress`, `cancelling`, then `completed`, `expired` or `cancelled`). `finalizing` is
//! never shown: the files are written from the items when read, there is nothing to
//! finalize.
//!
//! Once the batch has ended, answered items are in the output file
//! (`{"id": "batch_req_…", "custom_id", "response": {"status_code": 200, "request_id",
//! "body": <chat.completion>}, "error": null}`), the others in the error file: an HTTP error
//! as a `response` with its status and OpenAI's error body; an item that expired or was
//! cancelled as `"response": null, "error": {"code": "batch_expired" | "batch_cancelled",
//! "message"}`. Each file exists only when it has a line.

use super::{new_id, page, Batch, End, ItemState, Phase};
use crate::openai::{check_auth, ApiError, OpenAi};
use crate::pipeline;
use crate::{lock, Family, SimState};
use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// The only endpoint the simulator runs batches of.
const ENDPOINT: &str = "/v1/chat/completions";
const COMPLETION_WINDOW: &str = "24h";
/// The purposes OpenAI's Files API accepts.
const PURPOSES: [&str; 6] = [
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

/// What an OpenAI batch records beyond its items.
#[derive(Debug, Clone)]
pub(crate) struct Detail {
    input_file_id: String,
    completion_window: String,
    /// `null` or the object the client sent.
    metadata: Value,
    /// The model of the first request, as OpenAI reports it.
    model: Option<String>,
    /// The input file's problems, as `errors.data`: when not empty, the batch failed.
    errors: Vec<Value>,
    output_file_id: String,
    error_file_id: String,
}

/// An uploaded file.
#[derive(Debug, Clone)]
pub(crate) struct File {
    id: String,
    content: Bytes,
    filename: String,
    purpose: String,
    created_at: i64,
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1/files", post(upload))
        .route("/v1/files/{id}", get(file))
        .route("/v1/files/{id}/content", get(file_content))
        // `/v1/batches` and `/v1/batches/{id}` are shared with Gemini: see `super::routes`.
        .route("/v1/batches/{id}/cancel", post(cancel))
}

/// A JSON answer with OpenAI's headers, or its error.
fn respond(state: &SimState, started: Instant, result: Result<Value, ApiError>) -> Response {
    pipeline::respond::<OpenAi>(state, started, result.map(axum::Json))
}

async fn upload(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    form: Multipart,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_auth(&headers)?;
        let file = read_upload(form).await?;
        let object = file_object(
            &file.id,
            file.content.len(),
            file.created_at,
            &file.filename,
            &file.purpose,
        );
        lock(&state.batches.openai_files).push(file);
        Ok(object)
    };
    respond(&state, started, result.await)
}

/// The `purpose` and `file` fields of an upload.
async fn read_upload(mut form: Multipart) -> Result<File, ApiError> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid(
            "file",
            "invalid_value",
            format!(
                "The body is not a readable multipart form: {}",
                e.body_text()
            ),
        )
    };
    let (mut purpose, mut file) = (None, None);
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(unreadable)?),
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                file = Some((filename, field.bytes().await.map_err(unreadable)?));
            }
            // Fields OpenAI added later (e.g. `expires_after`) change nothing here.
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::missing("purpose"))?;
    if !PURPOSES.contains(&purpose.as_str()) {
        return Err(ApiError::invalid(
            "purpose",
            "invalid_value",
            format!(
                "Invalid value for 'purpose': '{purpose}'. Supported values are: {}.",
                PURPOSES.map(|p| format!("'{p}'")).join(", ")
            ),
        ));
    }
    let (filename, content) = file.ok_or_else(|| ApiError::missing("file"))?;
    Ok(File {
        id: new_id("file-"),
        content,
        filename,
        purpose,
        created_at: chrono::Utc::now().timestamp(),
    })
}

/// OpenAI's File object.
fn file_object(id: &str, bytes: usize, created_at: i64, filename: &str, purpose: &str) -> Value {
    json!({
        "id": id,
        "object": "file",
        "bytes": bytes,
        "created_at": created_at,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": null,
        "status_details": null,
    })
}

/// A file found by id: an upload, or a batch's output or error file (written when read).
struct Found {
    object: Value,
    content: Bytes,
}

fn find_file(state: &SimState, id: &str) -> Result<Found, ApiError> {
    if let Some(file) = lock(&state.batches.openai_files)
        .iter()
        .find(|f| f.id == id)
    {
        return Ok(Found {
            object: file_object(
                id,
                file.content.len(),
                file.created_at,
                &file.filename,
                &file.purpose,
            ),
            content: file.content.clone(),
        });
    }
    let timing = state.batch_timing();
    let found = state.batches.openai.find_map(|batch| {
        let output = if batch.detail.output_file_id == id {
            true
        } else if batch.detail.error_file_id == id {
            false
        } else {
            return None;
        };
        let phase = batch.phase(timing);
        let Phase::Ended { after, .. } = phase else {
            return None;
        };
        let content = file_lines(batch, phase, output);
        let kind = if output { "output" } else { "error" };
        let filename = format!("{}_{kind}.jsonl", batch.id);
        let created_at = batch.at(after).timestamp();
        (!content.is_empty()).then(|| Found {
            object: file_object(id, content.len(), created_at, &filename, "batch_output"),
            content: Bytes::from(content),
        })
    });
    found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such File object: {id}"),
            "invalid_request_error",
        )
    })
}

async fn file(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    let result = check_auth(&headers).and_then(|()| find_file(&state, &id).map(|f| f.object));
    respond(&state, started, result)
}

async fn file_content(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    let result = check_auth(&headers)
        .and_then(|()| find_file(&state, &id))
        .map(|found| {
            let mut response = found.content.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        });
    pipeline::respond::<OpenAi>(&state, started, result)
}

/// The lines of the output file (`output`) or of the error file, at `phase`.
fn file_lines(batch: &Batch<Detail>, phase: Phase, output: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (item, state) in batch.states(phase) {
        let (response, error) = match state {
            ItemState::Answered { body, .. } if output => (Some((200, body)), None),
            ItemState::Failed { status, body } if !output => (Some((status, body)), None),
            ItemState::Expired if !output => (
                None,
                Some((
                    "batch_expired",
                    "This request could not be executed before the completion window expired.",
                )),
            ),
            ItemState::Cancelled if !output => (
                None,
                Some((
                    "batch_cancelled",
                    "This request was not executed because the batch was cancelled.",
                )),
            ),
            _ => continue,
        };
        // Stable ids, so two downloads of a file are the same bytes.
        let hash = crate::answer::fnv1a(format!("{}\n{}", batch.id, item.custom_id).as_bytes());
        let line = json!({
            "id": format!("batch_req_{hash:016x}"),
            "custom_id": item.custom_id,
            "response": response.map(|(status, body)| json!({
                "status_code": status,
                "request_id": format!("req_{hash:016x}"),
                "body": body,
            })),
            "error": error.map(|(code, message)| json!({"code": code, "message": message})),
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// One request of an input file, checked.
#[derive(Debug, Clone, PartialEq)]
struct InputLine {
    custom_id: String,
    body: Value,
}

/// The requests of an input file, or every problem it has, as OpenAI's `errors.data`.
fn read_input(content: &[u8], endpoint: &str) -> Result<Vec<InputLine>, Vec<Value>> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let problem = |line: usize, code: &str, param: Option<&str>, message: String| json!({"code": code, "message": message, "param": param, "line": line});
    for (index, text) in content.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(text) else {
            errors.push(problem(
                number,
                "invalid_json_line",
                None,
                "This line is not parseable as valid JSON.".into(),
            ));
            continue;
        };
        let custom_id = request.get("custom_id").and_then(Value::as_str);
        let method = request.get("method").and_then(Value::as_str);
        let url = request.get("url").and_then(Value::as_str);
        let body = request.get("body").filter(|body| body.is_object());
        let line_errors = errors.len();
        match custom_id {
            None => errors.push(problem(number, "missing_required_parameter", Some("custom_id"), "Missing required parameter: 'custom_id'.".into())),
            Some(id) if !seen.insert(id.to_string()) => errors.push(problem(
                number,
                "duplicate_custom_id",
                Some("custom_id"),
                format!("The custom_id '{id}' is a duplicate of another request's. The custom_id parameter must be unique for each request in a batch."),
            )),
            Some(_) => {}
        }
        if method != Some("POST") {
            errors.push(problem(
                number,
                "invalid_method",
                Some("method"),
                format!(
                    "The method for this request must be 'POST', not {}.",
                    method.map_or("missing".into(), |m| format!("'{m}'"))
                ),
            ));
        }
        if url != Some(endpoint) {
            errors.push(problem(
                number,
                "invalid_url",
                Some("url"),
                format!(
                    "The url for this request does not match the batch's endpoint '{endpoint}'."
                ),
            ));
        }
        if body.is_none() {
            errors.push(problem(
                number,
                "missing_required_parameter",
                Some("body"),
                "Missing required parameter: 'body' (an object).".into(),
            ));
        }
        if let (Some(custom_id), Some(body), true) = (custom_id, body, errors.len() == line_errors)
        {
            lines.push(InputLine {
                custom_id: custom_id.to_string(),
                body: body.clone(),
            });
        }
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(json!({
            "code": "empty_file",
            "message": "The input file has no requests.",
            "param": null,
            "line": null,
        }));
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// A required string field of the create body.
fn string_field<'a>(request: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    match request.get(field) {
        None | Some(Value::Null) => Err(ApiError::missing(field)),
        Some(Value::String(value)) => Ok(value),
        Some(other) => Err(ApiError::wrong_type(field, "a string", other)),
    }
}

/// `metadata`: up to 16 string values, keys up to 64 characters, values up to 512.
fn check_metadata(metadata: Option<&Value>) -> Result<Value, ApiError> {
    let metadata = match metadata {
        None | Some(Value::Null) => return Ok(Value::Null),
        Some(Value::Object(metadata)) => metadata,
        Some(other) => return Err(ApiError::wrong_type("metadata", "an object", other)),
    };
    if metadata.len() > 16 {
        return Err(ApiError::invalid(
            "metadata",
            "invalid_value",
            format!("Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got {} instead.", metadata.len()),
        ));
    }
    for (key, value) in metadata {
        let param = format!("metadata.{key}");
        match value {
            Value::String(text) if key.chars().count() <= 64 && text.chars().count() <= 512 => {}
            Value::String(_) => {
                return Err(ApiError::invalid(
                    param,
                    "invalid_value",
                    "Metadata keys may have up to 64 characters and values up to 512.",
                ))
            }
            other => return Err(ApiError::wrong_type(&param, "a string", other)),
        }
    }
    Ok(Value::Object(metadata.clone()))
}

pub(super) async fn create(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let started = Instant::now();
    let result = check_auth(&headers).and_then(|()| create_batch(&state, &raw));
    respond(&state, started, result)
}

fn create_batch(state: &SimState, raw: &[u8]) -> Result<Value, ApiError> {
    let body: Value = serde_json::from_slice(raw).map_err(|e| {
        ApiError::invalid(
            "body",
            "invalid_json",
            format!("The body is not valid JSON: {e}"),
        )
    })?;
    let Some(request) = body.as_object() else {
        return Err(ApiError::wrong_type("body", "an object", &body));
    };
    let input_file_id = string_field(request, "input_file_id")?;
    let endpoint = string_field(request, "endpoint")?;
    let completion_window = string_field(request, "completion_window")?;
    if endpoint != ENDPOINT {
        return Err(ApiError::invalid(
            "endpoint",
            "invalid_value",
            format!(
                "Invalid value: '{endpoint}'. The simulator runs batches of '{ENDPOINT}' only."
            ),
        ));
    }
    if completion_window != COMPLETION_WINDOW {
        return Err(ApiError::invalid(
            "completion_window",
            "invalid_value",
            format!("Invalid value: '{completion_window}'. Supported values are: '{COMPLETION_WINDOW}'."),
        ));
    }
    let metadata = check_metadata(request.get("metadata"))?;
    let file = lock(&state.batches.openai_files)
        .iter()
        .find(|file| file.id == input_file_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::invalid(
                "input_file_id",
                "invalid_value",
                format!("Invalid 'input_file_id': '{input_file_id}'. No such file; upload it first with purpose 'batch'."),
            )
        })?;
    if file.purpose != "batch" {
        return Err(ApiError::invalid(
            "input_file_id",
            "invalid_value",
            format!("Invalid 'input_file_id': '{input_file_id}'. The file's purpose is '{}'; a batch needs purpose 'batch'.", file.purpose),
        ));
    }
    let (items, errors) = match read_input(&file.content, endpoint) {
        Ok(lines) => {
            let items = lines
                .into_iter()
                .map(|line| super::Item {
                    outcome: pipeline::batch_item::<OpenAi>(state, &(), &line.body),
                    custom_id: line.custom_id,
                    metadata: Value::Null,
                })
                .collect();
            (items, Vec::new())
        }
        Err(errors) => (Vec::new(), errors),
    };
    let model = file_model(&items);
    state.batches.count(Family::OpenAi, items.len());
    let batch = Batch::new(
        new_id("batch_"),
        items,
        Detail {
            input_file_id: input_file_id.to_string(),
            completion_window: completion_window.to_string(),
            metadata,
            model,
            errors,
            output_file_id: new_id("file-"),
            error_file_id: new_id("file-"),
        },
    );
    let object = object(&batch, state, true);
    state.batches.openai.add(batch);
    Ok(object)
}

/// The model of the first answered request, which OpenAI reports as the batch's.
fn file_model(items: &[super::Item]) -> Option<String> {
    items.iter().find_map(|item| match &item.outcome {
        super::Outcome::Answered { body, .. } => {
            body.get("model").and_then(Value::as_str).map(String::from)
        }
        _ => None,
    })
}

/// OpenAI's Batch object; `creating` for the create call's answer, which is `validating`.
fn object(batch: &Batch<Detail>, state: &SimState, creating: bool) -> Value {
    let timing = state.batch_timing();
    let detail = &batch.detail;
    let phase = batch.phase(timing);
    let tally = batch.tally(phase);
    let seconds = |after| batch.at(after).timestamp();
    let created_at = batch.created_at.timestamp();
    let failed = !detail.errors.is_empty();
    let status = match phase {
        _ if creating => "validating",
        _ if failed => "failed",
        Phase::Running { .. } => "in_progress",
        Phase::Cancelling { .. } => "cancelling",
        Phase::Ended {
            end: End::Completed,
            ..
        } => "completed",
        Phase::Ended {
            end: End::Expired, ..
        } => "expired",
        Phase::Ended {
            end: End::Cancelled,
            ..
        } => "cancelled",
    };
    let ended_at = match phase {
        Phase::Ended { after, .. } if !creating && !failed => Some(seconds(after)),
        _ => None,
    };
    let at = |wanted: &str| if status == wanted { ended_at } else { None };
    let unanswered = tally.errored + tally.expired + tally.cancelled;
    let files = ended_at.is_some();
    json!({
        "id": batch.id,
        "object": "batch",
        "endpoint": ENDPOINT,
        "model": detail.model,
        "errors": failed.then(|| json!({"object": "list", "data": detail.errors})),
        "input_file_id": detail.input_file_id,
        "completion_window": detail.completion_window,
        "status": status,
        "output_file_id": (files && tally.succeeded > 0).then_some(&detail.output_file_id),
        "error_file_id": (files && unanswered > 0).then_some(&detail.error_file_id),
        "created_at": created_at,
        "in_progress_at": (!creating && !failed).then_some(created_at),
        "expires_at": seconds(timing.window),
        "finalizing_at": at("completed"),
        "completed_at": at("completed"),
        "failed_at": (failed && !creating).then_some(created_at),
        "expired_at": at("expired"),
        "cancelling_at": batch.cancel_asked_at().map(|at| at.timestamp()),
        "cancelled_at": at("cancelled"),
        "request_counts": {
            "total": batch.items.len(),
            "completed": tally.succeeded,
            "failed": unanswered,
        },
        "usage": {
            "input_tokens": tally.usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": tally.usage.cached_tokens},
            "output_tokens": tally.usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tally.usage.prompt_tokens + tally.usage.completion_tokens,
        },
        "metadata": detail.metadata,
    })
}

fn no_batch(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No batch found with id '{id}'."),
        "invalid_request_error",
    )
}

/// Runs `f` on the batch `id` for a caller with an OpenAI key, and answers.
fn on_batch(
    state: &SimState,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut Batch<Detail>) -> Result<Value, ApiError>,
) -> Response {
    let started = Instant::now();
    let result = check_auth(headers).and_then(|()| {
        let found = state.batches.openai.with(id, f);
        found.unwrap_or_else(|| Err(no_batch(id)))
    });
    respond(state, started, result)
}

pub(super) async fn retrieve(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    on_batch(&state, &headers, &id, |batch| {
        Ok(object(batch, &state, false))
    })
}

async fn cancel(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    on_batch(&state, &headers, &id, |batch| {
        let current = object(batch, &state, false);
        match current["status"].as_str() {
            Some("in_progress" | "cancelling") => {
                batch.cancel(state.batch_timing());
                Ok(object(batch, &state, false))
            }
            status => Err(ApiError::invalid(
                "batch_id",
                "invalid_value",
                format!(
                    "Cannot cancel a batch with status '{}'.",
                    status.unwrap_or_default()
                ),
            )),
        }
    })
}

pub(super) async fn list(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let result = check_auth(&headers).and_then(|()| {
        let limit = super::page_limit(&query, 100).map_err(|text| {
            ApiError::invalid(
                "limit",
                "invalid_value",
                format!("Invalid 'limit': '{text}'. Expected an integer from 1 to 100."),
            )
        })?;
        let all = state
            .batches
            .openai
            .newest_first(|batch| object(batch, &state, false));
        let (data, has_more) = page(all, query.get("after").map(String::as_str), limit);
        let mut body = super::list_body(data, has_more);
        body["object"] = json!("list");
        Ok(body)
    });
    respond(&state, started, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(custom_id: &str) -> String {
        json!({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": {"model": "m", "messages": []}}).to_string()
    }

    #[test]
    fn a_good_file_gives_its_requests_in_order() {
        let file = format!("{}\n\n{}\n", line("a"), line("b"));
        let lines = read_input(file.as_bytes(), ENDPOINT).unwrap();
        let ids: Vec<_> = lines.iter().map(|l| l.custom_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn every_bad_line_is_named_with_its_code_and_param() {
        let bad_method = line("c").replace("\"POST\"", "\"GET\"");
        let bad_url = line("d").replace(ENDPOINT, "/v1/embeddings");
        let no_body = json!({"custom_id": "e", "method": "POST", "url": ENDPOINT}).to_string();
        let file = [
            line("a"),
            line("a"),
            "{not json".into(),
            bad_method,
            bad_url,
            no_body,
        ]
        .join("\n");
        let errors = read_input(file.as_bytes(), ENDPOINT).unwrap_err();
        let found: Vec<(u64, &str, &str)> = errors
            .iter()
            .map(|e| {
                (
                    e["line"].as_u64().unwrap(),
                    e["code"].as_str().unwrap(),
                    e["param"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (2, "duplicate_custom_id", "custom_id"),
                (3, "invalid_json_line", ""),
                (4, "invalid_method", "method"),
                (5, "invalid_url", "url"),
                (6, "missing_required_parameter", "body"),
            ]
        );
    }

    #[test]
    fn an_empty_file_fails() {
        let errors = read_input(b"\n \n", ENDPOINT).unwrap_err();
        assert_eq!(errors[0]["code"], "empty_file");
    }

    #[test]
    fn metadata_is_strings_only() {
        assert_eq!(check_metadata(None).unwrap(), Value::Null);
        assert!(check_metadata(Some(&json!({"team": "a"}))).is_ok());
        assert!(check_metadata(Some(&json!({"n": 1}))).is_err());
        assert!(check_metadata(Some(&json!("x"))).is_err());
    }
}
