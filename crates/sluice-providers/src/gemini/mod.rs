//! The Gemini adapter (Developer API): `POST {base}/models/{model}:generateContent`.
//!
//! Written against Google's documentation and the official `google-genai` SDK (provider
//! reference, sections 5 and 6), not the simulator. The canonical request becomes `contents`
//! of `user`/`model` turns with `parts`, a `systemInstruction`, a `generationConfig`, and
//! `functionDeclarations` with plain JSON Schema (`parametersJsonSchema`, since `parameters`
//! accepts only an OpenAPI subset).
//!
//! Tool calls need two pieces of bookkeeping OpenAI's format does not carry:
//! - Gemini's `functionResponse` names the function, OpenAI's `tool` message only the call id,
//!   so the name comes from the id→name map of the earlier assistant turns.
//! - Gemini often gives a call no id. The adapter then makes one, deterministically from the
//!   response id, the call and its position (see [`synthetic_id`]), so the same answer always
//!   gets the same ids, streamed or not; such ids are not sent back to Gemini, which never
//!   issued them.
//!
//! A call's `thoughtSignature` (which Gemini wants back on the next turn) travels in the tool
//! call's `extra_content.google.thought_signature`, as Google's own OpenAI-compatible endpoint
//! does.

mod stream;
#[cfg(test)]
mod tests;
pub mod wire;

pub use stream::GeminiStream;

use super::canonical::{
    self, CanonicalRequest, ChoiceParts, CompletionParts, FinishReason, Image, Message,
    OutToolCall, ParamPolicy, ReasoningEffort, ResponseFormat, ToolChoice,
};
use super::family::Family;
use super::http::{self, Answer};
use super::wait::{self, WaitUnit};
use super::{Call, Completion, ErrorKind, ProviderError, Usage};
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use wire::{
    Content, FileData, FunctionCall, FunctionCallOut, FunctionCallingConfig, FunctionDeclaration,
    FunctionOutput, FunctionResponse, GenerateContentRequest, GenerateContentResponse,
    GenerationConfig, InlineData, Part, ResponsePart, Role, ThinkingConfig, ToolConfig, ToolOutput,
    Tools, UsageMetadata,
};

const PROVIDER: &str = "gemini";
/// Ids this adapter made up start with this, so they are known not to be Gemini's.
pub const SYNTHETIC_ID_PREFIX: &str = "call_gemini_";

/// Calls `POST {base_url}/models/{model}:generateContent`.
#[derive(Debug, Clone)]
pub struct GeminiProvider {
    base_url: String,
    http: reqwest::Client,
}

impl GeminiProvider {
    /// `base_url` is the API root including its version, e.g.
    /// `https://generativelanguage.googleapis.com/v1beta`; a trailing `/` is ignored.
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        GeminiProvider {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The URL of `method` (`generateContent`, `streamGenerateContent?alt=sse`) for a model;
    /// a model written `models/gemini-…` is accepted too.
    pub fn endpoint(&self, model: &str, method: &str) -> String {
        model_method_url(&self.base_url, model, method)
    }

    fn post(
        &self,
        call: &Call<'_>,
        method: &str,
        body: &impl Serialize,
    ) -> reqwest::RequestBuilder {
        authorized(
            self.http.post(self.endpoint(call.model, method)),
            call.api_key,
        )
        .timeout(call.timeout)
        .json(body)
    }
}

/// The model an answer names: its `modelVersion`, else the one called, always in the form a
/// client writes (`gemini-2.5-flash`), never the resource name (`models/gemini-2.5-flash`)
/// that batch answers and a deployment configured that way carry, so an answer names its
/// model the same on either tier.
fn model_of(model_version: Option<&str>, called: &str) -> String {
    let model = model_version.unwrap_or(called);
    model.strip_prefix("models/").unwrap_or(model).to_string()
}

/// `{base_url}/models/{model}:{method}`; a model written `models/gemini-…` is accepted too.
pub(crate) fn model_method_url(base_url: &str, model: &str, method: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("{base_url}/models/{model}:{method}")
}

/// The key header every Gemini endpoint wants (generateContent, batches).
pub(crate) fn authorized(
    request: reqwest::RequestBuilder,
    api_key: &str,
) -> reqwest::RequestBuilder {
    request.header("x-goog-api-key", http::key_header(api_key))
}

impl Family for GeminiProvider {
    const NAME: &'static str = PROVIDER;
    type Stream = GeminiStream;

    fn request(
        &self,
        call: &Call<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let request = read(call)?;
        let body = request_body(call, &request)?;
        let method = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        Ok(self.post(call, method, &body))
    }

    fn completion(status: u16, body: &[u8], call: &Call<'_>) -> Result<Completion, ProviderError> {
        parse_body(status, body, call.model)
    }

    fn error(answer: &Answer, now: SystemTime) -> ProviderError {
        error_from_answer(answer, now)
    }

    /// Gemini announces no rate-limit state on its answers: a key is known spent only by a
    /// 429.
    fn key_spent_for(_: &HeaderMap) -> Option<Duration> {
        None
    }

    fn stream(call: &Call<'_>) -> GeminiStream {
        GeminiStream::new(call.model)
    }
}

/// OpenAI's `reasoning_effort` as Gemini's `thinkingConfig` for `model`, or why it has none.
///
/// Gemini 2.5 models take a budget of thinking tokens (`thinkingBudget`, 0 turning thinking
/// off); Google's OpenAI-compatible endpoint maps `low`, `medium` and `high` to 1,024, 8,192
/// and 24,576 tokens and `none` to 0, and so does this, except that 2.5 Pro cannot turn
/// thinking off (its budget starts at 128). Later models take a level instead
/// (`thinkingLevel`: `minimal`, `low`, `medium`, `high`; the model says which it accepts)
/// and cannot turn thinking off. Earlier models do not think at all. A level with no
/// documented counterpart is refused, not guessed.
fn thinking_config(model: &str, effort: ReasoningEffort) -> Result<ThinkingConfig, &'static str> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.starts_with("gemini-1") || model.starts_with("gemini-2.0") {
        return Err("models before Gemini 2.5 do not think");
    }
    if model.starts_with("gemini-2") {
        let budget = match effort {
            ReasoningEffort::None if model.starts_with("gemini-2.5-pro") => {
                return Err("none; Gemini 2.5 Pro cannot turn thinking off, its lowest budget is 128 tokens")
            }
            ReasoningEffort::None => 0,
            ReasoningEffort::Low => 1_024,
            ReasoningEffort::Medium => 8_192,
            ReasoningEffort::High => 24_576,
            ReasoningEffort::Minimal | ReasoningEffort::XHigh => {
                return Err("Gemini 2 models take a thinking budget, mapped only from none, low, medium and high")
            }
        };
        return Ok(ThinkingConfig::ThinkingBudget(budget));
    }
    match effort {
        ReasoningEffort::Minimal
        | ReasoningEffort::Low
        | ReasoningEffort::Medium
        | ReasoningEffort::High => Ok(ThinkingConfig::ThinkingLevel(effort.as_str())),
        ReasoningEffort::None => Err(
            "none; Gemini models after 2.5 cannot turn thinking off, the lowest level is minimal",
        ),
        ReasoningEffort::XHigh => Err("xhigh; Gemini's highest thinking level is high"),
    }
}

/// The call's request read for translation, a field error naming what cannot be read.
pub fn read(call: &Call<'_>) -> Result<CanonicalRequest, ProviderError> {
    CanonicalRequest::read(call.request).map_err(|p| p.into_error(PROVIDER))
}

/// The `GenerateContentRequest` for a canonical request (read from the call by [`read`]),
/// borrowing from it; the same for streaming.
pub fn request_body<'a>(
    call: &Call<'a>,
    request: &'a CanonicalRequest,
) -> Result<GenerateContentRequest<'a>, ProviderError> {
    let policy = ParamPolicy {
        provider: PROVIDER,
        drop_unsupported: call.options.drop_unsupported_params,
    };
    policy.check_rest(&request.rest)?;
    if request.parallel_tool_calls == Some(false) {
        policy.unsupported_because(
            "parallel_tool_calls",
            Some("false; Gemini cannot be told to call one tool at a time"),
        )?;
    }

    let mut config = GenerationConfig {
        max_output_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        stop_sequences: &request.stop,
        candidate_count: request.n,
        seed: request.seed,
        frequency_penalty: request.frequency_penalty,
        presence_penalty: request.presence_penalty,
        ..GenerationConfig::default()
    };
    if let Some(effort) = request.reasoning_effort {
        match thinking_config(call.model, effort) {
            Ok(thinking) => config.thinking_config = Some(thinking),
            Err(why) => policy.unsupported_because("reasoning_effort", Some(why))?,
        }
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => config.response_mime_type = Some("application/json"),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.response_mime_type = Some("application/json");
            config.response_json_schema = Some(schema);
        }
    }
    if let Some(strict) = request.tools.iter().find(|tool| tool.strict) {
        policy.unsupported_because(
            "strict",
            Some(&format!(
                "tool \"{}\" asks for strict arguments; Gemini follows a function's schema but \
                 does not promise to",
                strict.name
            )),
        )?;
    }
    let mut tools = Vec::new();
    if !request.tools.is_empty() {
        tools.push(Tools {
            function_declarations: request
                .tools
                .iter()
                .map(|tool| FunctionDeclaration {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    parameters_json_schema: tool.parameters.as_ref(),
                })
                .collect(),
        });
    }
    let tool_config = request.tool_choice.as_ref().map(|choice| {
        let (mode, allowed_function_names) = match choice {
            ToolChoice::None => ("NONE", None),
            ToolChoice::Auto => ("AUTO", None),
            ToolChoice::Required => ("ANY", None),
            ToolChoice::Function(name) => ("ANY", Some([name.as_str()])),
        };
        ToolConfig {
            function_calling_config: FunctionCallingConfig {
                mode,
                allowed_function_names,
            },
        }
    });
    Ok(GenerateContentRequest {
        contents: contents(request)?,
        system_instruction: request.system.as_deref().map(|text| Content {
            role: None,
            parts: vec![Part {
                text: Some(text),
                ..Part::default()
            }],
        }),
        generation_config: config,
        tools,
        tool_config,
    })
}

/// The conversation as `contents`; consecutive turns of one role are merged, so the answers
/// to parallel calls travel together as Gemini expects.
fn contents(request: &CanonicalRequest) -> Result<Vec<Content<'_>>, ProviderError> {
    let mut turns: Vec<Content<'_>> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, parts) = match message {
            Message::User(parts) => (Role::User, parts.iter().map(user_part).collect()),
            Message::Assistant { text, tool_calls } => {
                let mut parts = Vec::with_capacity(tool_calls.len() + 1);
                if let Some(text) = text {
                    parts.push(Part {
                        text: Some(text),
                        ..Part::default()
                    });
                }
                parts.extend(tool_calls.iter().map(|call| {
                    Part {
                        function_call: Some(FunctionCallOut {
                            name: &call.name,
                            args: &call.arguments,
                            id: issued_by_gemini(&call.id),
                        }),
                        thought_signature: call
                            .extra_content
                            .as_ref()
                            .and_then(|e| e.pointer("/google/thought_signature")),
                        ..Part::default()
                    }
                }));
                (Role::Model, parts)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                let name = request.tool_names.get(tool_call_id).ok_or_else(|| {
                    canonical::bad_request(
                        PROVIDER,
                        format!(
                            "messages[{i}].tool_call_id: \"{tool_call_id}\" answers no tool call of an earlier assistant message; Gemini needs the function's name"
                        ),
                    )
                })?;
                // `response` must be an object: a JSON answer as itself, text as a string.
                let output = serde_json::from_str::<Value>(content)
                    .map_or(ToolOutput::Text(content), ToolOutput::Json);
                let response = FunctionResponse {
                    name,
                    response: FunctionOutput { output },
                    id: issued_by_gemini(tool_call_id),
                };
                (
                    Role::User,
                    vec![Part {
                        function_response: Some(response),
                        ..Part::default()
                    }],
                )
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == Some(role) => last.parts.extend(parts),
            _ => turns.push(Content {
                role: Some(role),
                parts,
            }),
        }
    }
    Ok(turns)
}

/// A call id to send back: Gemini's own, never one this adapter made up.
fn issued_by_gemini(id: &str) -> Option<&str> {
    (!id.starts_with(SYNTHETIC_ID_PREFIX)).then_some(id)
}

fn user_part(part: &canonical::Part) -> Part<'_> {
    match part {
        canonical::Part::Text(text) => Part {
            text: Some(text),
            ..Part::default()
        },
        canonical::Part::Image(Image::Base64 { media_type, data }) => Part {
            inline_data: Some(InlineData {
                mime_type: media_type,
                data,
            }),
            ..Part::default()
        },
        canonical::Part::Image(Image::Url(url)) => Part {
            file_data: Some(FileData {
                file_uri: url,
                mime_type: image_mime_type(url),
            }),
            ..Part::default()
        },
    }
}

/// The media type of an image URL from its extension, when it has a common one.
fn image_mime_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next()?.to_ascii_lowercase();
    let extension = path.rsplit_once('.')?.1;
    match extension {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        "heic" => Some("image/heic"),
        "heif" => Some("image/heif"),
        _ => None,
    }
}

/// A deterministic id for a call Gemini gave none: from the response id (or, lacking one, the
/// call itself), the candidate and the call's position. FNV-1a, because it is stable across
/// builds and platforms, which `std`'s hasher does not promise.
pub fn synthetic_id(
    response_id: &str,
    candidate: u64,
    position: usize,
    call: &FunctionCall,
) -> String {
    if response_id.is_empty() {
        let call = serde_json::to_string(call).expect("a function call serialises");
        made_up_id(&call, candidate, position)
    } else {
        made_up_id(response_id, candidate, position)
    }
}

/// `call_gemini_{FNV-1a of seed}_{candidate}_{position}`.
fn made_up_id(seed: &str, candidate: u64, position: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{SYNTHETIC_ID_PREFIX}{hash:016x}_{candidate}_{position}")
}

/// The id of an answer: its `responseId`, else one made from `whole` (the answer's text), so
/// the same answer always gets the same id.
fn answer_id(response_id: &str, whole: impl FnOnce() -> String) -> String {
    if response_id.is_empty() {
        made_up_id(&whole(), 0, 0).replace(SYNTHETIC_ID_PREFIX, "gemini-")
    } else {
        response_id.to_string()
    }
}

/// The tool call for a part, when it is a `functionCall`.
pub fn tool_call(
    part: &ResponsePart,
    response_id: &str,
    candidate: u64,
    position: usize,
) -> Option<OutToolCall> {
    let call = part.function_call.as_ref()?;
    let id = call
        .id
        .as_deref()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| synthetic_id(response_id, candidate, position, call));
    Some(OutToolCall {
        id,
        name: call.name.clone(),
        arguments: call
            .args
            .as_ref()
            .map_or_else(|| "{}".to_string(), Value::to_string),
        extra_content: part
            .thought_signature
            .as_ref()
            .map(|s| json!({"google": {"thought_signature": s}})),
    })
}

/// The text of a part that is answer text (thought summaries are not).
pub fn answer_text(part: &ResponsePart) -> Option<&str> {
    if part.thought == Some(true) {
        return None;
    }
    part.text.as_deref()
}

/// `usageMetadata` in the canonical buckets: tool-use prompt tokens count as prompt, thinking
/// as completion (billed at the output rate). Also the reasoning tokens.
pub fn canonical_usage(metadata: &UsageMetadata) -> Option<(Usage, Option<u64>)> {
    let thoughts = metadata.thoughts_token_count;
    Some((
        Usage {
            prompt_tokens: metadata.prompt_token_count?
                + metadata.tool_use_prompt_token_count.unwrap_or(0),
            completion_tokens: metadata.candidates_token_count.unwrap_or(0) + thoughts.unwrap_or(0),
            cached_tokens: metadata.cached_content_token_count.unwrap_or(0),
            cache_write_tokens: 0,
        },
        thoughts,
    ))
}

/// A 2xx body of `generateContent` as the canonical completion.
pub fn parse_body(status: u16, body: &[u8], model: &str) -> Result<Completion, ProviderError> {
    let response = http::typed_body(PROVIDER, status, body)?;
    completion_of(status, response, model, || {
        String::from_utf8_lossy(body).into_owned()
    })
}

/// A `GenerateContentResponse` already read as JSON (a batch's inline answer) as the
/// canonical completion.
pub fn parse_response(
    status: u16,
    response: &Value,
    model: &str,
) -> Result<Completion, ProviderError> {
    let typed = http::typed_value(PROVIDER, status, response)?;
    completion_of(status, typed, model, || response.to_string())
}

/// A typed answer as the canonical completion; `whole` gives its text, the seed of its id
/// when Gemini sent none.
fn completion_of(
    status: u16,
    response: GenerateContentResponse,
    model: &str,
    whole: impl FnOnce() -> String,
) -> Result<Completion, ProviderError> {
    let invalid = |message: String| http::invalid(PROVIDER, status, message);
    if let Some(error) = &response.error {
        let error = error_from_status(Some(status), error);
        return Err(invalid(format!(
            "a success status carrying an error: {}",
            error.message
        )));
    }
    let (usage, reasoning_tokens) = response
        .usage_metadata
        .as_ref()
        .and_then(canonical_usage)
        .ok_or_else(|| invalid("the response has no valid \"usageMetadata\"".into()))?;
    let response_id = response.response_id.as_str();
    let mut choices = Vec::with_capacity(response.candidates.len().max(1));
    if response.candidates.is_empty() {
        // A blocked prompt: no candidates, the reason in promptFeedback.
        let block = response
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
            .ok_or_else(|| {
                invalid("the response has neither candidates nor a blockReason".into())
            })?;
        choices.push(ChoiceParts {
            index: 0,
            content: None,
            refusal: None,
            tool_calls: Vec::new(),
            finish_reason: FinishReason::ContentFilter,
            native_finish_reason: Some(block.to_string()),
        });
    }
    for (position, candidate) in response.candidates.iter().enumerate() {
        let index = candidate.index.unwrap_or(position as u64);
        let parts = candidate
            .content
            .as_ref()
            .map(|c| c.parts.as_slice())
            .unwrap_or_default();
        let text: String = parts.iter().filter_map(answer_text).collect();
        let tool_calls: Vec<OutToolCall> = parts
            .iter()
            .filter(|p| p.function_call.is_some())
            .enumerate()
            .filter_map(|(k, part)| tool_call(part, response_id, index, k))
            .collect();
        let native = candidate
            .finish_reason
            .as_deref()
            .unwrap_or("FINISH_REASON_UNSPECIFIED");
        let finish_reason = FinishReason::from_gemini(native, !tool_calls.is_empty())
            .ok_or_else(|| canonical::unfinished(PROVIDER, status, native))?;
        choices.push(ChoiceParts {
            index: index as u32,
            content: if text.is_empty() && !tool_calls.is_empty() {
                None
            } else {
                Some(text)
            },
            refusal: None,
            tool_calls,
            finish_reason,
            native_finish_reason: Some(native.to_string()),
        });
    }
    let parts = CompletionParts {
        id: answer_id(response_id, whole),
        created: canonical::unix_now(),
        model: model_of(response.model_version.as_deref(), model),
        choices,
        usage,
        reasoning_tokens,
    };
    Ok(parts.into_completion(status))
}

/// Google's RPC error (`{"error":{"code","message","status","details"}}`, or the same in a
/// one-element array as the non-SSE streaming endpoint sends) as a [`ProviderError`].
pub fn error_from_json(status: Option<u16>, json: &Value) -> Option<ProviderError> {
    let json = match json {
        Value::Array(items) => items.first()?,
        other => other,
    };
    Some(error_from_status(status, json.get("error")?))
}

/// The `error` object of Google's RPC error (`{code, message, status, details}`) as a
/// [`ProviderError`], classified by its `status`, with the hints its `details` carry.
pub fn error_from_status(status: Option<u16>, error: &Value) -> ProviderError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("no message");
    let status = status.or_else(|| error.get("code").and_then(Value::as_u64).map(|c| c as u16));
    let details = error
        .get("details")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let detail = |kind: &'static str| {
        details.iter().filter(move |d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(kind))
        })
    };
    let retry_delay = detail("google.rpc.RetryInfo")
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|delay| wait::parse_wait(delay, WaitUnit::ProtoDuration));
    let reason =
        detail("google.rpc.ErrorInfo").find_map(|d| d.get("reason").and_then(Value::as_str));
    // The field a 400 blames: the first violation of a `google.rpc.BadRequest`, as OpenAI
    // names one `param`.
    let param = detail("google.rpc.BadRequest")
        .find_map(|d| {
            d.pointer("/fieldViolations/0/field")
                .and_then(Value::as_str)
        })
        .filter(|f| !f.is_empty())
        .map(str::to_string);
    let daily = detail("google.rpc.QuotaFailure").any(|d| {
        d.get("violations")
            .and_then(Value::as_array)
            .is_some_and(|vs| {
                vs.iter().any(|v| {
                    v.get("quotaId")
                        .and_then(Value::as_str)
                        .is_some_and(|q| q.contains("PerDay"))
                })
            })
    });
    let kind = match error.get("status").and_then(Value::as_str) {
        _ if reason == Some("API_KEY_INVALID") => ErrorKind::Unauthorized,
        // "You exceeded your current quota" comes with per-minute limits too, with a
        // RetryInfo; what does not come back soon is a daily quota, or a quota message with no
        // hint of when to retry.
        Some("RESOURCE_EXHAUSTED")
            if daily
                || (retry_delay.is_none()
                    && message
                        .to_ascii_lowercase()
                        .contains("exceeded your current quota")) =>
        {
            ErrorKind::QuotaExhausted
        }
        Some("RESOURCE_EXHAUSTED") => ErrorKind::RateLimited,
        Some("UNAVAILABLE" | "INTERNAL" | "UNKNOWN" | "ABORTED") => ErrorKind::ServerError,
        Some("DEADLINE_EXCEEDED") => ErrorKind::Timeout,
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => ErrorKind::BadRequest,
        Some("PERMISSION_DENIED" | "UNAUTHENTICATED") => ErrorKind::Unauthorized,
        Some("NOT_FOUND") => ErrorKind::NotFound,
        _ => status.map_or(ErrorKind::ServerError, http::classify_status),
    };
    ProviderError {
        retry_after: retry_delay,
        param,
        ..ProviderError::new(PROVIDER, kind, status, message)
    }
}

/// A non-2xx answer, classified, with Google's message and when to come back.
pub(crate) fn error_from_answer(answer: &Answer, now: SystemTime) -> ProviderError {
    let error = http::error_of(PROVIDER, answer, |status, json: Value| {
        error_from_json(status, &json)
    });
    let retry_after = error
        .retry_after
        .or_else(|| wait::retry_after_headers(&answer.headers, now));
    ProviderError {
        retry_after,
        ..error
    }
}
