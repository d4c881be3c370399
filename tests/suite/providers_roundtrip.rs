//! Every adapter against the simulator over HTTP, the same cases for each API family: a plain
//! answer with a system prompt, a two-turn tool conversation, JSON mode, streaming (with
//! tool-call deltas) folded into the same answer as the plain call, and every error class.
//!
//! The adapters are written against the providers' documentation and the simulator serves
//! those documented formats, so these tests check that both halves meet; the adapters' unit
//! tests check them against the documented examples alone.

use crate::common;

use common::{prompt, Backend, Harness};
use serde_json::{json, Value};
use sluice::job::ChatRequest;
use sluice::providers::anthropic::AnthropicProvider;
use sluice::providers::gemini::GeminiProvider;
use sluice::providers::openai::OpenAiProvider;
use sluice::providers::{stream, Call, CallOptions, Completion, ErrorKind, Provider};
use sluice::sim::{self, SimConfig, SimServer};
use std::time::Duration;

const KEY: &str = "sk-roundtrip-secret";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    OpenAi,
    Anthropic,
    Gemini,
}

const FAMILIES: [Family; 3] = [Family::OpenAi, Family::Anthropic, Family::Gemini];

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::OpenAi => "openai",
            Family::Anthropic => "anthropic",
            Family::Gemini => "gemini",
        }
    }

    fn model(self) -> &'static str {
        match self {
            Family::OpenAi => "gpt-4o-mini",
            Family::Anthropic => "claude-sonnet-4-5",
            Family::Gemini => "gemini-2.5-flash",
        }
    }

    fn adapter(self, server: &SimServer) -> Box<dyn Provider> {
        let http = reqwest::Client::new();
        match self {
            Family::OpenAi => Box::new(OpenAiProvider::new(server.openai_base_url(), http)),
            Family::Anthropic => {
                Box::new(AnthropicProvider::new(server.anthropic_base_url(), http))
            }
            Family::Gemini => Box::new(GeminiProvider::new(server.gemini_base_url(), http)),
        }
    }
}

async fn start() -> SimServer {
    let config = SimConfig {
        retry_after: Duration::from_millis(50),
        ..SimConfig::default()
    };
    sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("simulator starts")
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "The weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

fn request(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

fn chat(messages: Value) -> ChatRequest {
    request(json!({"model": "alias", "messages": messages}))
}

async fn call(
    family: Family,
    server: &SimServer,
    request: &ChatRequest,
) -> Result<Completion, sluice::providers::ProviderError> {
    family.adapter(server).chat(with(family, request)).await
}

async fn streamed(
    family: Family,
    server: &SimServer,
    request: &ChatRequest,
) -> Result<Completion, sluice::providers::ProviderError> {
    let chunks = family
        .adapter(server)
        .chat_stream(with(family, request))
        .await?;
    stream::collect(family.name(), chunks).await
}

fn with(family: Family, request: &ChatRequest) -> Call<'_> {
    Call {
        model: family.model(),
        api_key: KEY,
        request,
        timeout: Duration::from_secs(5),
        stream_idle_timeout: None,
        options: CallOptions::default(),
    }
}

fn message(done: &Completion) -> &Value {
    &done.response["choices"][0]["message"]
}

#[tokio::test]
async fn a_plain_answer_with_a_system_prompt() {
    let server = start().await;
    for family in FAMILIES {
        let req = chat(json!([
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "What is a queue?"}
        ]));
        let done = call(family, &server, &req).await.unwrap();
        let r = &done.response;
        assert_eq!(r["object"], "chat.completion", "{family:?}");
        assert_eq!(r["choices"][0]["finish_reason"], "stop", "{family:?}");
        let text = message(&done)["content"].as_str().unwrap();
        assert!(text.contains("What is a queue?"), "{family:?}: {text}");
        assert!(done.usage.prompt_tokens > 0 && done.usage.completion_tokens > 0);
        assert_eq!(
            r["usage"]["total_tokens"],
            done.usage.prompt_tokens + done.usage.completion_tokens
        );
    }
    // The system prompt travelled the way each family wants it.
    let requests = server.requests();
    let anthropic = requests
        .iter()
        .find(|r| r.get("max_tokens").is_some() && r.get("system").is_some())
        .unwrap();
    assert_eq!(anthropic["system"], "You are terse.\n\nAnswer in English.");
    let gemini = requests
        .iter()
        .find(|r| r.get("systemInstruction").is_some())
        .unwrap();
    assert_eq!(
        gemini["systemInstruction"],
        json!({"parts": [{"text": "You are terse.\n\nAnswer in English."}]})
    );
}

#[tokio::test]
async fn a_two_turn_tool_conversation_keeps_its_ids() {
    let server = start().await;
    for family in FAMILIES {
        let question =
            json!({"role": "user", "content": "[sim tool=get_weather] Weather in Oslo?"});
        let first =
            request(json!({"model": "alias", "messages": [question], "tools": [weather_tool()]}));
        let done = call(family, &server, &first).await.unwrap();
        assert_eq!(
            done.response["choices"][0]["finish_reason"], "tool_calls",
            "{family:?}"
        );
        let assistant = message(&done).clone();
        let tool_call = &assistant["tool_calls"][0];
        assert_eq!(tool_call["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(tool_call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(arguments["city"].is_string(), "{family:?}: {arguments}");
        let id = tool_call["id"].as_str().unwrap().to_string();
        assert!(!id.is_empty());

        let second = request(
            json!({"model": "alias", "tools": [weather_tool()], "messages": [
                question,
                assistant,
                {"role": "tool", "tool_call_id": id, "content": "{\"tempC\": 3, \"sky\": \"clear\"}"},
            ]}),
        );
        let done = call(family, &server, &second).await.unwrap();
        assert_eq!(
            done.response["choices"][0]["finish_reason"], "stop",
            "{family:?}"
        );
        assert!(
            !message(&done)["content"].as_str().unwrap().is_empty(),
            "{family:?}"
        );
    }
}

#[tokio::test]
async fn json_mode_answers_the_schema() {
    let server = start().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "tempC": {"type": "integer"}},
                        "required": ["city", "tempC"], "additionalProperties": false});
    for family in FAMILIES {
        let req = request(json!({"model": "alias",
            "messages": [{"role": "user", "content": "Weather in Oslo as JSON"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": true}}}));
        let done = call(family, &server, &req).await.unwrap();
        let content: Value = serde_json::from_str(message(&done)["content"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{family:?}: {e}"));
        assert!(
            content["city"].is_string() && content["tempC"].is_i64(),
            "{family:?}: {content}"
        );
    }
}

/// `reasoning_effort` reaches each provider as its own control, and the provider accepts it.
#[tokio::test]
async fn reasoning_effort_reaches_each_provider_as_its_control() {
    let server = start().await;
    for family in FAMILIES {
        let req = request(json!({"model": "alias", "reasoning_effort": "high",
            "messages": [{"role": "user", "content": "Think hard: why is the sky blue?"}]}));
        let done = call(family, &server, &req)
            .await
            .unwrap_or_else(|e| panic!("{family:?}: {e}"));
        assert!(message(&done)["content"].is_string(), "{family:?}");
        let sent = server.requests().pop().unwrap();
        let control = match family {
            Family::OpenAi => &sent["reasoning_effort"],
            Family::Anthropic => &sent["output_config"]["effort"],
            Family::Gemini => &sent["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        };
        let expected = match family {
            Family::Gemini => json!(24576),
            _ => json!("high"),
        };
        assert_eq!(control, &expected, "{family:?}: {sent}");
    }
}

#[tokio::test]
async fn a_streamed_answer_folds_into_the_plain_one() {
    let server = start().await;
    for family in FAMILIES {
        for text in [
            "Tell me about streams.",
            "[sim tool=get_weather] Weather in Bergen?",
        ] {
            let req = request(json!({"model": "alias", "tools": [weather_tool()],
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}));
            let plain = call(family, &server, &req).await.unwrap();
            let folded = streamed(family, &server, &req).await.unwrap();
            assert_eq!(
                folded.response["choices"][0]["finish_reason"],
                plain.response["choices"][0]["finish_reason"],
                "{family:?} {text}"
            );
            assert_eq!(
                message(&folded)["content"],
                message(&plain)["content"],
                "{family:?} {text}"
            );
            let names = |done: &Completion| {
                message(done)["tool_calls"]
                    .as_array()
                    .map(|calls| {
                        calls
                            .iter()
                            .map(|c| {
                                (
                                    c["function"]["name"].clone(),
                                    c["function"]["arguments"].clone(),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            };
            assert_eq!(names(&folded), names(&plain), "{family:?} {text}");
            assert_eq!(folded.usage, plain.usage, "{family:?} {text}");
        }
    }
}

#[tokio::test]
async fn streams_carry_tool_call_deltas_indexed_like_openai() {
    let server = start().await;
    for family in FAMILIES {
        let req = request(json!({"model": "alias", "tools": [weather_tool()],
            "messages": [{"role": "user", "content": "[sim tool=get_weather] Weather in Tromsø?"}]}));
        let mut chunks = family
            .adapter(&server)
            .chat_stream(with(family, &req))
            .await
            .unwrap();
        let mut deltas = Vec::new();
        let mut last = Value::Null;
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            let chunk = chunk.unwrap();
            assert_eq!(chunk["object"], "chat.completion.chunk", "{family:?}");
            if let Some(calls) = chunk.pointer("/choices/0/delta/tool_calls") {
                deltas.extend(calls.as_array().unwrap().iter().cloned());
            }
            last = chunk;
        }
        assert!(!deltas.is_empty(), "{family:?}");
        assert!(
            deltas.iter().all(|d| d["index"] == 0),
            "{family:?}: {deltas:?}"
        );
        assert_eq!(deltas[0]["function"]["name"], "get_weather", "{family:?}");
        assert!(deltas[0]["id"].is_string(), "{family:?}");
        let arguments: String = deltas
            .iter()
            .filter_map(|d| d.pointer("/function/arguments").and_then(Value::as_str))
            .collect();
        assert!(
            serde_json::from_str::<Value>(&arguments).is_ok(),
            "{family:?}: {arguments}"
        );
        // The usage comes last, in a chunk of its own.
        assert_eq!(last["choices"], json!([]), "{family:?}");
        assert!(
            last["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
            "{family:?}"
        );
    }
}

#[tokio::test]
async fn every_error_class_arrives_as_its_kind() {
    let server = start().await;
    for family in FAMILIES {
        let ask = |directive: &str| {
            chat(
                json!([{"role": "user", "content": format!("[sim fail={directive}] hi {}", family.name())}]),
            )
        };
        let expect = |result: Result<Completion, sluice::providers::ProviderError>,
                      kind: ErrorKind,
                      what: &str| {
            let e = result.expect_err(what);
            assert_eq!(e.kind, kind, "{family:?} {what}: {e}");
            assert_eq!(e.provider, family.name(), "{what}");
            assert!(!e.message.contains(KEY), "{family:?} {what}: {e}");
            e
        };
        let e = expect(
            call(family, &server, &ask("429")).await,
            ErrorKind::RateLimited,
            "429",
        );
        assert!(
            e.retry_after.is_some(),
            "{family:?}: a 429 says when to come back"
        );
        expect(
            call(family, &server, &ask("500")).await,
            ErrorKind::ServerError,
            "500",
        );
        expect(
            call(family, &server, &ask("503")).await,
            ErrorKind::ServerError,
            "503",
        );
        expect(
            call(family, &server, &ask("quota")).await,
            ErrorKind::QuotaExhausted,
            "quota",
        );
        expect(
            call(family, &server, &ask("400")).await,
            ErrorKind::BadRequest,
            "400",
        );
        expect(
            call(family, &server, &ask("404")).await,
            ErrorKind::NotFound,
            "404",
        );
        if family == Family::Anthropic {
            expect(
                call(family, &server, &ask("529")).await,
                ErrorKind::ServerError,
                "529",
            );
        }
        // Before a stream starts, a refusal is the outer error.
        let e = family
            .adapter(&server)
            .chat_stream(with(family, &ask("429*")))
            .await
            .err()
            .expect("a 429 before the stream");
        assert_eq!(e.kind, ErrorKind::RateLimited, "{family:?}");
        // After it started: a cut stream or an in-stream error fails the fold, retryably.
        for fault in ["cut", "midstream"] {
            let e = streamed(family, &server, &ask(fault))
                .await
                .expect_err(fault);
            assert!(e.kind.is_retryable(), "{family:?} {fault}: {e}");
        }
        let wrong = chat(json!([{"role": "user", "content": "hi"}]));
        let e = family
            .adapter(&server)
            .chat(Call {
                api_key: "",
                ..with(family, &wrong)
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized, "{family:?}: {e}");
        let slow = ask("timeout");
        let e = family
            .adapter(&server)
            .chat(Call {
                timeout: Duration::from_millis(300),
                ..with(family, &slow)
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{family:?}");
    }
    server.shutdown().await;
}

/// A stream that has begun and then goes silent ends at the call's `stream_idle_timeout`,
/// long before its whole-call timeout, as a retryable timeout naming the setting; a slow
/// first token is not a stall (that wait is the route's `first_token_timeout`'s).
#[tokio::test]
async fn a_stalled_stream_ends_at_its_idle_limit() {
    let server = start().await;
    for family in FAMILIES {
        let idle = |request| Call {
            timeout: Duration::from_secs(30),
            stream_idle_timeout: Some(Duration::from_millis(300)),
            ..with(family, request)
        };
        let stalled =
            chat(json!([{"role": "user", "content": "[sim fail=stall] Tell me a long story."}]));
        let started = std::time::Instant::now();
        let chunks = family
            .adapter(&server)
            .chat_stream(idle(&stalled))
            .await
            .unwrap();
        let e = stream::collect(family.name(), chunks).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{family:?}: {e}");
        assert!(e.kind.is_retryable());
        assert!(
            e.message.contains("stream_idle_timeout") && e.message.contains("300ms"),
            "{family:?}: {e}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{family:?}");

        let slow_start = chat(json!([{"role": "user", "content": "[sim ttft=600ms] Hello."}]));
        let chunks = family
            .adapter(&server)
            .chat_stream(idle(&slow_start))
            .await
            .unwrap();
        stream::collect(family.name(), chunks)
            .await
            .unwrap_or_else(|e| panic!("{family:?}: a slow first token is no stall: {e}"));
    }
    server.shutdown().await;
}

/// A streamed answer's rate-limit headers say a key is spent as a plain answer's do: the
/// folded completion carries `key_spent_for` (OpenAI's and Anthropic's headers; Gemini
/// announces none).
#[tokio::test]
async fn a_streamed_answers_headers_say_when_its_key_is_spent() {
    let server = sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            announced_requests_per_minute: Some(1),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    for family in FAMILIES {
        let req = chat(json!([{"role": "user", "content": "Hello."}]));
        let done = streamed(family, &server, &req).await.unwrap();
        match family {
            Family::Gemini => assert_eq!(done.key_spent_for, None),
            _ => {
                let wait = done.key_spent_for.expect("remaining 0 for the minute");
                assert!(wait <= Duration::from_secs(60), "{family:?}: {wait:?}");
            }
        }
    }
    server.shutdown().await;
}

/// The built-in configuration's Anthropic and Gemini routes, through the whole job loop: the
/// router builds their adapters against the simulator, the worker stores the translated
/// answer and charges it at the deployment's prices, and an unsupported parameter fails the
/// job at once, naming it.
#[tokio::test]
async fn jobs_on_anthropic_and_gemini_routes_run_and_are_charged() {
    let h = Harness::start(Backend::Embedded).await;
    // (route, deployment, input and output price in pico-USD per token)
    for (route, deployment, input, output) in [
        ("writer", "claude-sonnet", 3_000_000, 15_000_000),
        ("flash", "gemini-flash", 300_000, 2_500_000),
    ] {
        let id = h.submit(route, &prompt("Name a river.")).await;
        let job = h.wait(id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(job["attempts"][0]["deployment"], deployment, "{job:#}");
        let result = &job["result"];
        assert_eq!(result["object"], "chat.completion");
        assert_eq!(result["choices"][0]["finish_reason"], "stop");
        assert!(result["choices"][0]["native_finish_reason"].is_string());
        let usage = &result["usage"];
        let expected = usage["prompt_tokens"].as_i64().unwrap() * input
            + usage["completion_tokens"].as_i64().unwrap() * output;
        assert_eq!(
            job["cost"]["amount_pico_usd"].as_i64().unwrap(),
            expected,
            "{job:#}"
        );
    }
    let refused = h
        .client
        .submit(&json!({"request": {"model": "writer", "seed": 7,
            "messages": [{"role": "user", "content": prompt("Deterministic, please.")}]}}))
        .await
        .unwrap();
    let job = h
        .wait(refused["id"].as_str().unwrap().parse().unwrap())
        .await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["kind"], "bad_request");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("anthropic does not support \"seed\""),
        "{message}"
    );
    assert_eq!(
        job["attempts"].as_array().unwrap().len(),
        1,
        "not retried elsewhere"
    );
    h.stop().await;
}
