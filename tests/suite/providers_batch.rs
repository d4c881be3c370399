//! The three batch-tier clients over real HTTP, against a small local server that serves the
//! objects the providers document (provider reference, sections 2, 4 and 5.4).
//!
//! The unit tests beside each client check the pure mappings; these check what only an
//! exchange shows: the URLs, headers and bodies each client sends (the uploaded JSONL, the
//! create bodies with ids, translated requests and labels), a poll walking through the
//! statuses, results with every kind of outcome read from where each provider puts them, a
//! failed batch, cancel, and a 429, a 401 and a refused connection on the batch endpoints
//! arriving as the worker's error kinds with the key scrubbed.
//! The fixture server is not the simulator: the clients are written against the documented
//! formats, and this server serves exactly those.

use crate::common;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use sluice::job::ChatRequest;
use sluice::providers::batch::anthropic::AnthropicBatch;
use sluice::providers::batch::gemini::GeminiBatch;
use sluice::providers::batch::openai::OpenAiBatch;
use sluice::providers::batch::{
    BatchApi, BatchCall, BatchProgress, BatchRequest, ItemOutcome, ItemResult,
};
use sluice::providers::{CallOptions, ErrorKind, ProviderError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-fixture-batch-secret";

/// One request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Fixture {
    seen: Mutex<Vec<Seen>>,
    /// How often each batch has been read, so a poll walks through the statuses.
    reads: Mutex<HashMap<String, usize>>,
    base: Mutex<String>,
}

impl Fixture {
    fn seen(&self, method: Method, path: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.method == method && s.path == path)
            .cloned()
            .unwrap_or_else(|| panic!("no {method} {path}"))
    }

    /// The status for the `n`th read of `id` (the last one sticks).
    fn next<'a>(&self, id: &str, statuses: &[&'a str]) -> &'a str {
        let mut reads = self.reads.lock().unwrap();
        let n = reads.entry(id.to_string()).or_default();
        let status = statuses[(*n).min(statuses.len() - 1)];
        *n += 1;
        status
    }
}

async fn start() -> (String, Arc<Fixture>) {
    let fixture = Arc::new(Fixture::default());
    let app = Router::new().fallback(serve).with_state(fixture.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *fixture.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, fixture)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn status(code: u16, body: Value) -> Response {
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

/// Records the request, checks the family's key (echoing a wrong one back, as some proxies
/// do), and hands it to the family's handler.
async fn serve(State(fixture): State<Arc<Fixture>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let body = if path == "/openai/v1/files" {
        upload(request).await
    } else {
        let bytes = Bytes::from_request(request, &()).await.unwrap();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    fixture.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let family = path.split('/').nth(1).unwrap_or_default();
    let key = match family {
        "openai" => header(&headers, "authorization").trim_start_matches("Bearer "),
        "anthropic" => header(&headers, "x-api-key"),
        _ => header(&headers, "x-goog-api-key"),
    };
    if key != KEY {
        let message = format!("Incorrect API key provided: {key}");
        return match family {
            "openai" => status(
                401,
                json!({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
            "anthropic" => status(
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": message}}),
            ),
            _ => status(
                400,
                json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
            ),
        };
    }
    let rest = path[family.len() + 1..].to_string();
    match family {
        "openai" => openai(&fixture, &method, &rest, &body),
        "anthropic" => anthropic(&fixture, &method, &rest),
        _ => gemini(&fixture, &method, &rest),
    }
}

/// A multipart upload as `{"purpose", "filename", "content_type", "lines": [...]}`.
async fn upload(request: Request) -> Value {
    let mut form = Multipart::from_request(request, &()).await.unwrap();
    let mut seen = json!({});
    while let Some(field) = form.next_field().await.unwrap() {
        match field.name().unwrap() {
            "purpose" => seen["purpose"] = field.text().await.unwrap().into(),
            "file" => {
                seen["filename"] = field.file_name().unwrap_or_default().into();
                seen["content_type"] = field.content_type().unwrap_or_default().into();
                let text = field.text().await.unwrap();
                assert!(text.ends_with('\n'), "every line ends with a newline");
                let lines: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                seen["lines"] = lines.into();
            }
            other => panic!("unexpected part {other}"),
        }
    }
    seen
}

fn chat_completion(text: &str) -> Value {
    json!({"id": "chatcmpl-b1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
}

fn openai_batch(id: &str, status: &str, output: Option<&str>, errors: Option<&str>) -> Value {
    json!({"id": id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": null,
        "input_file_id": "file-in-1", "completion_window": "24h", "status": status,
        "output_file_id": output, "error_file_id": errors, "created_at": 1_711_471_533,
        "request_counts": {"total": 5, "completed": 3, "failed": 2}, "metadata": {"sluice_batch": "b-1"}})
}

fn openai(fixture: &Fixture, method: &Method, path: &str, body: &Value) -> Response {
    let jsonl = |lines: &[Value]| -> Response {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        ([("content-type", "application/octet-stream")], text).into_response()
    };
    match (method.as_str(), path) {
        ("POST", "/v1/files") => Json(json!({"id": "file-in-1", "object": "file", "bytes": 1234,
            "filename": body["filename"], "purpose": "batch", "status": "processed"}))
        .into_response(),
        ("POST", "/v1/batches") => match body["metadata"]["sluice_batch"].as_str() {
            Some("rate") => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "7")],
                Json(json!({"error": {"message": "Enqueued token limit reached", "type": "requests", "code": "rate_limit_exceeded"}})),
            )
                .into_response(),
            _ => Json(openai_batch("batch_ok", "validating", None, None)).into_response(),
        },
        ("GET", "/v1/batches/batch_ok") => {
            let s = fixture.next("batch_ok", &["validating", "in_progress", "finalizing", "completed"]);
            let done = s == "completed";
            Json(openai_batch(
                "batch_ok",
                s,
                done.then_some("file-out"),
                done.then_some("file-err"),
            ))
            .into_response()
        }
        ("GET", "/v1/batches/batch_expired") => {
            Json(openai_batch("batch_expired", "expired", None, Some("file-expired"))).into_response()
        }
        ("GET", "/v1/batches/batch_failed") => {
            let mut batch = openai_batch("batch_failed", "failed", None, None);
            batch["errors"] = json!({"object": "list", "data": [
                {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "param": null, "line": 2},
                {"code": "duplicate_custom_id", "message": "The custom_id job-1 is duplicated.", "param": null, "line": 4}]});
            Json(batch).into_response()
        }
        ("GET", "/v1/batches/batch_down") => status(503, json!({"error": {"message": "The server is overloaded", "type": "server_error"}})),
        ("POST", "/v1/batches/batch_ok/cancel") => {
            Json(openai_batch("batch_ok", "cancelling", None, None)).into_response()
        }
        ("GET", "/v1/files/file-out/content") => jsonl(&[
            json!({"id": "batch_req_1", "custom_id": "job-a", "response": {"status_code": 200, "request_id": "req_1",
                "body": chat_completion("Paris")}, "error": null}),
            json!({"id": "batch_req_2", "custom_id": "job-b", "response": {"status_code": 400, "request_id": "req_2",
                "body": {"error": {"message": "Invalid 'messages': empty array.", "type": "invalid_request_error", "param": "messages", "code": "empty_array"}}}, "error": null}),
        ]),
        ("GET", "/v1/files/file-err/content") => jsonl(&[
            json!({"id": "batch_req_3", "custom_id": "job-c", "response": null, "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}),
            json!({"id": "batch_req_4", "custom_id": "job-d", "response": null, "error": {"code": "request_timeout", "message": "The request timed out."}}),
        ]),
        ("GET", "/v1/files/file-expired/content") => jsonl(&[
            json!({"id": "batch_req_5", "custom_id": "job-e", "response": null, "error": {"code": "batch_expired", "message": "expired"}}),
        ]),
        _ => status(404, json!({"error": {"message": format!("no route {method} {path}"), "type": "invalid_request_error"}})),
    }
}

fn anthropic_batch(fixture: &Fixture, id: &str, status: &str) -> Value {
    let base = fixture.base.lock().unwrap().clone();
    let results = (status == "ended").then(|| format!("{base}/anthropic/results/{id}.jsonl"));
    json!({"id": id, "type": "message_batch", "processing_status": status,
        "request_counts": {"processing": 0, "succeeded": 1, "errored": 2, "canceled": 1, "expired": 1},
        "created_at": "2024-09-24T18:37:24.100435Z", "expires_at": "2024-09-25T18:37:24.100435Z",
        "ended_at": null, "cancel_initiated_at": null, "archived_at": null, "results_url": results})
}

fn anthropic(fixture: &Fixture, method: &Method, path: &str) -> Response {
    let errored = |kind: &str, message: &str| {
        json!({"type": "errored", "error": {"type": "error",
        "error": {"type": kind, "message": message}, "request_id": "req_011"}})
    };
    match (method.as_str(), path) {
        ("POST", "/v1/messages/batches") => Json(anthropic_batch(fixture, "msgbatch_ok", "in_progress")).into_response(),
        ("GET", "/v1/messages/batches/msgbatch_ok") => {
            let s = fixture.next("msgbatch_ok", &["in_progress", "canceling", "ended"]);
            Json(anthropic_batch(fixture, "msgbatch_ok", s)).into_response()
        }
        ("GET", "/v1/messages/batches/msgbatch_rate") => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "3")],
            Json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}})),
        )
            .into_response(),
        ("POST", "/v1/messages/batches/msgbatch_ok/cancel") => {
            Json(anthropic_batch(fixture, "msgbatch_ok", "canceling")).into_response()
        }
        ("GET", "/results/msgbatch_ok.jsonl") => {
            let lines = [
                json!({"custom_id": "job-a", "result": {"type": "succeeded", "message": {"id": "msg_01", "type": "message",
                    "role": "assistant", "model": "claude-x", "content": [{"type": "text", "text": "Paris"}],
                    "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 4, "service_tier": "batch"}}}}),
                json!({"custom_id": "job-b", "result": errored("invalid_request_error", "max_tokens: Field required")}),
                json!({"custom_id": "job-c", "result": errored("overloaded_error", "Overloaded")}),
                json!({"custom_id": "job-d", "result": {"type": "canceled"}}),
                json!({"custom_id": "job-e", "result": {"type": "expired"}}),
            ];
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            ([("content-type", "application/binary")], text).into_response()
        }
        _ => status(404, json!({"type": "error", "error": {"type": "not_found_error", "message": format!("no route {path}")}})),
    }
}

fn gemini_operation(name: &str, state: &str, output: Option<Value>) -> Value {
    let mut op = json!({"name": name, "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-x", "displayName": "b-1", "state": state,
        "batchStats": {"requestCount": "3", "pendingRequestCount": "0"}}});
    if let Some(output) = output {
        op["metadata"]["output"] = output;
        op["done"] = true.into();
    }
    op
}

fn gemini_answers() -> Value {
    json!({"inlinedResponses": {"inlinedResponses": [
        {"metadata": {"key": "job-a"}, "response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Paris"}]},
            "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 1, "totalTokenCount": 9},
            "modelVersion": "gemini-x", "responseId": "resp-1"}},
        {"metadata": {"key": "job-b"}, "error": {"code": 3, "message": "Request contains an invalid argument."}},
        {"metadata": {"key": "job-c"}, "error": {"code": 13, "message": "Internal error encountered."}},
    ]}})
}

fn gemini(fixture: &Fixture, method: &Method, path: &str) -> Response {
    match (method.as_str(), path) {
        ("POST", "/v1beta/models/gemini-x:batchGenerateContent") => Json(gemini_operation(
            "batches/abc123",
            "BATCH_STATE_PENDING",
            None,
        ))
        .into_response(),
        ("GET", "/v1beta/batches/abc123") => {
            let s = fixture.next(
                "abc123",
                &[
                    "BATCH_STATE_PENDING",
                    "BATCH_STATE_RUNNING",
                    "BATCH_STATE_SUCCEEDED",
                ],
            );
            let output = (s == "BATCH_STATE_SUCCEEDED").then(gemini_answers);
            Json(gemini_operation("batches/abc123", s, output)).into_response()
        }
        // The SDK's spelling, and the answers under the Operation's `response`.
        ("GET", "/v1beta/batches/inresponse") => {
            let mut op = gemini_operation("batches/inresponse", "JOB_STATE_SUCCEEDED", None);
            op["done"] = true.into();
            op["response"] = gemini_answers();
            op["response"]["@type"] = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput".into();
            Json(op).into_response()
        }
        ("GET", "/v1beta/batches/failed") => {
            let mut op = gemini_operation("batches/failed", "BATCH_STATE_FAILED", None);
            op["error"] = json!({"code": 3, "message": "The input is not valid."});
            Json(op).into_response()
        }
        ("GET", "/v1beta/batches/rate") => status(
            429,
            json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}]}}),
        ),
        ("POST", "/v1beta/batches/abc123:cancel") => Json(json!({})).into_response(),
        _ => status(
            404,
            json!({"error": {"code": 404, "message": format!("no route {path}"), "status": "NOT_FOUND"}}),
        ),
    }
}

fn request(custom_id: &str, text: &str) -> BatchRequest {
    let request: ChatRequest = serde_json::from_value(json!({
        "model": "fast", "messages": [{"role": "user", "content": text}], "temperature": 0.3, "max_tokens": 50
    }))
    .unwrap();
    BatchRequest {
        custom_id: custom_id.into(),
        request,
    }
}

/// What every submit test sends: `job-a` asks something, `job-b` says hi.
fn two_requests() -> [BatchRequest; 2] {
    [
        request("job-a", "Capital of France?"),
        request("job-b", "hi"),
    ]
}

fn call<'a>(model: &'a str, key: &'a str) -> BatchCall<'a> {
    BatchCall {
        model,
        api_key: key,
        timeout: Duration::from_secs(5),
        options: CallOptions::default(),
    }
}

fn by_id(results: Vec<ItemResult>) -> HashMap<String, ItemOutcome> {
    results
        .into_iter()
        .map(|r| (r.custom_id, r.outcome))
        .collect()
}

fn failed(outcome: &ItemOutcome) -> &ProviderError {
    match outcome {
        ItemOutcome::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn succeeded_text(outcome: &ItemOutcome) -> String {
    match outcome {
        ItemOutcome::Succeeded(c) => c.response["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        other => panic!("expected a success, got {other:?}"),
    }
}

async fn statuses(
    api: &dyn BatchApi,
    call: BatchCall<'_>,
    id: &str,
    n: usize,
) -> Vec<BatchProgress> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(api.poll(call, id).await.unwrap());
    }
    seen
}

fn running(s: &str) -> BatchProgress {
    BatchProgress::Running { status: s.into() }
}

fn ended(s: &str) -> BatchProgress {
    BatchProgress::Ended { status: s.into() }
}

#[tokio::test]
async fn openai_uploads_jsonl_creates_polls_reads_both_files_and_cancels() {
    let (base, fixture) = start().await;
    let api = OpenAiBatch::new(format!("{base}/openai/v1/"), reqwest::Client::new());
    let c = call("gpt-4o-mini", KEY);
    let requests = [
        request("job-a", "Capital of France?"),
        request("job-b", "hi"),
    ];
    let id = api.submit(c, &requests, "b-1").await.unwrap();
    assert_eq!(id, "batch_ok");

    let upload = fixture.seen(Method::POST, "/openai/v1/files");
    assert_eq!(
        header(&upload.headers, "authorization"),
        format!("Bearer {KEY}")
    );
    assert_eq!(upload.body["purpose"], "batch");
    assert_eq!(upload.body["content_type"], "application/jsonl");
    assert!(upload.body["filename"]
        .as_str()
        .unwrap()
        .ends_with(".jsonl"));
    let lines = upload.body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        json!({"custom_id": "job-a", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}],
                        "temperature": 0.3, "max_tokens": 50}})
    );
    let expected_len: usize = requests
        .iter()
        .map(|r| {
            api.encoded_len("gpt-4o-mini", CallOptions::default(), r)
                .unwrap()
        })
        .sum();
    let uploaded_len: usize = lines.iter().map(|l| l.to_string().len() + 1).sum();
    assert_eq!(expected_len, uploaded_len);

    let create = fixture.seen(Method::POST, "/openai/v1/batches");
    assert_eq!(
        create.body,
        json!({"input_file_id": "file-in-1", "endpoint": "/v1/chat/completions",
               "completion_window": "24h", "metadata": {"sluice_batch": "b-1"}})
    );

    let e = api.results(c, "batch_ok").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest, "results before the end: {e}");
    assert_eq!(
        statuses(&api, c, "batch_ok", 3).await,
        vec![
            running("in_progress"),
            running("finalizing"),
            ended("completed")
        ]
    );

    let results = by_id(api.results(c, "batch_ok").await.unwrap());
    assert_eq!(results.len(), 4);
    assert_eq!(succeeded_text(&results["job-a"]), "Paris");
    if let ItemOutcome::Succeeded(done) = &results["job-a"] {
        assert_eq!(done.usage.prompt_tokens, 12);
    }
    let refused = failed(&results["job-b"]);
    assert_eq!(
        (refused.kind, refused.status),
        (ErrorKind::BadRequest, Some(400))
    );
    assert_eq!(refused.message, "Invalid 'messages': empty array.");
    assert!(matches!(results["job-c"], ItemOutcome::Expired));
    let timed_out = failed(&results["job-d"]);
    assert!(timed_out.kind.is_retryable(), "{timed_out}");

    api.cancel(c, "batch_ok").await.unwrap();
    fixture.seen(Method::POST, "/openai/v1/batches/batch_ok/cancel");
}

#[tokio::test]
async fn openai_failed_and_expired_batches() {
    let (base, _fixture) = start().await;
    let api = OpenAiBatch::new(format!("{base}/openai/v1"), reqwest::Client::new());
    let c = call("gpt-4o-mini", KEY);
    match api.poll(c, "batch_failed").await.unwrap() {
        BatchProgress::Failed { status, message } => {
            assert_eq!(status, "failed");
            assert!(
                message.contains("line 2: This line is not parseable"),
                "{message}"
            );
            assert!(
                message
                    .contains("line 4: The custom_id job-1 is duplicated. (duplicate_custom_id)"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        api.results(c, "batch_failed").await.unwrap_err().kind,
        ErrorKind::BadRequest
    );

    // An expired batch with no output file: only the error file is read.
    let results = by_id(api.results(c, "batch_expired").await.unwrap());
    assert_eq!(results.len(), 1);
    assert!(matches!(results["job-e"], ItemOutcome::Expired));

    let e = api.poll(c, "batch_down").await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::ServerError, Some(503)));
}

#[tokio::test]
async fn anthropic_creates_polls_reads_the_results_url_and_cancels() {
    let (base, fixture) = start().await;
    let api = AnthropicBatch::new(format!("{base}/anthropic"), reqwest::Client::new());
    let c = call("claude-x", KEY);
    let id = api.submit(c, &two_requests(), "b-1").await.unwrap();
    assert_eq!(id, "msgbatch_ok");
    let create = fixture.seen(Method::POST, "/anthropic/v1/messages/batches");
    assert_eq!(header(&create.headers, "x-api-key"), KEY);
    assert_eq!(header(&create.headers, "anthropic-version"), "2023-06-01");
    let items = create.body["requests"].as_array().unwrap();
    assert_eq!(
        items[0],
        json!({"custom_id": "job-a", "params": {"model": "claude-x", "max_tokens": 50,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}],
               "temperature": 0.3}})
    );
    assert_eq!(items[1]["custom_id"], "job-b");

    assert_eq!(
        statuses(&api, c, "msgbatch_ok", 2).await,
        vec![running("in_progress"), running("canceling")]
    );
    assert_eq!(api.poll(c, "msgbatch_ok").await.unwrap(), ended("ended"));

    let results = by_id(api.results(c, "msgbatch_ok").await.unwrap());
    let download = fixture.seen(Method::GET, "/anthropic/results/msgbatch_ok.jsonl");
    assert_eq!(header(&download.headers, "x-api-key"), KEY);
    assert_eq!(header(&download.headers, "anthropic-version"), "2023-06-01");
    assert_eq!(results.len(), 5);
    assert_eq!(succeeded_text(&results["job-a"]), "Paris");
    if let ItemOutcome::Succeeded(done) = &results["job-a"] {
        assert_eq!(
            (done.usage.prompt_tokens, done.usage.cached_tokens),
            (14, 4)
        );
    }
    let invalid = failed(&results["job-b"]);
    assert_eq!(invalid.kind, ErrorKind::BadRequest);
    assert!(!invalid.kind.is_retryable());
    assert_eq!(invalid.message, "max_tokens: Field required");
    assert!(failed(&results["job-c"]).kind.is_retryable());
    assert!(matches!(results["job-d"], ItemOutcome::Cancelled));
    assert!(matches!(results["job-e"], ItemOutcome::Expired));

    api.cancel(c, "msgbatch_ok").await.unwrap();
    let cancel = fixture.seen(
        Method::POST,
        "/anthropic/v1/messages/batches/msgbatch_ok/cancel",
    );
    assert_eq!(header(&cancel.headers, "x-api-key"), KEY);
}

#[tokio::test]
async fn gemini_creates_inline_polls_the_operation_reads_inlined_responses_and_cancels() {
    let (base, fixture) = start().await;
    let api = GeminiBatch::new(format!("{base}/gemini/v1beta"), reqwest::Client::new());
    let c = call("gemini-x", KEY);
    let id = api.submit(c, &two_requests(), "b-1").await.unwrap();
    assert_eq!(id, "batches/abc123");
    let create = fixture.seen(
        Method::POST,
        "/gemini/v1beta/models/gemini-x:batchGenerateContent",
    );
    assert_eq!(header(&create.headers, "x-goog-api-key"), KEY);
    assert_eq!(create.body["batch"]["displayName"], "b-1");
    let items = create.body["batch"]["inputConfig"]["requests"]["requests"]
        .as_array()
        .unwrap();
    assert_eq!(
        items[0],
        json!({"request": {"contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}],
                           "generationConfig": {"maxOutputTokens": 50, "temperature": 0.3}},
               "metadata": {"key": "job-a"}})
    );
    assert_eq!(items[1]["metadata"]["key"], "job-b");

    assert_eq!(
        statuses(&api, c, &id, 3).await,
        vec![
            running("BATCH_STATE_PENDING"),
            running("BATCH_STATE_RUNNING"),
            ended("BATCH_STATE_SUCCEEDED")
        ]
    );
    for id in [id.as_str(), "inresponse"] {
        let results = by_id(api.results(c, id).await.unwrap());
        assert_eq!(results.len(), 3, "{id}");
        assert_eq!(succeeded_text(&results["job-a"]), "Paris");
        let invalid = failed(&results["job-b"]);
        assert_eq!(invalid.kind, ErrorKind::BadRequest);
        assert_eq!(invalid.message, "Request contains an invalid argument.");
        assert_eq!(failed(&results["job-c"]).kind, ErrorKind::ServerError);
    }

    match api.poll(c, "batches/failed").await.unwrap() {
        BatchProgress::Failed { status, message } => {
            assert_eq!(
                (status.as_str(), message.as_str()),
                ("BATCH_STATE_FAILED", "The input is not valid.")
            )
        }
        other => panic!("{other:?}"),
    }

    api.cancel(c, &id).await.unwrap();
    let cancel = fixture.seen(Method::POST, "/gemini/v1beta/batches/abc123:cancel");
    assert_eq!(header(&cancel.headers, "x-goog-api-key"), KEY);
}

#[tokio::test]
async fn rate_limits_arrive_with_their_wait() {
    let (base, _fixture) = start().await;
    let http = reqwest::Client::new();
    let openai = OpenAiBatch::new(format!("{base}/openai/v1"), http.clone());
    let e = openai
        .submit(call("gpt-4o-mini", KEY), &[request("job-a", "hi")], "rate")
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::RateLimited, Some(429)));
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));

    let anthropic = AnthropicBatch::new(format!("{base}/anthropic"), http.clone());
    let e = anthropic
        .poll(call("claude-x", KEY), "msgbatch_rate")
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(3)))
    );

    let gemini = GeminiBatch::new(format!("{base}/gemini/v1beta"), http);
    let e = gemini
        .poll(call("gemini-x", KEY), "batches/rate")
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(20)))
    );
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_never_echoed() {
    let (base, _fixture) = start().await;
    let http = reqwest::Client::new();
    let wrong = "sk-wrong-key-that-must-not-leak";
    let apis: [(Box<dyn BatchApi>, &str); 3] = [
        (
            Box::new(OpenAiBatch::new(format!("{base}/openai/v1"), http.clone())),
            "gpt-4o-mini",
        ),
        (
            Box::new(AnthropicBatch::new(
                format!("{base}/anthropic"),
                http.clone(),
            )),
            "claude-x",
        ),
        (
            Box::new(GeminiBatch::new(format!("{base}/gemini/v1beta"), http)),
            "gemini-x",
        ),
    ];
    for (api, model) in &apis {
        let c = call(model, wrong);
        let errors = [
            api.submit(c, &[request("job-a", "hi")], "b-1")
                .await
                .unwrap_err(),
            api.poll(c, "batch_ok").await.unwrap_err(),
            api.cancel(c, "batch_ok").await.unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.kind, ErrorKind::Unauthorized, "{model}: {e}");
            assert!(!e.message.contains(wrong), "{model}: {}", e.message);
            assert!(!format!("{e} {e:?}").contains(wrong), "{model}");
            assert!(e.message.contains("[redacted]"), "{model}: {}", e.message);
        }
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    let refused = common::RefusedPort::new();
    let base = refused.base_url();
    let api = OpenAiBatch::new(format!("{base}/v1"), reqwest::Client::new());
    let e = api
        .poll(call("gpt-4o-mini", KEY), "batch_ok")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connection, "{e}");
}
