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

use super::canonical::{
    self, CanonicalRequest, ChoiceParts, CompletionParts, FinishReason, Image, Message,
    OutToolCall, ParamPolicy, Part, ReasoningEffort, ResponseFormat, ToolChoice,
};
use super::http::{self, Answer};
use super::sse;
use super::stream::{self, ChunkHead, ChunkStream, Translate};
use super::wait::{self, WaitUnit};
use super::{Call, Completion, ErrorKind, Provider, ProviderError, Usage};
use async_trait::async_trait;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

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

    fn post(&self, call: &Call<'_>, method: &str, body: &Value) -> reqwest::RequestBuilder {
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
fn model_of(answer: &Value, called: &str) -> String {
    let model = answer
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(called);
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

#[async_trait]
impl Provider for GeminiProvider {
    async fn chat(&self, call: Call<'_>) -> Result<Completion, ProviderError> {
        let body = request_body(&call)?;
        http::exchange(
            PROVIDER,
            call.api_key,
            call.timeout,
            self.post(&call, "generateContent", &body),
            |status, bytes| {
                parse_response(
                    status,
                    &http::json_body(PROVIDER, status, bytes)?,
                    call.model,
                )
            },
            |answer| error_from_answer(answer, SystemTime::now()),
            key_spent_for,
        )
        .await
    }

    async fn chat_stream(&self, call: Call<'_>) -> Result<ChunkStream, ProviderError> {
        let body = request_body(&call)?;
        stream::open(
            PROVIDER,
            &call,
            self.post(&call, "streamGenerateContent?alt=sse", &body),
            |answer| error_from_answer(answer, SystemTime::now()),
            key_spent_for,
            GeminiStream::new(call.model),
        )
        .await
    }
}

/// Gemini announces no rate-limit state on its answers: a key is known spent only by a 429.
fn key_spent_for(_: &reqwest::header::HeaderMap) -> Option<Duration> {
    None
}

/// Gemini's SSE stream (each event a whole `GenerateContentResponse`) → canonical chunks.
///
/// Gemini sends no end marker: the stream is complete when every candidate has had its
/// `finishReason` (or the prompt was blocked) by the time the connection closes. Function
/// calls arrive whole, so each becomes one tool-call delta with its id, name and arguments,
/// numbered per candidate in the order they come, the same ids a non-streamed answer gets.
#[derive(Debug)]
pub struct GeminiStream {
    head: Option<ChunkHead>,
    model: String,
    candidates: BTreeMap<u64, CandidateState>,
    usage: Option<(Usage, Option<u64>)>,
    blocked: bool,
}

#[derive(Debug, Default)]
struct CandidateState {
    tool_calls: usize,
    finished: bool,
}

impl GeminiStream {
    pub fn new(model: &str) -> Self {
        GeminiStream {
            head: None,
            model: model.to_string(),
            candidates: BTreeMap::new(),
            usage: None,
            blocked: false,
        }
    }
}

impl Translate for GeminiStream {
    fn event(&mut self, event: sse::Event) -> Result<Vec<Value>, ProviderError> {
        let data = stream::event_json(PROVIDER, &event.data)?;
        if let Some(error) = error_from_json(None, &data) {
            return Err(error);
        }
        let response_id = data
            .get("responseId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let head = self.head.get_or_insert_with(|| ChunkHead {
            id: if response_id.is_empty() {
                synthetic_id("", 0, 0, &data).replace(SYNTHETIC_ID_PREFIX, "gemini-")
            } else {
                response_id.to_string()
            },
            created: canonical::unix_now(),
            model: model_of(&data, &self.model),
        });
        if let Some(usage) = data.get("usageMetadata").and_then(parse_usage) {
            self.usage = Some(usage);
        }
        let mut chunks = Vec::new();
        let candidates = data
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if candidates.is_empty() {
            if let Some(block) = data
                .pointer("/promptFeedback/blockReason")
                .and_then(Value::as_str)
            {
                self.blocked = true;
                chunks.push(head.role(0));
                chunks.push(head.finish(0, FinishReason::ContentFilter, block));
            }
        }
        for (position, candidate) in candidates.iter().enumerate() {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let state = match self.candidates.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    chunks.push(head.role(index as u32));
                    e.insert(CandidateState::default())
                }
            };
            let parts = candidate
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for part in parts {
                if let Some(call) = tool_call(part, response_id, index, state.tool_calls) {
                    let mut delta = json!({"index": state.tool_calls, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments}});
                    if let Some(extra) = call.extra_content {
                        delta["extra_content"] = extra;
                    }
                    chunks.push(head.tool_call(index as u32, delta));
                    state.tool_calls += 1;
                } else if let Some(text) = answer_text(part) {
                    chunks.push(head.content(index as u32, text));
                }
            }
            if let Some(native) = candidate.get("finishReason").and_then(Value::as_str) {
                let reason = FinishReason::from_gemini(native, state.tool_calls > 0)
                    .ok_or_else(|| canonical::unfinished(PROVIDER, 200, native))?;
                state.finished = true;
                chunks.push(head.finish(index as u32, reason, native));
            }
        }
        Ok(chunks)
    }

    fn finished(&self) -> bool {
        // Only the connection closing ends a Gemini stream.
        false
    }

    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        let complete = self.blocked
            || (!self.candidates.is_empty() && self.candidates.values().all(|c| c.finished));
        if !complete {
            return Err(stream::incomplete(
                PROVIDER,
                "every candidate's finishReason",
            ));
        }
        let (usage, reasoning) = self
            .usage
            .ok_or_else(|| http::invalid(PROVIDER, 200, "the stream carried no usageMetadata"))?;
        let head = self.head.clone().unwrap_or_default();
        Ok(vec![head.usage(&usage, reasoning)])
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
fn thinking_config(model: &str, effort: ReasoningEffort) -> Result<Value, &'static str> {
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
        return Ok(json!({"thinkingBudget": budget}));
    }
    match effort {
        ReasoningEffort::Minimal
        | ReasoningEffort::Low
        | ReasoningEffort::Medium
        | ReasoningEffort::High => Ok(json!({"thinkingLevel": effort.as_str()})),
        ReasoningEffort::None => Err(
            "none; Gemini models after 2.5 cannot turn thinking off, the lowest level is minimal",
        ),
        ReasoningEffort::XHigh => Err("xhigh; Gemini's highest thinking level is high"),
    }
}

/// The `GenerateContentRequest` for a canonical request (the same for streaming).
pub fn request_body(call: &Call<'_>) -> Result<Value, ProviderError> {
    let request = CanonicalRequest::read(call.request).map_err(|p| p.into_error(PROVIDER))?;
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

    let mut body = Map::new();
    body.insert("contents".into(), contents(&request)?.into());
    if let Some(system) = &request.system {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    let mut config = Map::new();
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            config.insert(name.into(), value);
        }
    };
    set("maxOutputTokens", request.max_tokens.map(Value::from));
    set("temperature", request.temperature.map(Value::from));
    set("topP", request.top_p.map(Value::from));
    set("topK", request.top_k.map(Value::from));
    set(
        "stopSequences",
        (!request.stop.is_empty()).then(|| request.stop.clone().into()),
    );
    set("candidateCount", request.n.map(Value::from));
    set("seed", request.seed.map(Value::from));
    set(
        "frequencyPenalty",
        request.frequency_penalty.map(Value::from),
    );
    set("presencePenalty", request.presence_penalty.map(Value::from));
    if let Some(effort) = request.reasoning_effort {
        match thinking_config(call.model, effort) {
            Ok(thinking) => set("thinkingConfig", Some(thinking)),
            Err(why) => policy.unsupported_because("reasoning_effort", Some(why))?,
        }
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            set("responseMimeType", Some("application/json".into()))
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            set("responseMimeType", Some("application/json".into()));
            set("responseJsonSchema", Some(schema.clone()));
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), config.into());
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
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut d = json!({"name": tool.name});
                if let Some(description) = &tool.description {
                    d["description"] = description.as_str().into();
                }
                if let Some(parameters) = &tool.parameters {
                    d["parametersJsonSchema"] = parameters.clone();
                }
                d
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }
    Ok(Value::Object(body))
}

/// The conversation as `contents`; consecutive turns of one role are merged, so the answers
/// to parallel calls travel together as Gemini expects.
fn contents(request: &CanonicalRequest) -> Result<Vec<Value>, ProviderError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, parts) = match message {
            Message::User(parts) => ("user", parts.iter().map(user_part).collect()),
            Message::Assistant { text, tool_calls } => {
                let mut parts = Vec::new();
                if let Some(text) = text {
                    parts.push(json!({"text": text}));
                }
                for call in tool_calls {
                    let mut function_call = json!({"name": call.name, "args": call.arguments});
                    if !call.id.starts_with(SYNTHETIC_ID_PREFIX) {
                        function_call["id"] = call.id.as_str().into();
                    }
                    let mut part = json!({ "functionCall": function_call });
                    if let Some(signature) = call
                        .extra_content
                        .as_ref()
                        .and_then(|e| e.pointer("/google/thought_signature"))
                    {
                        part["thoughtSignature"] = signature.clone();
                    }
                    parts.push(part);
                }
                ("model", parts)
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
                    .unwrap_or_else(|_| Value::String(content.clone()));
                let mut response = json!({"name": name, "response": {"output": output}});
                if !tool_call_id.starts_with(SYNTHETIC_ID_PREFIX) {
                    response["id"] = tool_call_id.as_str().into();
                }
                ("user", vec![json!({ "functionResponse": response })])
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect())
}

fn user_part(part: &Part) -> Value {
    match part {
        Part::Text(text) => json!({"text": text}),
        Part::Image(Image::Base64 { media_type, data }) => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Part::Image(Image::Url(url)) => {
            let mut file = json!({ "fileUri": url });
            if let Some(mime) = image_mime_type(url) {
                file["mimeType"] = mime.into();
            }
            json!({ "fileData": file })
        }
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
pub fn synthetic_id(response_id: &str, candidate: u64, position: usize, call: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let seed = if response_id.is_empty() {
        call.to_string()
    } else {
        response_id.to_string()
    };
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{SYNTHETIC_ID_PREFIX}{hash:016x}_{candidate}_{position}")
}

/// The tool call for a `functionCall` part.
pub fn tool_call(
    part: &Value,
    response_id: &str,
    candidate: u64,
    position: usize,
) -> Option<OutToolCall> {
    let call = part.get("functionCall")?;
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| synthetic_id(response_id, candidate, position, call));
    Some(OutToolCall {
        id,
        name: call
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        arguments: call
            .get("args")
            .cloned()
            .unwrap_or_else(|| json!({}))
            .to_string(),
        extra_content: part
            .get("thoughtSignature")
            .map(|s| json!({"google": {"thought_signature": s}})),
    })
}

/// The text of a part that is answer text (thought summaries are not).
pub fn answer_text(part: &Value) -> Option<&str> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    part.get("text").and_then(Value::as_str)
}

/// `usageMetadata` in the canonical buckets: tool-use prompt tokens count as prompt, thinking
/// as completion (billed at the output rate). Also the reasoning tokens.
pub fn parse_usage(metadata: &Value) -> Option<(Usage, Option<u64>)> {
    let count = |name: &str| metadata.get(name).and_then(Value::as_u64);
    let thoughts = count("thoughtsTokenCount");
    Some((
        Usage {
            prompt_tokens: count("promptTokenCount")?
                + count("toolUsePromptTokenCount").unwrap_or(0),
            completion_tokens: count("candidatesTokenCount").unwrap_or(0) + thoughts.unwrap_or(0),
            cached_tokens: count("cachedContentTokenCount").unwrap_or(0),
            cache_write_tokens: 0,
        },
        thoughts,
    ))
}

/// A `GenerateContentResponse` as the canonical completion.
pub fn parse_response(
    status: u16,
    response: &Value,
    model: &str,
) -> Result<Completion, ProviderError> {
    let invalid = |message: String| http::invalid(PROVIDER, status, message);
    if let Some(error) = error_from_json(Some(status), response) {
        return Err(invalid(format!(
            "a success status carrying an error: {}",
            error.message
        )));
    }
    let (usage, reasoning_tokens) = response
        .get("usageMetadata")
        .and_then(parse_usage)
        .ok_or_else(|| invalid("the response has no valid \"usageMetadata\"".into()))?;
    let response_id = response
        .get("responseId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let candidates = response
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut choices = Vec::with_capacity(candidates.len().max(1));
    if candidates.is_empty() {
        // A blocked prompt: no candidates, the reason in promptFeedback.
        let block = response
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
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
    for (position, candidate) in candidates.iter().enumerate() {
        let index = candidate
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        let parts = candidate
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let text: String = parts.iter().filter_map(answer_text).collect();
        let tool_calls: Vec<OutToolCall> = parts
            .iter()
            .filter(|p| p.get("functionCall").is_some())
            .enumerate()
            .filter_map(|(k, part)| tool_call(part, response_id, index, k))
            .collect();
        let native = candidate
            .get("finishReason")
            .and_then(Value::as_str)
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
        id: if response_id.is_empty() {
            synthetic_id("", 0, 0, response).replace(SYNTHETIC_ID_PREFIX, "gemini-")
        } else {
            response_id.to_string()
        },
        created: canonical::unix_now(),
        model: model_of(response, model),
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
    let error = json.get("error")?;
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
    Some(ProviderError {
        retry_after: retry_delay,
        param,
        ..ProviderError::new(PROVIDER, kind, status, message)
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ChatRequest;
    use crate::providers::CallOptions;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;

    fn body_for(request: Value, options: CallOptions) -> Result<Value, ProviderError> {
        let request: ChatRequest = serde_json::from_value(request).unwrap();
        request_body(&Call {
            model: "gemini-2.5-flash",
            api_key: "k",
            request: &request,
            timeout: Duration::from_secs(1),
            stream_idle_timeout: None,
            options,
        })
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
            .map(|e| {
                body(request(e))["generationConfig"]["thinkingConfig"]["thinkingBudget"].clone()
            })
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
                thinking_config("models/gemini-3-flash-preview", effort),
                Ok(json!({"thinkingLevel": level}))
            );
        }
        assert!(
            thinking_config("gemini-3-pro-preview", ReasoningEffort::None)
                .unwrap_err()
                .contains("cannot turn thinking off")
        );
        assert!(thinking_config("gemini-3-pro-preview", ReasoningEffort::XHigh).is_err());
        assert_eq!(
            thinking_config("gemini-2.5-flash", ReasoningEffort::None),
            Ok(json!({"thinkingBudget": 0}))
        );
        assert!(thinking_config("gemini-2.5-pro", ReasoningEffort::None)
            .unwrap_err()
            .contains("2.5 Pro cannot turn thinking off"));
        assert_eq!(
            thinking_config("gemini-2.5-pro", ReasoningEffort::Low),
            Ok(json!({"thinkingBudget": 1_024}))
        );
        assert!(thinking_config("gemini-2.0-flash", ReasoningEffort::Low)
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
        let retry =
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]);
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
        let bad_key = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]);
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
        let items = stream::replay_all_splits(|| GeminiStream::new("m"), body.as_bytes()).await;
        let chunks: Vec<Value> = items.iter().map(|i| i.clone().unwrap()).collect();
        assert_eq!(chunks[0]["id"], "resp-abc");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let call = chunks
            .iter()
            .find_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
            .unwrap();
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(call["index"], 0);

        let done = stream::fold(items).await.unwrap();
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
        let items = stream::replay(GeminiStream::new("m"), &[body.as_bytes()]).await;
        let e = items.last().unwrap().clone().unwrap_err();
        assert!(
            e.kind.is_retryable() && e.message.contains("finishReason"),
            "{}",
            e.message
        );

        let mut events = streamed()[..1].to_vec();
        events.push(json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}));
        let items = stream::replay(GeminiStream::new("m"), &[sse(&events).as_bytes()]).await;
        let e = items.last().unwrap().clone().unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::ServerError, "The model is overloaded.")
        );

        let blocked = sse(&[
            json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                   "usageMetadata": {"promptTokenCount": 4}}),
        ]);
        let done =
            stream::fold(stream::replay(GeminiStream::new("m"), &[blocked.as_bytes()]).await)
                .await
                .unwrap();
        assert_eq!(
            done.response["choices"][0]["finish_reason"],
            "content_filter"
        );
    }
}
