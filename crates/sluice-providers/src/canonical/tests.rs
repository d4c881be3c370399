use super::*;
use crate::{ErrorKind, Usage};
use serde_json::{json, Value};

fn read(body: Value) -> Result<CanonicalRequest, FieldProblem> {
    CanonicalRequest::read(&serde_json::from_value(body).unwrap())
}

#[test]
fn system_and_developer_messages_are_hoisted_and_joined() {
    let r = read(json!({"model": "m", "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
    ]}))
    .unwrap();
    assert_eq!(r.system.as_deref(), Some("Be terse.\n\nAnswer in French."));
    assert_eq!(
        r.messages,
        vec![Message::User(vec![Part::Text("hi".into())])]
    );
}

#[test]
fn user_parts_split_data_urls() {
    let r = read(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]}]}))
    .unwrap();
    assert_eq!(
        r.messages[0],
        Message::User(vec![
            Part::Text("What is this?".into()),
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }),
            Part::Image(Image::Url("https://example.com/cat.jpg".into())),
        ])
    );
    let e = read(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
    )
    .unwrap_err();
    assert_eq!(e.field, "messages[0].content[0].image_url.url");
    let e = read(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {}}]}]}),
    )
    .unwrap_err();
    assert_eq!(e.field, "messages[0].content[0].type");
}

#[test]
fn tool_calls_parse_arguments_and_map_ids_to_names() {
    let r = read(json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3 C"},
    ]}))
    .unwrap();
    assert_eq!(
        r.messages[1],
        Message::Assistant {
            text: None,
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: json!({"city": "Oslo"}),
                extra_content: None,
            }]
        }
    );
    assert_eq!(r.tool_names["call_1"], "get_weather");
    assert_eq!(
        r.messages[2],
        Message::Tool {
            tool_call_id: "call_1".into(),
            content: "3 C".into()
        }
    );
}

#[test]
fn invalid_tool_arguments_are_a_clear_error() {
    let e = read(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
    ]}))
    .unwrap_err();
    assert_eq!(e.field, "messages[0].tool_calls[0].function.arguments");
    assert!(e.message.starts_with("is not valid JSON"), "{}", e.message);
    let error = e.into_error("anthropic");
    assert_eq!(error.kind, ErrorKind::BadRequest);
    assert!(error.message.contains("function.arguments"));
}

#[test]
fn parameters_are_typed_and_no_ops_are_not_asked_for() {
    let r = read(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5, "top_p": 0.9,
        "stop": "END", "n": 1, "seed": 7, "logprobs": false, "logit_bias": {},
        "frequency_penalty": 0, "presence_penalty": 0.5, "user": "u-1",
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": false, "reasoning_effort": "low", "top_logprobs": null,
        "stream": true, "stream_options": {"include_usage": true}, "verbosity": "low",
    }))
    .unwrap();
    assert_eq!(r.max_tokens, Some(20));
    assert_eq!(r.temperature, Some(0.5));
    assert_eq!(r.stop, vec!["END".to_string()]);
    assert_eq!(r.n, None);
    assert_eq!(r.seed, Some(7));
    assert_eq!(r.frequency_penalty, None);
    assert_eq!(r.presence_penalty, Some(0.5));
    assert_eq!(r.user.as_deref(), Some("u-1"));
    assert_eq!(r.tool_choice, Some(ToolChoice::Function("f".into())));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert_eq!(r.reasoning_effort, Some(ReasoningEffort::Low));
    assert_eq!(
        r.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "w".into(),
            schema: json!({"type": "object"})
        })
    );
    assert_eq!(
        r.rest,
        vec![
            ("stream_options".to_string(), json!({"include_usage": true})),
            ("verbosity".to_string(), json!("low")),
        ]
    );
    // What is left is refused, except what only labels a call.
    let policy = ParamPolicy {
        provider: "gemini",
        drop_unsupported: false,
    };
    let e = policy.check_rest(&r.rest).unwrap_err();
    assert!(e.message.contains("\"verbosity\""), "{}", e.message);
    policy.check_rest(&r.rest[..1]).unwrap();

    let e = read(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "maximal"}),
    )
    .unwrap_err();
    assert_eq!(e.field, "reasoning_effort");
    assert!(e.message.contains("\"xhigh\""), "{}", e.message);
}

#[test]
fn the_policy_names_the_parameter_and_the_provider() {
    let strict = ParamPolicy {
        provider: "anthropic",
        drop_unsupported: false,
    };
    let e = strict
        .check_rest(&[("logit_bias".into(), json!({"50256": -100}))])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(
        e.message
            .starts_with("anthropic does not support \"logit_bias\""),
        "{}",
        e.message
    );
    // Advisory parameters never refuse.
    strict.check_rest(&[("store".into(), json!(true))]).unwrap();
    let lenient = ParamPolicy {
        drop_unsupported: true,
        ..strict
    };
    lenient
        .check_rest(&[("logit_bias".into(), json!({"1": 1}))])
        .unwrap();
}

#[test]
fn finish_reasons_follow_the_mapping_table() {
    use FinishReason::*;
    assert_eq!(FinishReason::from_anthropic("end_turn"), Some(Stop));
    assert_eq!(FinishReason::from_anthropic("stop_sequence"), Some(Stop));
    assert_eq!(FinishReason::from_anthropic("max_tokens"), Some(Length));
    assert_eq!(
        FinishReason::from_anthropic("model_context_window_exceeded"),
        Some(Length)
    );
    assert_eq!(FinishReason::from_anthropic("tool_use"), Some(ToolCalls));
    assert_eq!(FinishReason::from_anthropic("refusal"), Some(ContentFilter));
    assert_eq!(FinishReason::from_anthropic("pause_turn"), None);
    assert_eq!(FinishReason::from_gemini("STOP", false), Some(Stop));
    assert_eq!(FinishReason::from_gemini("STOP", true), Some(ToolCalls));
    assert_eq!(FinishReason::from_gemini("MAX_TOKENS", false), Some(Length));
    for r in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
    ] {
        assert_eq!(
            FinishReason::from_gemini(r, false),
            Some(ContentFilter),
            "{r}"
        );
    }
    for r in [
        "MALFORMED_FUNCTION_CALL",
        "OTHER",
        "LANGUAGE",
        "FINISH_REASON_UNSPECIFIED",
    ] {
        assert_eq!(FinishReason::from_gemini(r, false), None, "{r}");
    }
}

#[test]
fn the_completion_object_has_the_canonical_shape() {
    let parts = CompletionParts {
        id: "msg_1".into(),
        created: 1_700_000_000,
        model: "claude-x".into(),
        choices: vec![ChoiceParts {
            index: 0,
            content: Some("Checking.".into()),
            refusal: None,
            tool_calls: vec![OutToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Oslo\"}".into(),
                extra_content: None,
            }],
            finish_reason: FinishReason::ToolCalls,
            native_finish_reason: Some("tool_use".into()),
        }],
        usage: Usage {
            prompt_tokens: 100,
            completion_tokens: 20,
            cached_tokens: 30,
            cache_write_tokens: 10,
        },
        reasoning_tokens: None,
    };
    let v = parts.to_value();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["native_finish_reason"], "tool_use");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(v["usage"]["total_tokens"], 120);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cache_write_tokens"],
        10
    );
    assert_eq!(Usage::from_canonical(&v["usage"]), Some(parts.usage));
}
