//! The Anthropic and Gemini adapters over real HTTP, against a small local server that answers
//! with the providers' documented example bodies.
//!
//! The unit tests check the translation; these check what only a real exchange shows: the
//! URL and headers each adapter sends (key header, API version), that a streamed body is read
//! as it arrives and a stream cut short is an error, that error statuses and `retry-after`
//! arrive as the worker's error kinds, and that an echoed key never reaches a message.
//! The fixture server is not the simulator: the adapters are written against the documented
//! formats, and this server serves exactly those. One case runs a whole Sluice against a
//! fixture that echoes the key in bodies that are not JSON, and looks for any fragment of it
//! in the store, the API's answers and the log.

use crate::common;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use sluice::job::ChatRequest;
use sluice::providers::anthropic::AnthropicProvider;
use sluice::providers::gemini::GeminiProvider;
use sluice::providers::{stream, Call, CallOptions, ErrorKind, Provider};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-fixture-secret-key";

/// What the server saw: path, headers of interest, body.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, HeaderMap, Value)>>,
}

async fn start() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{call}", post(gemini))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// The scenario a test asks for, in the last user message.
fn scenario(body: &Value, pointer: &str) -> String {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn sse(events: &[(Option<&str>, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| match name {
            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        })
        .collect()
}

fn streamed(text: String) -> Response {
    // Sent in small pieces so the client sees events split across reads.
    let pieces: Vec<Result<Bytes, std::io::Error>> = text
        .into_bytes()
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .unwrap()
}

async fn anthropic(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    seen.requests
        .lock()
        .unwrap()
        .push(("/v1/messages".into(), headers.clone(), body.clone()));
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        let error = json!({"type": "error", "error": {"type": "authentication_error",
            "message": format!("invalid x-api-key {}", headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or(""))}});
        return (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response();
    }
    let ask = scenario(&body, "/messages/0/content/0/text");
    let model = body["model"].clone();
    match ask.as_str() {
        "overloaded" => {
            return (
                StatusCode::from_u16(529).unwrap(),
                axum::Json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            )
                .into_response()
        }
        "rate" => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "3")],
                axum::Json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}})),
            )
                .into_response()
        }
        _ => {}
    }
    if body["stream"] == true {
        let mut events = vec![
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "msg_stream", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_stream_1", "name": "get_weather", "input": {}}}),
            ),
            (Some("ping"), json!({"type": "ping"})),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 30}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ];
        if ask == "cut" {
            events.truncate(4);
        }
        if ask == "error-mid-stream" {
            events.truncate(2);
            events.push((Some("error"), json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
        }
        return streamed(sse(&events));
    }
    axum::Json(json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": format!("echo: {ask}")}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    }))
    .into_response()
}

async fn gemini(
    State(seen): State<Arc<Seen>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    seen.requests
        .lock()
        .unwrap()
        .push((call.clone(), headers.clone(), body.clone()));
    let ask = scenario(&body, "/contents/0/parts/0/text");
    match ask.as_str() {
        "rate" => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                    "message": "You exceeded your current quota, please check your plan and billing details.",
                    "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]}})),
            )
                .into_response()
        }
        "unavailable" => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": {"code": 503, "status": "UNAVAILABLE", "message": "The model is overloaded."}})),
            )
                .into_response()
        }
        _ => {}
    }
    let (model, method) = call.split_once(':').unwrap();
    if method == "streamGenerateContent" {
        let mut events = vec![
            (
                None,
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking"}]}, "index": 0}],
                          "usageMetadata": {"promptTokenCount": 9}, "modelVersion": model, "responseId": "r-stream"}),
            ),
            (
                None,
                json!({"candidates": [{"content": {"role": "model", "parts": [
                              {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
                          "finishReason": "STOP", "index": 0}],
                          "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15},
                          "modelVersion": model, "responseId": "r-stream"}),
            ),
        ];
        if ask == "cut" {
            events.truncate(1);
        }
        return streamed(sse(&events));
    }
    axum::Json(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": format!("echo: {ask}")}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10},
        "modelVersion": model, "responseId": "r-1"
    }))
    .into_response()
}

fn request(text: &str) -> ChatRequest {
    serde_json::from_value(json!({
        "model": "smart",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": text}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    }))
    .unwrap()
}

fn call<'a>(model: &'a str, request: &'a ChatRequest) -> Call<'a> {
    Call {
        model,
        api_key: KEY,
        request,
        timeout: Duration::from_secs(5),
        stream_idle_timeout: None,
        options: CallOptions::default(),
    }
}

#[tokio::test]
async fn anthropic_sends_its_headers_and_reads_the_answer() {
    let (base, seen) = start().await;
    let provider = AnthropicProvider::new(&base, reqwest::Client::new());
    let req = request("hello");
    let done = provider
        .chat(call("claude-sonnet-4-5", &req))
        .await
        .unwrap();
    assert_eq!(
        done.response["choices"][0]["message"]["content"],
        "echo: hello"
    );
    assert_eq!(done.response["model"], "claude-sonnet-4-5");
    assert_eq!(done.usage.prompt_tokens, 12);
    let (path, headers, body) = seen.requests.lock().unwrap().pop().unwrap();
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["x-api-key"], KEY);
    assert!(headers.get("authorization").is_none());
    assert_eq!(body["system"], "Be terse.");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
}

#[tokio::test]
async fn anthropic_streams_tool_call_deltas_and_folds_them() {
    let (base, seen) = start().await;
    let provider = AnthropicProvider::new(&base, reqwest::Client::new());
    let req = request("weather in Oslo?");
    let chunks = provider
        .chat_stream(call("claude-sonnet-4-5", &req))
        .await
        .unwrap();
    let done = stream::collect("anthropic", chunks).await.unwrap();
    assert_eq!(seen.requests.lock().unwrap()[0].2["stream"], true);
    let choice = &done.response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "toolu_stream_1");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\": \"Oslo\"}"
    );
    assert_eq!(
        (
            done.usage.prompt_tokens,
            done.usage.cached_tokens,
            done.usage.completion_tokens
        ),
        (30, 5, 30)
    );
}

#[tokio::test]
async fn anthropic_failures_arrive_as_error_kinds() {
    let (base, _seen) = start().await;
    let provider = AnthropicProvider::new(&base, reqwest::Client::new());
    let req = request("overloaded");
    let e = provider.chat(call("m", &req)).await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::ServerError, Some(529)));
    let req = request("rate");
    let e = provider.chat(call("m", &req)).await.unwrap_err();
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(3)))
    );
    // The same refusal before a stream starts is the outer error.
    let e = provider.chat_stream(call("m", &req)).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::RateLimited);

    for ask in ["cut", "error-mid-stream"] {
        let req = request(ask);
        let chunks = provider.chat_stream(call("m", &req)).await.unwrap();
        let e = stream::collect("anthropic", chunks).await.unwrap_err();
        assert!(e.kind.is_retryable(), "{ask}: {e}");
    }

    let req = request("hello");
    let wrong = Call {
        api_key: "sk-wrong-key-echoed",
        ..call("m", &req)
    };
    let e = provider.chat(wrong).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(!e.message.contains("sk-wrong-key-echoed"), "{}", e.message);
    assert!(e.message.contains("[redacted]"), "{}", e.message);
}

#[tokio::test]
async fn gemini_sends_its_key_header_and_reads_the_answer() {
    let (base, seen) = start().await;
    let provider = GeminiProvider::new(format!("{base}/v1beta"), reqwest::Client::new());
    let req = request("hello");
    let done = provider.chat(call("gemini-2.5-flash", &req)).await.unwrap();
    assert_eq!(
        done.response["choices"][0]["message"]["content"],
        "echo: hello"
    );
    assert_eq!(done.response["id"], "r-1");
    assert_eq!(done.usage.completion_tokens, 3);
    let (path, headers, body) = seen.requests.lock().unwrap().pop().unwrap();
    assert_eq!(path, "gemini-2.5-flash:generateContent");
    assert_eq!(headers["x-goog-api-key"], KEY);
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be terse."}]})
    );
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn gemini_streams_whole_function_calls_and_needs_a_finish_reason() {
    let (base, seen) = start().await;
    let provider = GeminiProvider::new(format!("{base}/v1beta"), reqwest::Client::new());
    let req = request("weather in Oslo?");
    let chunks = provider
        .chat_stream(call("gemini-2.5-flash", &req))
        .await
        .unwrap();
    let done = stream::collect("gemini", chunks).await.unwrap();
    assert_eq!(
        seen.requests.lock().unwrap()[0].0,
        "gemini-2.5-flash:streamGenerateContent"
    );
    let choice = &done.response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Checking");
    let id = choice["message"]["tool_calls"][0]["id"].as_str().unwrap();
    assert!(id.starts_with("call_gemini_"), "{id}");
    assert_eq!(done.usage.prompt_tokens, 9);

    let req = request("cut");
    let chunks = provider
        .chat_stream(call("gemini-2.5-flash", &req))
        .await
        .unwrap();
    let e = stream::collect("gemini", chunks).await.unwrap_err();
    assert!(
        e.kind.is_retryable() && e.message.contains("finishReason"),
        "{e}"
    );
}

#[tokio::test]
async fn gemini_failures_arrive_as_error_kinds() {
    let (base, _seen) = start().await;
    let provider = GeminiProvider::new(format!("{base}/v1beta"), reqwest::Client::new());
    let req = request("rate");
    let e = provider
        .chat(call("gemini-2.5-flash", &req))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(2)))
    );
    let req = request("unavailable");
    let e = provider
        .chat(call("gemini-2.5-flash", &req))
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::ServerError, Some(503)));
    let e = provider
        .chat_stream(call("gemini-2.5-flash", &req))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::ServerError);
}

/// A key with no run of characters in common with anything else a test stores or logs.
const ECHOED_KEY: &str = "sk-Q7pK2mW9vR4tY6uH3j";

/// An OpenAI-format upstream that quotes the caller's key 290 characters into a body that is
/// not JSON: a 400 when the prompt says `refuse`, else a 200.
async fn start_echoing_upstream() -> String {
    async fn answer(headers: HeaderMap, body: Bytes) -> Response {
        let key = headers["authorization"]
            .to_str()
            .unwrap()
            .trim_start_matches("Bearer ")
            .to_string();
        let text = format!("{}{key}{}", "x".repeat(290), " trailing text".repeat(10));
        let status = if String::from_utf8_lossy(&body).contains("refuse") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        (status, [("content-type", "text/html")], text).into_response()
    }
    let app = Router::new().route("/v1/chat/completions", post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// Six characters of the key anywhere in `text`, as `(where, fragment)`.
fn key_fragment(text: &str) -> Option<&'static str> {
    (0..=ECHOED_KEY.len() - 6)
        .map(|at| &ECHOED_KEY[at..at + 6])
        .find(|fragment| text.contains(fragment))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_echoed_in_a_body_that_is_not_json_leaves_no_fragment_anywhere() {
    use common::{Backend, Harness, TOKEN};
    use sluice::config::{DeploymentConfig, KeyConfig, ProviderConfig, ProviderKind, Secret};

    let log = common::log::captured();
    let url = start_echoing_upstream().await;
    let h = Harness::start_with(
        Backend::Embedded,
        |c| {
            c.providers.insert(
                "echo".into(),
                ProviderConfig {
                    kind: ProviderKind::Openai,
                    base_url: url.clone(),
                    timeout: Duration::from_secs(3),
                    keys: vec![KeyConfig {
                        id: "echo-key".into(),
                        secret: Secret::new(ECHOED_KEY),
                        requests_per_minute: None,
                        tokens_per_minute: None,
                        requests_per_day: None,
                    }],
                },
            );
            let d: DeploymentConfig = toml::from_str(
                "provider = \"echo\"\nmodel = \"gpt-4o-mini\"\nprice = { input = 1, output = 2 }",
            )
            .unwrap();
            c.deployments.insert("echo".into(), d);
        },
        true,
    )
    .await;
    let submit = |prompt: &str| json!({"request": {"model": "echo", "messages": [{"role": "user", "content": prompt}]}});
    // A refusal (not retried) and a 200 that is not JSON (retried, then failed).
    let refused = h.submit_job(&submit("refuse")).await;
    let garbled = h.submit_job(&submit("answer")).await;
    let http = reqwest::Client::new();
    let base_url = h.base_url.clone();
    let get = |path: String| {
        let http = http.clone();
        let base_url = base_url.clone();
        async move {
            http.get(format!("{base_url}{path}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let mut answers = Vec::new();
    for id in [refused, garbled] {
        let job = h.wait(id).await;
        assert_eq!(job["status"], "failed", "{job:#}");
        assert!(
            job["error"].to_string().contains("[redacted]"),
            "the echoed key is there, scrubbed: {job:#}"
        );
        answers.push(get(format!("/v1/jobs/{id}")).await);
    }
    let chat = http
        .post(format!("{}/v1/chat/completions", h.base_url))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "refuse"}]}))
        .send()
        .await
        .unwrap();
    assert!(!chat.status().is_success());
    answers.push(chat.text().await.unwrap());
    for answer in &answers {
        assert_eq!(
            key_fragment(answer),
            None,
            "an answer holds the key: {answer}"
        );
    }

    let mut stored = String::new();
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    assert!(stored.contains("[redacted]"), "the store holds the errors");
    assert_eq!(key_fragment(&stored), None, "the store holds the key");
    h.stop().await;
    let logged = log.text();
    assert!(logged.contains("[redacted]"), "the log holds the errors");
    assert_eq!(key_fragment(&logged), None, "the log holds the key");
}
