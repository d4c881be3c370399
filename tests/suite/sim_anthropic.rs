//! The simulator's Anthropic Messages API over real HTTP, checked against Anthropic's
//! documented shapes: the `Message`, its usage (input excludes cache reads), the event
//! stream in order, every error class with its `error.type` and headers, tool use.

use crate::sse;

use serde_json::{json, Value};
use sluice::sim::{self, SimConfig, SimServer};
use std::time::{Duration, Instant};

async fn start() -> (SimServer, reqwest::Client) {
    let config = SimConfig {
        retry_after: Duration::from_millis(50),
        ..SimConfig::default()
    };
    let server = sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("simulator starts");
    (server, reqwest::Client::new())
}

fn post(server: &SimServer, http: &reqwest::Client, body: &Value) -> reqwest::RequestBuilder {
    http.post(format!("{}/v1/messages", server.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

fn ask(text: &str) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 200,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": text}],
    })
}

async fn error_of(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status(), status);
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    body
}

/// The message of the `invalid_request_error` (a 400) the simulator answers `body` with.
async fn refusal_of(server: &SimServer, http: &reqwest::Client, body: &Value) -> String {
    let response = post(server, http, body).send().await.unwrap();
    let e = error_of(response, 400, "invalid_request_error").await;
    e["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_message_has_the_documented_shape_usage_and_headers() {
    let (server, http) = start().await;
    let response = post(&server, &http, &ask("Say hello to the queue"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers["request-id"].to_str().unwrap().starts_with("req_"));
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        for what in ["limit", "remaining"] {
            let name = format!("anthropic-ratelimit-{kind}-{what}");
            assert!(headers[name.as_str()]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .is_ok());
        }
        let reset = &headers[format!("anthropic-ratelimit-{kind}-reset").as_str()];
        chrono::DateTime::parse_from_rfc3339(reset.to_str().unwrap()).expect("RFC 3339 reset");
    }
    let message: Value = response.json().await.unwrap();
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-test");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(message["content"][0]["type"], "text");
    let text = message["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("This is a simulated answer to \"Say hello to the queue\"."));
    let usage = &message["usage"];
    assert_eq!(usage["output_tokens"], sluice::sim::tokens::count(text));
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert!(usage["input_tokens"].as_u64().unwrap() > 0);

    // Cached tokens are reported as cache reads and taken out of input_tokens.
    let usage_with = |cached: u64| {
        let body = ask(&format!("Say hello [sim cached={cached}]"));
        let request = post(&server, &http, &body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["usage"].clone() }
    };
    let (cached, uncached) = (usage_with(5).await, usage_with(0).await);
    assert_eq!(cached["cache_read_input_tokens"], 5);
    assert_eq!(
        cached["input_tokens"].as_u64().unwrap() + 5,
        uncached["input_tokens"].as_u64().unwrap()
    );
    let stats = server.stats();
    assert_eq!(
        (
            stats.chat_requests,
            stats.anthropic_requests,
            stats.completions
        ),
        (3, 3, 3)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn headers_and_fields_are_required_as_documented() {
    let (server, http) = start().await;
    let url = format!("{}/v1/messages", server.anthropic_base_url());
    let body = ask("hi");
    let no_key = http
        .post(&url)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    error_of(no_key, 401, "authentication_error").await;
    let no_version = http
        .post(&url)
        .header("x-api-key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    let e = error_of(no_version, 400, "invalid_request_error").await;
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));

    let mut no_max = body.clone();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let message = refusal_of(&server, &http, &no_max).await;
    assert_eq!(message, "max_tokens: Field required");

    let garbage = post(&server, &http, &json!(null))
        .body("{not json")
        .send()
        .await
        .unwrap();
    error_of(garbage, 400, "invalid_request_error").await;

    let typo = post(&server, &http, &ask("[sim fial=429]"))
        .send()
        .await
        .unwrap();
    let e = error_of(typo, 400, "invalid_request_error").await;
    assert!(e["error"]["message"].as_str().unwrap().contains("fial"));

    let unknown = http
        .post(format!("{}/v1/nothing", server.anthropic_base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    error_of(unknown, 404, "not_found_error").await;

    // What Anthropic refuses that OpenAI takes: both sampling controls, empty content.
    let mut both = ask("hi");
    both["temperature"] = json!(0.5);
    both["top_p"] = json!(0.9);
    let message = refusal_of(&server, &http, &both).await;
    assert!(message.starts_with("temperature and top_p cannot both be specified"));
    both["model"] = json!("claude-3-5-haiku-latest");
    assert_eq!(
        post(&server, &http, &both).send().await.unwrap().status(),
        200
    );
    for (content, says) in [
        (json!(""), "must have non-empty content"),
        (json!([{"type": "text", "text": ""}]), "must be non-empty"),
        (
            json!([{"type": "text", "text": " \n"}]),
            "non-whitespace text",
        ),
    ] {
        let mut blank = ask("hi");
        blank["messages"] = json!([{"role": "user", "content": content}]);
        let message = refusal_of(&server, &http, &blank).await;
        assert!(message.contains(says), "{message}");
    }
    // An empty final assistant turn is a prefill, not an empty message.
    let mut prefill = ask("hi");
    prefill["messages"] =
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]);
    assert_eq!(
        post(&server, &http, &prefill)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn every_error_class_has_anthropics_type_and_headers() {
    let (server, http) = start().await;
    let fail = |directive: &str| post(&server, &http, &ask(&format!("x [sim fail={directive}]")));

    let limited = fail("429").send().await.unwrap();
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(
        limited.headers()["anthropic-ratelimit-requests-remaining"],
        "0"
    );
    error_of(limited, 429, "rate_limit_error").await;
    // The plan is spent: the same request now succeeds.
    assert_eq!(fail("429").send().await.unwrap().status(), 200);

    let quota = fail("quota").send().await.unwrap();
    assert!(!quota.headers().contains_key("retry-after"));
    let e = error_of(quota, 429, "rate_limit_error").await;
    assert_eq!(
        e["error"]["details"]["error_code"],
        "enforced_spend_limit_reached"
    );
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("usage limits"));

    for (directive, status, kind) in [
        ("500", 500, "api_error"),
        ("529", 529, "overloaded_error"),
        ("400", 400, "invalid_request_error"),
        ("401", 401, "authentication_error"),
        ("403", 403, "permission_error"),
        ("404", 404, "not_found_error"),
        ("504", 504, "timeout_error"),
        // Not streamed, a mid-stream failure is the overload it stands for.
        ("midstream", 529, "overloaded_error"),
    ] {
        error_of(fail(directive).send().await.unwrap(), status, kind).await;
    }
    let cut = fail("cut").send().await.unwrap();
    assert_eq!(cut.status(), 200);
    let partial = sse::cut_body(cut).await;
    assert!(
        serde_json::from_str::<Value>(&partial).is_err(),
        "{partial}"
    );
    assert_eq!(server.stats().errors, 11);
    server.shutdown().await;
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

#[tokio::test]
async fn a_stream_sends_the_documented_events_in_order_with_the_same_tokens() {
    let (server, http) = start().await;
    let body = ask("Tell me about durable queues and their workers");
    let plain: Value = post(&server, &http, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = sse::events(post(&server, &http, &streamed(body)).send().await.unwrap()).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas > 2, "text in several deltas: {names:?}");
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for event in &events {
        assert_eq!(event.json()["type"], event.name.as_deref().unwrap());
    }
    let start = &events[0].json()["message"];
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        start["usage"]["input_tokens"],
        plain["usage"]["input_tokens"]
    );
    let text: String = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
    let delta = events[events.len() - 2].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"]["output_tokens"],
        plain["usage"]["output_tokens"]
    );
    assert_eq!(server.stats().streams, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn stream_faults_break_the_stream_midway() {
    let (server, http) = start().await;
    let body = streamed(ask("A long answer please [sim fail=midstream]"));
    let events = sse::events(post(&server, &http, &body).send().await.unwrap()).await;
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["type"], "overloaded_error");
    assert!(events
        .iter()
        .any(|e| e.name.as_deref() == Some("content_block_delta")));
    assert!(!events
        .iter()
        .any(|e| e.name.as_deref() == Some("message_stop")));

    let body = streamed(ask("A long answer please [sim fail=cut]"));
    let partial = sse::cut_body(post(&server, &http, &body).send().await.unwrap()).await;
    assert!(partial.contains("content_block_delta") && !partial.contains("message_stop"));

    // ttft: the stream opens at once, the first delta comes late.
    let body = streamed(ask("Slow start [sim ttft=400ms]"));
    let started = Instant::now();
    let response = post(&server, &http, &body).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    sse::events(response).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    // itl: each content delta after the first comes that long after the one before; a plain
    // answer is not paced.
    let body = streamed(ask("Paced [sim itl=30ms]"));
    let started = Instant::now();
    let events = sse::events(post(&server, &http, &body).send().await.unwrap()).await;
    let deltas = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .count() as u32;
    assert!(deltas >= 3, "{deltas} deltas");
    assert!(started.elapsed() >= Duration::from_millis(30) * (deltas - 1));
    // Not streamed, the whole answer waits for the first token.
    let started = Instant::now();
    let response = post(&server, &http, &ask("Slow [sim ttft=300ms]"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_tool_call_then_its_result_and_limits() {
    let (server, http) = start().await;
    let tools = json!([{
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}, "required": ["city", "days"]}
    }]);
    let mut body = ask("Weather in Oslo?");
    body["tools"] = tools.clone();
    body["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
    let called: Value = post(&server, &http, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(called["stop_reason"], "tool_use");
    let tool_use = &called["content"][0];
    assert_eq!(tool_use["type"], "tool_use");
    assert_eq!(tool_use["name"], "get_weather");
    assert!(tool_use["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(tool_use["input"], json!({"city": "sample city", "days": 1}));

    let followup = json!({
        "model": "claude-test",
        "max_tokens": 200,
        "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Oslo? [sim tool=get_weather]"},
            {"role": "assistant", "content": called["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": [{"type": "text", "text": "3 degrees"}]}]}
        ]
    });
    let answered: Value = post(&server, &http, &followup)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answered["stop_reason"], "end_turn");
    let text = answered["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("get_weather returned \"3 degrees\""),
        "{text}"
    );

    // Streamed, the input arrives as input_json_delta pieces that parse to the same input.
    let mut body = ask("Weather? [sim tool=get_weather]");
    body["tools"] = followup["tools"].clone();
    let events = sse::events(post(&server, &http, &streamed(body)).send().await.unwrap()).await;
    let start = events
        .iter()
        .find(|e| e.name.as_deref() == Some("content_block_start"))
        .unwrap();
    assert_eq!(start.json()["content_block"]["type"], "tool_use");
    let json_text: String = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .map(|e| {
            e.json()["delta"]["partial_json"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).unwrap(),
        tool_use["input"]
    );

    // An unknown tool in the directive names the offered ones.
    let mut body = ask("[sim tool=nope]");
    body["tools"] = followup["tools"].clone();
    let message = refusal_of(&server, &http, &body).await;
    assert!(message.contains("get_weather"), "{message}");

    let mut body = ask("Tell me a long story");
    body["max_tokens"] = json!(3);
    let cut: Value = post(&server, &http, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            cut["stop_reason"].clone(),
            cut["usage"]["output_tokens"].clone()
        ),
        (json!("max_tokens"), json!(3))
    );
    let mut body = ask("Tell me a long story");
    body["stop_sequences"] = json!(["simulated"]);
    let stopped: Value = post(&server, &http, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["stop_reason"], "stop_sequence");
    assert_eq!(stopped["stop_sequence"], "simulated");

    let mut body = ask("Count");
    body["output_config"] = json!({"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}});
    let structured: Value = post(&server, &http, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = structured["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"n": 1})
    );
    server.shutdown().await;
}
