//! The Gemini adapter against the documented requests, answers, errors and streams.

use super::*;
use crate::stream as driver;
use crate::CallOptions;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use sluice_core::job::ChatRequest;

fn body_for(request: Value, options: CallOptions) -> Result<Value, ProviderError> {
    let request: ChatRequest = serde_json::from_value(request).unwrap();
    let call = Call {
        model: "gemini-2.5-flash",
        api_key: "k",
        request: &request,
        timeout: Duration::from_secs(1),
        stream_idle_timeout: None,
        options,
    };
    let canonical = read(&call)?;
    Ok(serde_json::to_value(request_body(&call, &canonical)?).unwrap())
}

/// The `thinkingConfig` as it goes on the wire.
fn thinking(model: &str, effort: ReasoningEffort) -> Result<Value, &'static str> {
    thinking_config(model, effort).map(|config| serde_json::to_value(config).unwrap())
}

fn body(request: Value) -> Value {
    body_for(request, CallOptions::default()).unwrap()
}

#[test]
fn endpoints() {
    let p = GeminiProvider::new(
        "https://generativelanguage.googleapis.com/v1beta/",
        reqwest::Client::new(),
    );
    assert_eq!(
        p.endpoint("models/gemini-2.5-flash", "generateContent"),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        p.endpoint("gemini-2.5-flash", "streamGenerateContent?alt=sse"),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}

/// Gemini 2.5 gets the budgets Google's OpenAI-compatible endpoint uses, later models a
/// level; a level with no counterpart is refused by name, or left out when dropping.
#[test]
fn reasoning_effort_becomes_a_thinking_budget_or_level() {
    let request = |effort: &str| {
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": effort})
    };
    let b = body(request("medium"));
    assert_eq!(
        b["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 8192})
    );
    let budgets: Vec<Value> = ["none", "low", "high"]
        .iter()
        .map(|e| body(request(e))["generationConfig"]["thinkingConfig"]["thinkingBudget"].clone())
        .collect();
    assert_eq!(budgets, [json!(0), json!(1024), json!(24576)]);
    let e = body_for(request("minimal"), CallOptions::default()).unwrap_err();
    assert!(
        e.message
            .starts_with("gemini does not support \"reasoning_effort\" (Gemini 2 models"),
        "{}",
        e.message
    );
    let dropped = body_for(
        request("minimal"),
        CallOptions {
            drop_unsupported_params: true,
            ..CallOptions::default()
        },
    )
    .unwrap();
    assert!(dropped.get("generationConfig").is_none(), "{dropped}");

    for level in ["minimal", "low", "medium", "high"] {
        let effort = CanonicalRequest::read(&serde_json::from_value(request(level)).unwrap())
            .unwrap()
            .reasoning_effort
            .unwrap();
        assert_eq!(
            thinking("models/gemini-3-flash-preview", effort),
            Ok(json!({"thinkingLevel": level}))
        );
    }
    assert!(thinking("gemini-3-pro-preview", ReasoningEffort::None)
        .unwrap_err()
        .contains("cannot turn thinking off"));
    assert!(thinking("gemini-3-pro-preview", ReasoningEffort::XHigh).is_err());
    assert_eq!(
        thinking("gemini-2.5-flash", ReasoningEffort::None),
        Ok(json!({"thinkingBudget": 0}))
    );
    assert!(thinking("gemini-2.5-pro", ReasoningEffort::None)
        .unwrap_err()
        .contains("2.5 Pro cannot turn thinking off"));
    assert_eq!(
        thinking("gemini-2.5-pro", ReasoningEffort::Low),
        Ok(json!({"thinkingBudget": 1_024}))
    );
    assert!(thinking("gemini-2.0-flash", ReasoningEffort::Low)
        .unwrap_err()
        .contains("do not think"));
}

#[test]
fn a_plain_request_with_generation_config() {
    let b = body(json!({"model": "m", "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/x.JPG?s=1"}}]},
    ], "max_tokens": 100, "temperature": 1.5, "top_p": 0.9, "stop": "END", "n": 2, "seed": 7,
       "presence_penalty": 0.5}));
    assert_eq!(
        b,
        json!({
            "contents": [{"role": "user", "parts": [
                {"text": "Hi"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                {"fileData": {"fileUri": "https://example.com/x.JPG?s=1", "mimeType": "image/jpeg"}},
            ]}],
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "generationConfig": {"maxOutputTokens": 100, "temperature": 1.5, "topP": 0.9,
                "stopSequences": ["END"], "candidateCount": 2, "seed": 7, "presencePenalty": 0.5},
        })
    );
}

#[test]
fn json_modes() {
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}}),
    );
    assert_eq!(
        b["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}),
    );
    assert_eq!(
        b["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
    );
}

/// Gemini makes no promise of strict arguments: `strict: true` is refused by name, or
/// left out when the deployment drops what it cannot honour.
#[test]
fn a_strict_tool_is_refused_unless_dropped() {
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "now", "strict": true}}]});
    let e = body_for(request.clone(), CallOptions::default()).unwrap_err();
    assert!(
        e.message
            .starts_with("gemini does not support \"strict\" (tool \"now\""),
        "{}",
        e.message
    );
    let dropped = body_for(
        request,
        CallOptions {
            drop_unsupported_params: true,
            ..CallOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        dropped["tools"],
        json!([{"functionDeclarations": [{"name": "now"}]}])
    );
}

#[test]
fn tools_and_tool_choice() {
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "now"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    );
    assert_eq!(
        b["tools"],
        json!([{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather",
             "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "now"},
        ]}])
    );
    assert_eq!(
        b["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    let e = body_for(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": false}),
        CallOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.message
            .starts_with("gemini does not support \"parallel_tool_calls\""),
        "{}",
        e.message
    );
    let e = body_for(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 1}}),
        CallOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.message
            .starts_with("gemini does not support \"logit_bias\""),
        "{}",
        e.message
    );
}

/// The documented response shape with a function call and no id.
fn function_call_response() -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "get_weather", "args": {"city": "Bergen"}}},
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 40, "totalTokenCount": 190,
                          "cachedContentTokenCount": 20, "thoughtsTokenCount": 30},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-abc"
    })
}

/// A `functionCall` without the `name` the documentation requires is a malformed answer
/// naming the field, not a call to a function called ""; fields newer than this code are
/// ignored, plain or streamed.
#[tokio::test]
async fn a_function_call_without_its_name_is_a_malformed_answer() {
    let mut nameless = function_call_response();
    nameless["candidates"][0]["content"]["parts"][1]["functionCall"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let e = parse_body(200, nameless.to_string().as_bytes(), "m").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
    assert!(
        e.message
            .contains("candidates[0].content.parts[1].functionCall")
            && e.message.contains("missing field `name`"),
        "{}",
        e.message
    );
    let items = driver::replay(GeminiStream::new("m"), &[sse(&[nameless]).as_bytes()]).await;
    let e = items.last().unwrap().clone().unwrap_err();
    assert!(e.message.contains("missing field `name`"), "{}", e.message);

    let mut newer = function_call_response();
    newer["candidates"][0]["avgLogprobs"] = json!(-0.1);
    newer["candidates"][0]["content"]["parts"][0]["functionCall"]["willContinue"] = json!(false);
    newer["sdkHttpResponse"] = json!({"headers": {}});
    let c = parse_body(200, newer.to_string().as_bytes(), "m").unwrap();
    let calls = &c.response["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
}

#[test]
fn a_two_turn_tool_conversation_keeps_ids_stable() {
    let c = parse_response(200, &function_call_response(), "m").unwrap();
    let again = parse_response(200, &function_call_response(), "m").unwrap();
    assert_eq!(c.response, {
        let mut r = again.response.clone();
        r["created"] = c.response["created"].clone();
        r
    });
    let choice = &c.response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["native_finish_reason"], "STOP");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    let id0 = calls[0]["id"].as_str().unwrap();
    let id1 = calls[1]["id"].as_str().unwrap();
    assert!(
        id0.starts_with(SYNTHETIC_ID_PREFIX) && id0 != id1,
        "{id0} {id1}"
    );
    assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(
        calls[0]["extra_content"],
        json!({"google": {"thought_signature": "c2ln"}})
    );
    // thoughts count as completion; reasoning reported.
    assert_eq!(
        c.usage,
        Usage {
            prompt_tokens: 120,
            completion_tokens: 70,
            cached_tokens: 20,
            cache_write_tokens: 0
        }
    );
    assert_eq!(
        c.response["usage"]["completion_tokens_details"]["reasoning_tokens"],
        30
    );

    // Turn two: the answer goes back with the tool results.
    let b = body(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Oslo and Bergen?"},
        choice["message"].clone(),
        {"role": "tool", "tool_call_id": id0, "content": "{\"tempC\":3}"},
        {"role": "tool", "tool_call_id": id1, "content": "7 C"},
    ]}));
    assert_eq!(
        b["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Oslo and Bergen?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "get_weather", "args": {"city": "Bergen"}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": {"tempC": 3}}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "7 C"}}},
            ]},
        ])
    );
    // Ids Gemini did give are sent back.
    let b = body(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "fc-1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "fc-1", "content": "ok"},
    ]}));
    assert_eq!(b["contents"][0]["parts"][0]["functionCall"]["id"], "fc-1");
    assert_eq!(
        b["contents"][1]["parts"][0]["functionResponse"]["id"],
        "fc-1"
    );
    // A result for a call nobody made cannot be named.
    let e = body_for(
        json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
        CallOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.message.contains("messages[0].tool_call_id"),
        "{}",
        e.message
    );
}

#[test]
fn finish_reasons_and_blocked_prompts() {
    let with = |reason: &str| {
        let mut r = json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}, {"text": "?", "thought": true}]},
                            "finishReason": reason}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
        });
        r["responseId"] = "r".into();
        parse_response(200, &r, "m")
    };
    let c = with("STOP").unwrap();
    assert_eq!(c.response["choices"][0]["finish_reason"], "stop");
    assert_eq!(c.response["choices"][0]["message"]["content"], "Hi");
    assert_eq!(
        with("MAX_TOKENS").unwrap().response["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(
        with("SAFETY").unwrap().response["choices"][0]["finish_reason"],
        "content_filter"
    );
    let e = with("MALFORMED_FUNCTION_CALL").unwrap_err();
    assert!(e.kind.is_retryable() && e.message.contains("MALFORMED_FUNCTION_CALL"));

    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"},
                         "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}});
    let c = parse_response(200, &blocked, "gemini-2.5-flash").unwrap();
    assert_eq!(c.response["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(c.response["choices"][0]["native_finish_reason"], "SAFETY");
    assert_eq!(c.response["model"], "gemini-2.5-flash");
    assert_eq!(c.usage.prompt_tokens, 8);
}

fn answer(status: u16, body: &Value) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: bytes::Bytes::from(body.to_string()),
    }
}

#[test]
fn every_error_class() {
    use ErrorKind::*;
    let now = SystemTime::now();
    let error = |code: u16, status: &str, message: &str, details: Value| json!({"error": {"code": code, "message": message, "status": status, "details": details}});
    let retry = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]);
    let e = error_from_answer(
        &answer(
            429,
            &error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                retry,
            ),
        ),
        now,
    );
    assert_eq!(
        (e.kind, e.retry_after),
        (RateLimited, Some(Duration::from_secs(26)))
    );
    let daily = json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
         "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3600s"}]);
    let e = error_from_answer(
        &answer(
            429,
            &error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", daily),
        ),
        now,
    );
    assert_eq!(e.kind, QuotaExhausted);
    let e = error_from_answer(
        &answer(
            429,
            &error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                json!([]),
            ),
        ),
        now,
    );
    assert_eq!(e.kind, QuotaExhausted);
    let e = error_from_answer(
        &answer(
            429,
            &error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                json!([]),
            ),
        ),
        now,
    );
    assert_eq!((e.kind, e.retry_after), (RateLimited, None));
    for (code, status, expected) in [
        (503, "UNAVAILABLE", ServerError),
        (500, "INTERNAL", ServerError),
        (504, "DEADLINE_EXCEEDED", Timeout),
        (400, "INVALID_ARGUMENT", BadRequest),
        (400, "FAILED_PRECONDITION", BadRequest),
        (403, "PERMISSION_DENIED", Unauthorized),
        (401, "UNAUTHENTICATED", Unauthorized),
        (404, "NOT_FOUND", NotFound),
    ] {
        let e = error_from_answer(&answer(code, &error(code, status, "m", json!([]))), now);
        assert_eq!(e.kind, expected, "{status}");
        assert_eq!(
            (e.status, e.message.as_str(), e.provider),
            (Some(code), "m", "gemini")
        );
    }
    let bad_key =
        json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]);
    let e = error_from_answer(
        &answer(
            400,
            &error(400, "INVALID_ARGUMENT", "API key not valid.", bad_key),
        ),
        now,
    );
    assert_eq!((e.kind, e.param), (Unauthorized, None));
    // A google.rpc.BadRequest names the field to blame: the first violation's is kept.
    let bad_field = json!([{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [
        {"field": "generation_config.temperature", "description": "must be between 0 and 2"},
        {"field": "generation_config.top_p", "description": "must be between 0 and 1"}]}]);
    let e = error_from_answer(
        &answer(
            400,
            &error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), 3",
                bad_field,
            ),
        ),
        now,
    );
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (BadRequest, Some("generation_config.temperature"))
    );
    // The array form of the non-SSE stream endpoint.
    let e = error_from_answer(
        &answer(
            503,
            &json!([error(503, "UNAVAILABLE", "overloaded", json!([]))]),
        ),
        now,
    );
    assert_eq!((e.kind, e.message.as_str()), (ServerError, "overloaded"));
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("data: {e}\r\n\r\n"))
        .collect()
}

fn streamed() -> Vec<Value> {
    vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me look."}]}, "index": 0}],
               "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
               "modelVersion": "gemini-2.5-flash", "responseId": "resp-abc"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
                "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 8, "totalTokenCount": 18},
               "modelVersion": "gemini-2.5-flash", "responseId": "resp-abc"}),
    ]
}

#[tokio::test]
async fn a_stream_gives_whole_function_calls_with_the_same_ids_as_a_plain_answer() {
    let body = sse(&streamed());
    let items = driver::replay_all_splits(|| GeminiStream::new("m"), body.as_bytes()).await;
    let chunks: Vec<Value> = items.iter().map(|i| i.clone().unwrap()).collect();
    assert_eq!(chunks[0]["id"], "resp-abc");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let call = chunks
        .iter()
        .find_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .unwrap();
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(call["index"], 0);

    let done = driver::fold(items).await.unwrap();
    let whole = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "Let me look."}, {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 8, "totalTokenCount": 18},
        "modelVersion": "gemini-2.5-flash", "responseId": "resp-abc"});
    let plain = parse_response(200, &whole, "m").unwrap();
    assert_eq!(done.response["choices"], plain.response["choices"]);
    assert_eq!(done.response["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(done.usage, plain.usage);
}

#[tokio::test]
async fn a_stream_cut_before_its_finish_reason_or_carrying_an_error_fails() {
    let body = sse(&streamed()[..1]);
    let items = driver::replay(GeminiStream::new("m"), &[body.as_bytes()]).await;
    let e = items.last().unwrap().clone().unwrap_err();
    assert!(
        e.kind.is_retryable() && e.message.contains("finishReason"),
        "{}",
        e.message
    );

    let mut events = streamed()[..1].to_vec();
    events.push(json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}));
    let items = driver::replay(GeminiStream::new("m"), &[sse(&events).as_bytes()]).await;
    let e = items.last().unwrap().clone().unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::ServerError, "The model is overloaded.")
    );

    let blocked = sse(&[
        json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                               "usageMetadata": {"promptTokenCount": 4}}),
    ]);
    let done = driver::fold(driver::replay(GeminiStream::new("m"), &[blocked.as_bytes()]).await)
        .await
        .unwrap();
    assert_eq!(
        done.response["choices"][0]["finish_reason"],
        "content_filter"
    );
}
