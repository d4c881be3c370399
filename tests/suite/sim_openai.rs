//! The OpenAI adapter against the simulator, over real HTTP on 127.0.0.1.
//!
//! The adapter is written against OpenAI's documentation and the simulator serves that
//! documented format, so these tests check both halves meet: success parsing, token
//! accounting, pass-through of unknown fields, and that every injected failure arrives as
//! the [`ErrorKind`] the worker acts on.

use crate::common;
use crate::sse;

use serde_json::{json, Value};
use sluice::job::ChatRequest;
use sluice::providers::openai::OpenAiProvider;
use sluice::providers::wait::{self, WaitUnit};
use sluice::providers::{Call, ErrorKind, Provider};
use sluice::sim::{self, tokens, SimConfig, SimServer};
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-secret-key";

async fn start(config: SimConfig) -> (SimServer, OpenAiProvider) {
    let server = sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("simulator starts");
    let provider = OpenAiProvider::new(server.openai_base_url(), reqwest::Client::new());
    (server, provider)
}

fn quick() -> SimConfig {
    SimConfig {
        retry_after: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

fn request(content: &str) -> ChatRequest {
    serde_json::from_value(json!({
        "model": "fast",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": content}
        ]
    }))
    .unwrap()
}

fn call<'a>(request: &'a ChatRequest) -> Call<'a> {
    Call {
        model: "gpt-4o-mini",
        api_key: KEY,
        request,
        timeout: Duration::from_secs(5),
        stream_idle_timeout: None,
        options: Default::default(),
    }
}

#[tokio::test]
async fn a_normal_completion_has_content_usage_and_finish_reason() {
    let (server, provider) = start(quick()).await;
    let req = request("Say hello to the queue");
    let done = provider.chat(call(&req)).await.expect("completion");

    assert_eq!(done.status, 200);
    let r = &done.response;
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(
        r["model"], "gpt-4o-mini",
        "echoes the model the adapter sent"
    );
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &r["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["refusal"], Value::Null);
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("This is a simulated answer to \"Say hello to the queue\"."),
        "{content}"
    );

    // Real accounting: the same tokenizer counts prompt and completion.
    assert_eq!(
        done.usage.prompt_tokens,
        tokens::count_prompt(&req.messages, None)
    );
    assert_eq!(done.usage.completion_tokens, tokens::count(content));
    assert_eq!(done.usage.cached_tokens, 0);
    assert_eq!(
        r["usage"]["total_tokens"].as_u64().unwrap(),
        done.usage.prompt_tokens + done.usage.completion_tokens
    );
    assert_eq!(
        r["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );

    // Deterministic: asking again gives the same words.
    let again = provider.chat(call(&req)).await.unwrap();
    assert_eq!(again.response["choices"][0]["message"]["content"], content);
    assert_ne!(again.response["id"], r["id"], "ids are per response");

    let stats = server.stats();
    assert_eq!(stats.chat_requests, 2);
    assert_eq!(stats.completions, 2);
    assert_eq!(stats.prompt_tokens, 2 * done.usage.prompt_tokens);
    server.shutdown().await;
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
    let (server, provider) = start(quick()).await;
    let mut req = request("Tell me a long story about queues");
    req.extra.insert("max_completion_tokens".into(), json!(3));
    let done = provider.chat(call(&req)).await.unwrap();
    assert_eq!(done.response["choices"][0]["finish_reason"], "length");
    assert_eq!(done.usage.completion_tokens, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn cached_directive_reports_cached_prompt_tokens() {
    let (server, provider) = start(quick()).await;
    let req = request("Summarise [sim cached=5]");
    let done = provider.chat(call(&req)).await.unwrap();
    assert_eq!(done.usage.cached_tokens, 5);
    assert!(done.usage.prompt_tokens > 5);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_reach_the_provider_unchanged() {
    let (server, provider) = start(quick()).await;
    let mut req = request("hi");
    req.extra.insert("temperature".into(), json!(0.3));
    req.extra.insert(
        "some_future_parameter".into(),
        json!({"nested": [1, "two"]}),
    );
    req.extra.insert("stream".into(), json!(true));
    req.extra
        .insert("stream_options".into(), json!({"include_usage": true}));
    provider
        .chat(call(&req))
        .await
        .expect("the sim accepted it");

    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    let body = &sent[0];
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["temperature"], 0.3);
    assert_eq!(body["some_future_parameter"], json!({"nested": [1, "two"]}));
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none());
    assert_eq!(body["messages"], json!(req.messages));
    server.shutdown().await;
}

#[tokio::test]
async fn a_429_is_rate_limited_with_retry_after_then_succeeds() {
    let (server, provider) = start(quick()).await;
    let req = request("Rate limit me [sim fail=429]");
    let err = provider.chat(call(&req)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited);
    assert_eq!(err.status, Some(429));
    assert_eq!(err.retry_after, Some(Duration::from_millis(50)));
    assert!(
        err.message.contains("Rate limit reached"),
        "{}",
        err.message
    );

    let done = provider
        .chat(call(&req))
        .await
        .expect("second call succeeds");
    assert_eq!(done.response["choices"][0]["finish_reason"], "stop");
    let stats = server.stats();
    assert_eq!(
        (stats.chat_requests, stats.errors, stats.completions),
        (2, 1, 1)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_fail_list_plays_in_order_and_counts_per_request() {
    let (server, provider) = start(quick()).await;
    let req = request("Flaky [sim fail=429,500]");
    let other = request("Unrelated");
    assert_eq!(
        provider.chat(call(&req)).await.unwrap_err().kind,
        ErrorKind::RateLimited
    );
    // Another request does not advance this one's counter.
    provider.chat(call(&other)).await.unwrap();
    let err = provider.chat(call(&req)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ServerError);
    assert_eq!(err.status, Some(500));
    assert_eq!(err.retry_after, None);
    // A fallback to another model is still the same request: the plan is spent.
    let fallback = Call {
        model: "other-model",
        ..call(&req)
    };
    provider.chat(fallback).await.expect("third call succeeds");
    assert_eq!(server.stats().chat_requests, 4);
    server.shutdown().await;
}

#[tokio::test]
async fn starred_faults_repeat() {
    let (server, provider) = start(quick()).await;
    let req = request("Broken [sim fail=500*]");
    for _ in 0..3 {
        let err = provider.chat(call(&req)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::ServerError);
        assert!(err.kind.is_retryable());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_400_is_a_bad_request_with_the_providers_message() {
    let (server, provider) = start(quick()).await;
    let req = request("Invalid [sim fail=400]");
    for _ in 0..2 {
        let err = provider.chat(call(&req)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert_eq!(err.status, Some(400));
        assert!(err.message.contains("[sim fail=400]"), "{}", err.message);
        assert!(!err.kind.is_retryable());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_request_names_the_problem() {
    let (server, provider) = start(quick()).await;
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "fast",
        "messages": [{"role": "robot", "content": "beep"}]
    }))
    .unwrap();
    let err = provider.chat(call(&req)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("'robot'"), "{}", err.message);

    let typo = request("[sim fial=429]");
    let err = provider.chat(call(&typo)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("fial"), "{}", err.message);
    server.shutdown().await;
}

#[tokio::test]
async fn quota_is_not_a_rate_limit() {
    let (server, provider) = start(quick()).await;
    let req = request("Broke [sim fail=quota]");
    let err = provider.chat(call(&req)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::QuotaExhausted);
    assert_eq!(err.status, Some(429));
    assert!(err.message.contains("quota"), "{}", err.message);
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_key_is_unauthorized_and_keys_never_leak() {
    let (server, provider) = start(quick()).await;
    let req = request("hi");
    let no_key = Call {
        api_key: "",
        ..call(&req)
    };
    let err = provider.chat(no_key).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.message.contains("API key"), "{}", err.message);

    let req = request("[sim fail=401]");
    let err = provider.chat(call(&req)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(!format!("{err} {err:?}").contains(KEY));
    server.shutdown().await;
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error() {
    let refused = common::RefusedPort::new();
    let provider = OpenAiProvider::new(
        format!("{}/v1/", refused.base_url()),
        reqwest::Client::new(),
    );
    let req = request("hi");
    let err = provider.chat(call(&req)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection);
    assert_eq!(err.status, None);
    assert!(!err.message.contains(KEY));
}

#[tokio::test]
async fn a_hung_call_times_out_and_shutdown_releases_it() {
    let (server, provider) = start(quick()).await;
    let req = request("Hang [sim fail=timeout]");
    let short = Call {
        timeout: Duration::from_millis(300),
        ..call(&req)
    };
    let started = Instant::now();
    let err = provider.chat(short).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.stats().hung, 1);

    // Only the first call hangs.
    provider.chat(short).await.expect("second call answers");

    // Hold another request open while shutting down: shutdown must not wait 10 minutes.
    let held = request("Hang again [sim fail=timeout]");
    let provider2 = provider.clone();
    let pending = tokio::spawn(async move {
        let c = Call {
            model: "m",
            api_key: KEY,
            request: &held,
            timeout: Duration::from_secs(30),
            stream_idle_timeout: None,
            options: Default::default(),
        };
        provider2.chat(c).await.map(|_| ())
    });
    common::eventually(
        "the second call to hang at the simulator",
        Duration::from_secs(5),
        async || server.stats().hung == 2,
    )
    .await;
    let stopping = Instant::now();
    server.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(3));
    let released = pending.await.unwrap().unwrap_err();
    assert!(released.kind.is_retryable(), "{released:?}");
}

#[tokio::test]
async fn the_wire_format_matches_openais_documentation() {
    let (server, _) = start(quick()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    let ok = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for header in [
        "x-request-id",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(ok.headers().contains_key(header), "missing {header}");
    }
    let reset = ok.headers()["x-ratelimit-reset-requests"].to_str().unwrap();
    let parsed = wait::parse_wait(reset, WaitUnit::GoDuration).expect(reset);
    assert!(parsed <= Duration::from_secs(60), "{reset}");
    assert_eq!(parsed.subsec_nanos() % 1_000_000, 0, "whole ms: {reset}");
    let v: Value = ok.json().await.unwrap();
    for key in [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "service_tier",
        "system_fingerprint",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    assert!(v["usage"]["prompt_tokens_details"]["audio_tokens"].is_u64());
    assert!(v["usage"]["completion_tokens_details"]["rejected_prediction_tokens"].is_u64());

    // The header form of a fault, for SDK users.
    let limited = http
        .post(&url)
        .bearer_auth(KEY)
        .header("x-sim-fault", "429")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(limited.headers()["retry-after-ms"], "50");
    assert_eq!(limited.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(limited.headers().contains_key("x-request-id"));
    let e: Value = limited.json().await.unwrap();
    let error = e["error"].as_object().unwrap();
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"]);
    assert_eq!(error["code"], "rate_limit_exceeded");

    let missing = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let e: Value = missing.json().await.unwrap();
    assert_eq!(e["error"]["param"], "messages");
    assert_eq!(
        e["error"]["message"],
        "Missing required parameter: 'messages'."
    );

    let garbage = http
        .post(&url)
        .bearer_auth(KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let e: Value = garbage.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");

    let unknown = http
        .get(format!("{}/nothing", server.openai_base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let e: Value = unknown.json().await.unwrap();
    assert_eq!(e["error"]["message"], "Invalid URL (GET /v1/nothing)");
    server.shutdown().await;
}

#[tokio::test]
async fn random_faults_follow_the_configured_rates() {
    let (server, provider) = start(SimConfig {
        rate_500: 1.0,
        ..quick()
    })
    .await;
    let req = request("hi");
    assert_eq!(
        provider.chat(call(&req)).await.unwrap_err().kind,
        ErrorKind::ServerError
    );
    // A request with its own fail= plan is left alone by random faults.
    let scripted = request("[sim fail=429]");
    assert_eq!(
        provider.chat(call(&scripted)).await.unwrap_err().kind,
        ErrorKind::RateLimited
    );
    provider
        .chat(call(&scripted))
        .await
        .expect("scripted request succeeds");
    server.shutdown().await;
}

fn raw_post(server: &SimServer, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .bearer_auth(KEY)
        .json(body)
}

#[tokio::test]
async fn a_stream_sends_chunks_usage_and_done_with_the_same_tokens() {
    let (server, _) = start(quick()).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Tell me about durable queues"}]});
    let plain: Value = raw_post(&server, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = sse::events(raw_post(&server, &streamed).send().await.unwrap()).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(sse::Event::json)
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|piece| !piece.is_empty())
        .collect();
    assert!(pieces.len() > 2, "{pieces:?}");
    assert_eq!(
        pieces.concat(),
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], plain["usage"]);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));

    // Mid-stream errors arrive as an `error` object in a data line, and no [DONE].
    let mut faulty = streamed.clone();
    faulty["messages"][0]["content"] = json!("A long answer [sim fail=midstream]");
    let events = sse::events(raw_post(&server, &faulty).send().await.unwrap()).await;
    assert!(events.len() > 2);
    assert_eq!(
        events.last().unwrap().json()["error"]["type"],
        "server_error"
    );
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    faulty["messages"][0]["content"] = json!("A long answer [sim fail=cut]");
    let partial = sse::cut_body(raw_post(&server, &faulty).send().await.unwrap()).await;
    assert!(!partial.contains("[DONE]"));
    let stats = server.stats();
    assert_eq!((stats.streams, stats.errors), (1, 2));
    server.shutdown().await;
}

/// The first-token log holds, for each streamed call made after it was turned on, the
/// simulator's own time to the first content event, under the key of the call's last text.
#[tokio::test]
async fn the_first_token_log_times_each_stream_from_its_arrival() {
    let (server, _) = start(quick()).await;
    let stream = |content: &str| json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": content}]});
    let before = "Before the log [sim ttft=10ms]";
    sse::events(raw_post(&server, &stream(before)).send().await.unwrap()).await;
    server.record_first_tokens();
    let slow = "A slow first token [sim ttft=80ms]";
    let quick_one = "A quick first token";
    for content in [slow, quick_one] {
        sse::events(raw_post(&server, &stream(content)).send().await.unwrap()).await;
    }
    let log = server.first_tokens();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(!log.contains_key(&sim::text_key(before)));
    let slow_took = log[&sim::text_key(slow)].took;
    let quick_took = log[&sim::text_key(quick_one)].took;
    assert!(slow_took >= Duration::from_millis(80), "{slow_took:?}");
    assert!(quick_took < slow_took, "{quick_took:?} vs {slow_took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn tool_calls_their_results_and_json_mode() {
    let (server, _) = start(quick()).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let body = json!({"model": "m", "tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [{"role": "user", "content": "Weather in Oslo?"}]});
    let called: Value = raw_post(&server, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let choice = &called["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "sample city"}));

    let followup = json!({"model": "m", "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Oslo? [sim tool=get_weather]"},
        choice["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "3 degrees"}
    ]});
    let answered: Value = raw_post(&server, &followup)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = answered["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(
        text.contains("get_weather returned \"3 degrees\""),
        "{text}"
    );

    // Streamed: the name first, then the arguments in pieces for the same index.
    let streamed = json!({"model": "m", "tools": tools, "stream": true,
        "messages": [{"role": "user", "content": "Weather? [sim tool=get_weather]"}]});
    let events = sse::events(raw_post(&server, &streamed).send().await.unwrap()).await;
    let deltas: Vec<Value> = events[..events.len() - 1]
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .cloned()
                .map(Value::Object)
        })
        .collect();
    assert!(deltas.len() > 2, "{deltas:?}");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert!(deltas.iter().all(|d| d["index"] == 0));
    let joined: String = deltas
        .iter()
        .map(|d| d["function"]["arguments"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), arguments);

    let json_mode = json!({"model": "m", "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "Answer in JSON"}]});
    let answer: Value = raw_post(&server, &json_mode)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        serde_json::from_str::<Value>(content).unwrap().is_object(),
        "{content}"
    );
    server.shutdown().await;
}
