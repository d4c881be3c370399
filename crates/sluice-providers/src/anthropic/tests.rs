//! The Anthropic adapter against the documented requests, answers, errors and streams.

use super::*;
use crate::http::tests::headers;
use crate::stream as driver;
use crate::CallOptions;
use reqwest::StatusCode;
use sluice_core::job::ChatRequest;

fn body_for(request: Value, options: CallOptions) -> Result<Value, ProviderError> {
    body_on("claude-sonnet-4-5", request, options)
}

fn body_on(model: &str, request: Value, options: CallOptions) -> Result<Value, ProviderError> {
    let request: ChatRequest = serde_json::from_value(request).unwrap();
    let call = Call {
        model,
        api_key: "k",
        request: &request,
        timeout: Duration::from_secs(1),
        stream_idle_timeout: None,
        options,
    };
    let canonical = read(&call)?;
    let body = request_body(&call, &canonical, false)?;
    Ok(serde_json::to_value(body).unwrap())
}

fn body(request: Value) -> Value {
    body_for(request, CallOptions::default()).unwrap()
}

#[test]
fn a_plain_request_hoists_the_system_prompt_and_sets_max_tokens() {
    let b = body(json!({"model": "smart", "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": "No emojis."},
        {"role": "user", "content": "Hello"},
    ], "temperature": 0.3, "stop": ["END"], "top_k": 40, "user": "u-1"}));
    assert_eq!(
        b,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": DEFAULT_MAX_TOKENS,
            "system": "Be terse.\n\nNo emojis.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "temperature": 0.3,
            "top_k": 40,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
        })
    );
    let b = body_for(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        CallOptions {
            default_max_tokens: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b["max_tokens"], 1000);
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 50}),
    );
    assert_eq!(b["max_tokens"], 50);
}

#[test]
fn images_become_image_blocks() {
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is it?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]}]}),
    );
    assert_eq!(
        b["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is it?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        ])
    );
}

#[test]
fn a_tool_conversation_merges_results_and_keeps_ids() {
    let b = body(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Oslo and Bergen?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": [
            {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
            {"id": "toolu_01B", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "3 C"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "7 C"},
        {"role": "user", "content": "Which is warmer?"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "tool_choice": "required", "parallel_tool_calls": false}));
    assert_eq!(
        b["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo and Bergen?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Bergen"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "3 C"},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "7 C"},
                {"type": "text", "text": "Which is warmer?"},
            ]},
        ])
    );
    assert_eq!(
        b["tools"],
        json!([{"name": "get_weather", "description": "Weather now",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}

/// OpenAI's `strict` on a function is Anthropic's `strict` on the tool; a `strict` that
/// is not a boolean is a field error.
#[test]
fn a_strict_tool_stays_strict() {
    let tools = |strict: Value| {
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
               "tools": [{"type": "function", "function": {"name": "now", "strict": strict}}]})
    };
    assert_eq!(body(tools(json!(true)))["tools"][0]["strict"], true);
    assert!(body(tools(json!(false)))["tools"][0]
        .get("strict")
        .is_none());
    let e = body_for(tools(json!("yes")), CallOptions::default()).unwrap_err();
    assert!(
        e.message.contains("tools[0].function.strict") && e.message.contains("true or false"),
        "{}",
        e.message
    );
}

#[test]
fn tool_choices_map() {
    let with = |choice: Value| {
        body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}),
        )
    };
    assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
    assert_eq!(with(json!("none"))["tool_choice"], json!({"type": "none"}));
    assert_eq!(
        with(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
        json!({"type": "tool", "name": "f"})
    );
    assert_eq!(
        with(json!("auto"))["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
}

#[test]
fn json_schema_goes_to_output_config_and_json_object_is_refused() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}),
    );
    assert_eq!(
        b["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    let e = body_for(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}}),
        CallOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.message
            .starts_with("anthropic does not support \"response_format\""),
        "{}",
        e.message
    );
}

/// `reasoning_effort` from low up is Anthropic's `output_config.effort`, beside a JSON
/// schema's format; `none` and `minimal` have no counterpart and are refused by name.
#[test]
fn reasoning_effort_becomes_output_config_effort() {
    let schema = json!({"type": "object"});
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "medium",
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}),
    );
    assert_eq!(
        b["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}, "effort": "medium"})
    );
    let b = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "xhigh"}),
    );
    assert_eq!(b["output_config"], json!({"effort": "xhigh"}));
    for effort in ["none", "minimal"] {
        let e = body_for(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "reasoning_effort": effort}),
            CallOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.message.starts_with(&format!(
                "anthropic does not support \"reasoning_effort\" ({effort}; "
            )),
            "{}",
            e.message
        );
    }
}

/// Anthropic refuses text blocks that are empty or only whitespace, which OpenAI
/// takes: they are left out, and a turn left with nothing is left out with them.
#[test]
fn blank_text_blocks_are_left_out() {
    let b = body(json!({"model": "m", "messages": [
        {"role": "user", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": " \n"}, {"type": "text", "text": "Time?"}]},
        {"role": "assistant", "content": "  ", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]}));
    assert_eq!(
        b["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Time?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "noon"}]},
        ])
    );
}

/// Models after Claude 3 refuse `temperature` and `top_p` together: `top_p` is refused
/// by name beside `temperature` (or dropped), alone it passes, and Claude 3 takes both.
#[test]
fn top_p_beside_temperature_is_refused_after_claude_3() {
    let both = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                      "temperature": 0.5, "top_p": 0.9});
    let e = body_for(both.clone(), CallOptions::default()).unwrap_err();
    assert!(
        e.message
            .starts_with("anthropic does not support \"top_p\" (beside temperature"),
        "{}",
        e.message
    );
    let dropped = body_for(
        both.clone(),
        CallOptions {
            drop_unsupported_params: true,
            ..CallOptions::default()
        },
    )
    .unwrap();
    assert_eq!(dropped["temperature"], 0.5);
    assert!(dropped.get("top_p").is_none());
    let alone = body(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                            "top_p": 0.9}),
    );
    assert_eq!(alone["top_p"], 0.9);
    let older = body_on("claude-3-5-haiku-latest", both, CallOptions::default()).unwrap();
    assert_eq!(
        (older["temperature"].clone(), older["top_p"].clone()),
        (json!(0.5), json!(0.9))
    );
}

#[test]
fn unsupported_parameters_are_refused_unless_dropped() {
    let request = |extra: Value| {
        let mut r = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    for (extra, name) in [
        (json!({"logit_bias": {"1": 5}}), "logit_bias"),
        (json!({"n": 2}), "n"),
        (json!({"seed": 3}), "seed"),
        (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"temperature": 1.5}), "temperature"),
    ] {
        let e = body_for(request(extra.clone()), CallOptions::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(
            e.message
                .starts_with(&format!("anthropic does not support \"{name}\"")),
            "{}",
            e.message
        );
        let lenient = CallOptions {
            drop_unsupported_params: true,
            ..Default::default()
        };
        let b = body_for(request(extra), lenient).unwrap();
        assert!(b.get(name).is_none() || name == "temperature", "{b}");
    }
    let lenient = CallOptions {
        drop_unsupported_params: true,
        ..Default::default()
    };
    let b = body_for(request(json!({"temperature": 1.5})), lenient).unwrap();
    assert_eq!(b["temperature"], 1.0);
    // Defaults ask for nothing and are accepted.
    body(request(
        json!({"n": 1, "logprobs": false, "presence_penalty": 0, "store": true}),
    ));
}

/// The documented example response with a tool call.
const TOOL_USE: &str = r#"{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant",
    "model":"claude-sonnet-4-5","content":[{"type":"text","text":"I'll check."},
    {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"city":"Oslo"}}],
    "stop_reason":"tool_use","stop_sequence":null,
    "usage":{"input_tokens":412,"output_tokens":57,"cache_creation_input_tokens":1000,"cache_read_input_tokens":2000}}"#;

#[test]
fn a_tool_use_answer_becomes_tool_calls_with_the_ids_given() {
    let c = parse_message(200, TOOL_USE.as_bytes()).unwrap();
    let r = &c.response;
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["id"], "msg_01Aq9w938a90dw8q");
    assert_eq!(r["model"], "claude-sonnet-4-5");
    let choice = &r["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["native_finish_reason"], "tool_use");
    assert_eq!(choice["message"]["content"], "I'll check.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
    // The cache arithmetic: 412 + 1000 + 2000 prompt tokens, 2000 of them cache reads.
    assert_eq!(
        c.usage,
        Usage {
            prompt_tokens: 3412,
            completion_tokens: 57,
            cached_tokens: 2000,
            cache_write_tokens: 1000,
        }
    );
    assert_eq!(r["usage"]["total_tokens"], 3469);
    assert_eq!(r["usage"]["prompt_tokens_details"]["cached_tokens"], 2000);

    // The answer's tool call goes back out with the same id on the next turn.
    let mut next = vec![
        json!({"role": "user", "content": "Weather in Oslo?"}),
        choice["message"].clone(),
    ];
    next.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "3 C"}));
    let b = body(json!({"model": "m", "messages": next}));
    assert_eq!(
        b["messages"][1]["content"][1]["id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
    assert_eq!(
        b["messages"][2]["content"][0]["tool_use_id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
}

#[test]
fn stop_reasons_map_and_pause_turn_is_retried() {
    let with = |reason: &str| {
        let text = TOOL_USE.replace(
            "\"tool_use\",\"stop_sequence\"",
            &format!("\"{reason}\",\"stop_sequence\""),
        );
        parse_message(200, text.as_bytes())
    };
    assert_eq!(
        with("end_turn").unwrap().response["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(
        with("max_tokens").unwrap().response["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(
        with("refusal").unwrap().response["choices"][0]["finish_reason"],
        "content_filter"
    );
    let e = with("pause_turn").unwrap_err();
    assert!(e.kind.is_retryable());
    assert!(e.message.contains("pause_turn"), "{}", e.message);
    let e = parse_message(200, br#"{"type":"message","content":[]}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
}

/// A `tool_use` block without the `id` the documentation requires is a malformed answer
/// naming the field, not a tool call with an empty id; fields the documentation does not list
/// (newer than this code) are ignored, and so are block types it does not know.
#[test]
fn a_tool_use_without_its_id_is_a_malformed_answer() {
    let without_id = TOOL_USE.replace(r#""id":"toolu_01A09q90qw90lq917835lq9","#, "");
    let e = parse_message(200, without_id.as_bytes()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
    assert_eq!(e.status, Some(200));
    assert!(
        e.message.contains("content[1]") && e.message.contains("missing field `id`"),
        "{}",
        e.message
    );
    let without_name = TOOL_USE.replace(r#""name":"get_weather","#, "");
    let e = parse_message(200, without_name.as_bytes()).unwrap_err();
    assert!(e.message.contains("`name`"), "{}", e.message);

    let newer = TOOL_USE
        .replace(
            r#""stop_reason":"tool_use""#,
            r#""stop_reason":"tool_use","container":{"id":"c1"},"stop_details":null"#,
        )
        .replace(
            r#"[{"type":"text","text":"I'll check."}"#,
            r#"[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"I'll check.","citations":[]}"#,
        );
    let c = parse_message(200, newer.as_bytes()).unwrap();
    let message = &c.response["choices"][0]["message"];
    assert_eq!(message["content"], "I'll check.");
    assert_eq!(
        message["tool_calls"][0]["id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
}

/// A streamed `tool_use` block without its id fails the stream the same way.
#[tokio::test]
async fn a_streamed_tool_use_without_its_id_fails_the_stream() {
    let broken = STREAM.replace(r#""id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","#, "");
    let items = driver::replay(AnthropicStream::new("m"), &[broken.as_bytes()]).await;
    let e = items.last().unwrap().clone().unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
    assert!(e.message.contains("missing field `id`"), "{}", e.message);
}

fn answer(status: u16, headers: HeaderMap, body: &str) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
        .to_string()
}

#[test]
fn every_error_class() {
    use ErrorKind::*;
    let now = SystemTime::now();
    for (status, kind, message, expected) in [
        (400, "invalid_request_error", "messages: field required", BadRequest),
        (401, "authentication_error", "invalid x-api-key", Unauthorized),
        (403, "permission_error", "no access", Unauthorized),
        (404, "not_found_error", "model: claude-x", NotFound),
        (413, "request_too_large", "too big", BadRequest),
        (429, "rate_limit_error", "Number of requests has exceeded your rate limit", RateLimited),
        (500, "api_error", "Internal server error", ServerError),
        (529, "overloaded_error", "Overloaded", ServerError),
        (402, "billing_error", "Payment required", QuotaExhausted),
        (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.", QuotaExhausted),
        (400, "invalid_request_error", "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.", QuotaExhausted),
    ] {
        let e = error_from_answer(&answer(status, HeaderMap::new(), &error_body(kind, message)), now);
        assert_eq!(e.kind, expected, "{status} {kind}");
        assert_eq!(e.message, message);
        assert_eq!(e.status, Some(status));
        assert_eq!(e.provider, "anthropic");
        // Anthropic's error object has no param, and none is guessed from the message.
        assert_eq!(e.param, None);
    }
    let spend_cap = json!({"type": "error", "error": {"type": "rate_limit_error",
        "message": "monthly limit", "details": {"error_code": "enforced_spend_limit_reached"}}});
    let e = error_from_answer(&answer(429, HeaderMap::new(), &spend_cap.to_string()), now);
    assert_eq!(e.kind, QuotaExhausted);
    let e = error_from_answer(
        &answer(502, HeaderMap::new(), "<html>bad gateway</html>"),
        now,
    );
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ServerError, "<html>bad gateway</html>")
    );
}

#[test]
fn rate_limits_say_when_to_come_back() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
    let body = error_body("rate_limit_error", "slow down");
    let h = headers(&[("retry-after", "7")]);
    let e = error_from_answer(&answer(429, h, &body), now);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    let h = headers(&[
        ("anthropic-ratelimit-requests-remaining", "10"),
        ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:21Z"),
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2023-11-14T22:13:50Z",
        ),
    ]);
    let e = error_from_answer(&answer(429, h.clone(), &body), now);
    assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
    // Not a rate limit: the reset times say nothing about this failure.
    let e = error_from_answer(
        &answer(529, h, &error_body("overloaded_error", "Overloaded")),
        now,
    );
    assert_eq!(e.retry_after, None);
}

/// The documented streaming example with text and a tool call (and a ping).
const STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":50},\"content\":[],\"stop_reason\":null}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let's check\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the weather.\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[tokio::test]
async fn the_event_stream_becomes_canonical_chunks_with_tool_call_deltas() {
    let items = driver::replay_all_splits(|| AnthropicStream::new("m"), STREAM.as_bytes()).await;
    let chunks: Vec<Value> = items.iter().map(|i| i.clone().unwrap()).collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let tool_deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(tool_deltas[0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(tool_deltas[0]["function"]["name"], "get_weather");
    assert!(tool_deltas.iter().all(|d| d["index"] == 0));
    assert_eq!(tool_deltas[2]["function"]["arguments"], "{\"location\":");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 622);

    let done = driver::fold(items).await.unwrap();
    let choice = &done.response["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "Okay, let's check the weather."
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"location\": \"San Francisco, CA\"}"
    );
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["native_finish_reason"], "tool_use");
    assert_eq!(
        done.usage,
        Usage {
            prompt_tokens: 622,
            completion_tokens: 89,
            cached_tokens: 50,
            cache_write_tokens: 100
        }
    );
}

/// A tool without parameters streams one empty `partial_json`; its arguments are `{}`,
/// as the same answer unstreamed has them, not an empty string no JSON parser takes.
#[tokio::test]
async fn a_tool_call_without_arguments_streams_an_empty_object() {
    let stream = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"stop_reason\":null,\"usage\":{\"input_tokens\":40,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_time\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":12}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let items = driver::replay(AnthropicStream::new("m"), &[stream.as_bytes()]).await;
    let done = driver::fold(items).await.unwrap();
    let call = &done.response["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_time");
    assert_eq!(call["function"]["arguments"], "{}");
}

#[tokio::test]
async fn an_error_event_or_a_missing_message_stop_fails_the_stream() {
    let start = STREAM.split("event: content_block_start").next().unwrap();
    let overloaded = format!(
        "{start}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
    );
    let items = driver::replay(AnthropicStream::new("m"), &[overloaded.as_bytes()]).await;
    let e = items.last().unwrap().clone().unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::ServerError, "Overloaded")
    );

    let cut = &STREAM[..STREAM.find("event: message_delta").unwrap()];
    let items = driver::replay(AnthropicStream::new("m"), &[cut.as_bytes()]).await;
    let e = items.last().unwrap().clone().unwrap_err();
    assert!(
        e.kind.is_retryable() && e.message.contains("message_stop"),
        "{}",
        e.message
    );
    assert!(driver::fold(items).await.is_err());
}
