//! The simulator's Gemini (Developer API) endpoints:
//! `POST /v1beta/models/{model}:generateContent` and
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (also under `/v1`, the
//! `google-genai` SDK's default version).
//!
//! It follows Google's documented wire format, so the official SDK and Sluice's Gemini
//! adapter accept it unchanged: the key in `x-goog-api-key` or `?key=`, camelCase fields
//! (snake_case accepted too, as Google's JSON parser does) and unknown fields refused,
//! `contents` of `parts` (`text`, `inlineData`, `functionCall`, `functionResponse`), the
//! `GenerateContentResponse` with `candidates`, `finishReason`, `usageMetadata` (whose
//! `promptTokenCount` *includes* cached tokens), `modelVersion` and `responseId`; a stream
//! of `data:` chunks that ends when the connection closes; and Google RPC errors
//! (`{"error": {"code", "message", "status", "details"}}`, a `RetryInfo` on 429s). Gemini
//! sends no rate-limit headers. What the answer says is `answer`'s
//! business; this module only reads the request into a [`Conversation`] and writes the
//! [`Answer`] back in Gemini's shape.

use super::answer::{Answer, Conversation, Finish, Format, Tool, ToolChoice, ToolResult};
use super::batches;
use super::call::{self, Batched, Outcome, StreamPlan};
use super::faults::Fault;
use super::stream::{self, Event};
use super::{tokens, Family, SimState};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The top-level fields of a `GenerateContentRequest`.
const REQUEST_FIELDS: [&str; 9] = [
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
    "labels",
    "serviceTier",
];
/// The fields of a `GenerationConfig`.
const GENERATION_FIELDS: [&str; 22] = [
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "_responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
    "routingConfig",
];
const OVERLOADED: &str = "The model is overloaded. Please try again later.";

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/v1beta/models/{target}",
            post(models).fallback(unknown_route),
        )
        .route("/v1/models/{target}", post(models).fallback(unknown_route))
}

/// Any other path or method: Google's `NOT_FOUND`.
pub(crate) async fn unknown_route(
    State(_state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Method not found: {method} {}", uri.path()),
    )
    .respond()
}

/// `{model}:{method}`: the one path segment Google's custom methods use.
async fn models(
    State(state): State<Arc<SimState>>,
    Path(target): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (model, action) = target.rsplit_once(':').unwrap_or((target.as_str(), ""));
    let streaming = match action {
        "generateContent" => Streaming::No,
        "streamGenerateContent" if query.get("alt").map(String::as_str) == Some("sse") => {
            Streaming::Sse
        }
        "streamGenerateContent" => Streaming::JsonArray,
        // Batch mode shares the model path; the batches module serves it.
        "batchGenerateContent" => {
            return batches::gemini::create(&state, model, &query, &headers, &body)
        }
        _ => return unknown_route(State(state), method, uri).await,
    };
    state.count_request(
        Family::Gemini,
        &headers,
        query.get("key").map(String::as_str),
    );
    let call = Call { model, streaming };
    match complete(&state, &headers, &query, &body, &call).await {
        Ok(response) => response,
        Err(error) => {
            state.count_error();
            error.respond()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Streaming {
    /// `generateContent`: one response.
    No,
    /// `streamGenerateContent?alt=sse`: `data:` events.
    Sse,
    /// `streamGenerateContent` without `alt=sse`: one JSON array of the chunks.
    JsonArray,
}

/// What the path and query say about a call.
struct Call<'a> {
    model: &'a str,
    streaming: Streaming,
}

/// A batch item: the `request` of an inline batch request, answered as a realtime
/// `generateContent` of it on `model` would be (the `GenerateContentResponse`, or the
/// error), or failed by its `batch=` directive.
pub(super) fn batch_item(state: &SimState, model: &str, request: &Value) -> batches::Outcome {
    state.log_request(request.clone());
    let answered = || -> Result<batches::Outcome, ApiError> {
        let Some(request) = request.as_object() else {
            return Err(ApiError::invalid(
                "Invalid JSON payload received. Invalid value at 'request': expected an object.",
            ));
        };
        // An inline request may name its model (the SDK sets it); the batch's model rules.
        let mut request = request.clone();
        request.remove("model");
        let parsed = validate(&request)?;
        match call::batched(&texts(&request), &parsed.conversation).map_err(bad_directive)? {
            Batched::Answer(answer) => Ok(batches::Outcome::Answered {
                body: whole_response(model, &parsed, &answer),
                usage: batches::Usage {
                    prompt_tokens: answer.prompt_tokens,
                    completion_tokens: answer.completion_tokens * parsed.candidates,
                    cached_tokens: answer.cached_tokens,
                },
            }),
            Batched::Fail(fault) => Err(fault_error(state, fault, model)),
            Batched::Expire => Ok(batches::Outcome::Expires),
        }
    };
    answered().unwrap_or_else(|error| batches::Outcome::Failed {
        status: error.status.as_u16(),
        body: error.body(),
    })
}

fn bad_directive(error: super::faults::DirectiveError) -> ApiError {
    ApiError::invalid(error.to_string())
}

/// A Google RPC error response.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<Value>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A refused field, with the `BadRequest` detail Google attaches.
    fn unknown_field(name: &str, within: Option<&str>) -> Self {
        let at = within.map(|w| format!(" at '{w}'")).unwrap_or_default();
        let message = format!(
            "Invalid JSON payload received. Unknown name \"{name}\"{at}: Cannot find field."
        );
        ApiError {
            details: vec![json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": within.unwrap_or(""), "description": message}],
            })],
            ..ApiError::invalid(message)
        }
    }

    pub(super) fn body(&self) -> Value {
        let mut error = json!({
            "code": self.status.as_u16(),
            "message": self.message,
            "status": rpc_status(self.status.as_u16()),
        });
        if !self.details.is_empty() {
            error["details"] = Value::Array(self.details.clone());
        }
        json!({ "error": error })
    }

    pub(super) fn respond(&self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// The `google.rpc.Code` name Google pairs with an HTTP status.
pub(super) fn rpc_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        status if status >= 500 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

/// The API key, in `x-goog-api-key` or `?key=`, as Google requires one.
pub(super) fn check_key(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let header_key = headers
        .get("x-goog-api-key")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|key| !key.trim().is_empty());
    let query_key = query.get("key").is_some_and(|key| !key.is_empty());
    if !header_key && !query_key {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        ));
    }
    Ok(())
}

/// Validates the request, runs the call, and renders its outcome.
async fn complete(
    state: &Arc<SimState>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    raw: &[u8],
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    check_key(headers, query)?;
    let body: Value = serde_json::from_slice(raw)
        .map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))?;
    let Some(request) = body.as_object() else {
        return Err(ApiError::invalid(
            "Invalid JSON payload received. Expected an object.",
        ));
    };
    state.log_request(body.clone());
    let parsed = validate(request)?;
    let texts = texts(request);
    let outcome = call::run(
        state,
        headers,
        call::Request {
            body: request,
            texts,
            conversation: parsed.conversation.clone(),
            stream: call.streaming == Streaming::Sse,
        },
    )
    .await;
    match outcome {
        Outcome::Answer { answer, stream } => Ok(render(state, call, &parsed, &answer, stream)),
        Outcome::Fail(fault) => Err(fault_error(state, fault, call.model)),
        Outcome::BadDirective(error) => Err(bad_directive(error)),
        Outcome::Shutdown => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The simulator is shutting down.",
        )),
    }
}

/// A field by its camelCase name or its snake_case twin: Google's JSON parser takes both.
pub(super) fn field<'a>(object: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    object
        .get(camel)
        .or_else(|| object.get(&snake(camel)))
        .filter(|value| !value.is_null())
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Refuses fields the message does not have, as Google's parser does.
fn known_fields(
    object: &Map<String, Value>,
    fields: &[&str],
    within: Option<&str>,
) -> Result<(), ApiError> {
    for name in object.keys() {
        if !fields.iter().any(|f| f == name || snake(f) == *name) {
            return Err(ApiError::unknown_field(name, within));
        }
    }
    Ok(())
}

/// The texts of every content part and of the system instruction, to look for directives.
fn texts(request: &Map<String, Value>) -> Vec<&str> {
    let system = field(request, "systemInstruction").into_iter();
    let contents = field(request, "contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    system
        .chain(contents)
        .filter_map(|content| content.get("parts").and_then(Value::as_array))
        .flatten()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect()
}

/// The fields of a request the simulator acts on, checked.
struct Parsed {
    candidates: u64,
    conversation: Conversation,
}

/// Checks what Gemini checks before generating, in Google's wording.
fn validate(request: &Map<String, Value>) -> Result<Parsed, ApiError> {
    known_fields(request, &REQUEST_FIELDS, None)?;
    let contents = match field(request, "contents") {
        Some(Value::Array(contents)) if !contents.is_empty() => contents.as_slice(),
        None | Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "* GenerateContentRequest.contents: contents is not specified\n",
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid JSON payload received. Invalid value at 'contents': expected a list.",
            ))
        }
    };
    for (i, content) in contents.iter().enumerate() {
        match content.get("role").and_then(Value::as_str) {
            None | Some("user" | "model" | "function") => {}
            Some(_) => return Err(ApiError::invalid("Please use a valid role: user, model.")),
        }
        let parts = content.get("parts").and_then(Value::as_array);
        if parts.is_none_or(|parts| parts.is_empty()) {
            return Err(ApiError::invalid(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )));
        }
    }
    let empty = Map::new();
    let config = match field(request, "generationConfig") {
        None => &empty,
        Some(Value::Object(config)) => config,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid JSON payload received. Invalid value at 'generation_config'.",
            ))
        }
    };
    known_fields(config, &GENERATION_FIELDS, Some("generation_config"))?;
    let max_tokens = match field(config, "maxOutputTokens") {
        None => None,
        Some(value) => match value.as_i64() {
            Some(max) if max >= 1 => Some(max as u64),
            _ => {
                return Err(ApiError::invalid(format!(
                    "* GenerateContentRequest.generation_config.max_output_tokens: \
                     max_output_tokens must be positive (got {value})\n"
                )))
            }
        },
    };
    let candidates = field(config, "candidateCount")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 8);
    let json_mime =
        field(config, "responseMimeType").and_then(Value::as_str) == Some("application/json");
    let schema = field(config, "responseJsonSchema")
        .or_else(|| field(config, "_responseJsonSchema"))
        .or_else(|| field(config, "responseSchema"));
    let format = match (json_mime, schema) {
        (true, Some(schema)) => Format::JsonSchema(schema.clone()),
        (true, None) => Format::JsonObject,
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "* GenerateContentRequest.generation_config.response_schema: \
                 response_schema is only supported when response_mime_type is \
                 application/json\n",
            ))
        }
        (false, None) => Format::Text,
    };
    let tools = tools_of(field(request, "tools"))?;
    let mut counted = contents.to_vec();
    if let Some(system) = field(request, "systemInstruction") {
        counted.push(system.clone());
    }
    let conversation = Conversation {
        question: question(contents),
        tool_results: tool_results(contents),
        tool_choice: tool_choice(request, &tools)?,
        tools,
        format,
        max_tokens,
        stop: field(config, "stopSequences")
            .and_then(Value::as_array)
            .map(|stops| {
                stops
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        prompt_tokens: tokens::count_prompt(&counted, field(request, "tools")),
    };
    Ok(Parsed {
        candidates,
        conversation,
    })
}

/// The text parts of the last user turn.
fn question(contents: &[Value]) -> String {
    contents
        .iter()
        .rev()
        .find(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")
        .and_then(|c| c.get("parts").and_then(Value::as_array))
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The `functionResponse` parts of the last turn: the tool's name and its `response`
/// (its `output` when that is text, as the SDK wraps strings).
fn tool_results(contents: &[Value]) -> Vec<ToolResult> {
    let Some(parts) = contents
        .last()
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    parts
        .iter()
        .filter_map(|part| {
            let object = part.as_object()?;
            field(object, "functionResponse")
        })
        .map(|response| {
            let output = response.get("response");
            ToolResult {
                name: response
                    .get("name")
                    .and_then(Value::as_str)
                    .map(String::from),
                content: match output.and_then(|r| r.get("output")) {
                    Some(Value::String(text)) => text.clone(),
                    _ => output.map(Value::to_string).unwrap_or_default(),
                },
            }
        })
        .collect()
}

/// `tools[].functionDeclarations[]` with `parameters` (OpenAPI subset) or
/// `parametersJsonSchema`.
fn tools_of(tools: Option<&Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(tools) = tools else {
        return Ok(Vec::new());
    };
    let Some(tools) = tools.as_array() else {
        return Err(ApiError::invalid(
            "Invalid JSON payload received. Invalid value at 'tools': expected a list.",
        ));
    };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let declarations = tool
            .as_object()
            .and_then(|tool| field(tool, "functionDeclarations"))
            .and_then(Value::as_array);
        for (j, declaration) in declarations.into_iter().flatten().enumerate() {
            let Some(object) = declaration.as_object() else {
                continue;
            };
            let Some(name) = object.get("name").and_then(Value::as_str) else {
                return Err(ApiError::invalid(format!(
                    "* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: \
                     [FIELD_INVALID] Invalid function name. Must start with a letter or an \
                     underscore.\n"
                )));
            };
            let schema = field(object, "parametersJsonSchema")
                .or_else(|| field(object, "parameters"))
                .cloned()
                .unwrap_or(Value::Null);
            out.push(Tool {
                name: name.to_string(),
                schema,
            });
        }
    }
    Ok(out)
}

/// `toolConfig.functionCallingConfig`: `mode` AUTO, ANY (limited to
/// `allowedFunctionNames`), NONE or VALIDATED.
fn tool_choice(request: &Map<String, Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let Some(config) = field(request, "toolConfig")
        .and_then(Value::as_object)
        .and_then(|config| field(config, "functionCallingConfig"))
        .and_then(Value::as_object)
    else {
        return Ok(ToolChoice::Auto);
    };
    let allowed: Vec<&str> = field(config, "allowedFunctionNames")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(unknown) = allowed
        .iter()
        .find(|name| !tools.iter().any(|tool| tool.name == **name))
    {
        return Err(ApiError::invalid(format!(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: \
             function '{unknown}' is not declared in tools.\n"
        )));
    }
    match config.get("mode").and_then(Value::as_str) {
        None | Some("AUTO" | "VALIDATED" | "MODE_UNSPECIFIED") => Ok(ToolChoice::Auto),
        Some("NONE") => Ok(ToolChoice::None),
        Some("ANY") => Ok(ToolChoice::Forced(allowed.first().map(|n| n.to_string()))),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/\
             google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{other}\""
        ))),
    }
}

/// The error Gemini would send for this fault.
fn fault_error(state: &SimState, fault: Fault, model: &str) -> ApiError {
    // Gemini has one 429 for both; spent quota says which quota (per day) and gives no
    // RetryInfo, because waiting seconds does not help.
    if fault == Fault::Quota {
        return ApiError {
            details: vec![
                quota_failure("GenerateRequestsPerDayPerProjectPerModel", model),
                help(),
            ],
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "You exceeded your current quota, please check your plan and billing \
                 details. For more information on this error, head to: \
                 https://ai.google.dev/gemini-api/docs/rate-limits.",
            )
        };
    }
    let status = fault.status(503);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        429 => {
            let retry_after = state.config.retry_after;
            ApiError {
                details: vec![
                    quota_failure("GenerateRequestsPerMinutePerProjectPerModel", model),
                    help(),
                    json!({
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": proto_duration(retry_after),
                    }),
                ],
                ..ApiError::new(
                    code,
                    format!(
                        "You exceeded your current quota (simulated rate limit for {model}). \
                         Please retry in {}.",
                        humantime::format_duration(retry_after)
                    ),
                )
            }
        }
        400 => ApiError::new(
            code,
            "Simulated invalid request: this request carries a [sim fail=400] or [sim batch=invalid] directive.",
        ),
        401 | 403 => ApiError {
            details: vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            })],
            ..ApiError::new(code, "API key not valid. Please pass a valid API key.")
        },
        404 => ApiError::new(
            code,
            format!(
                "models/{model} is not found for API version v1beta, or is not supported for \
                 generateContent."
            ),
        ),
        500 => ApiError::new(
            code,
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
        ),
        503 | 529 => ApiError::new(code, OVERLOADED),
        504 => ApiError::new(code, "Deadline expired before operation could complete."),
        status if status >= 500 => ApiError::new(code, format!("Simulated server error {status}.")),
        status => ApiError::new(code, format!("Simulated client error {status}.")),
    }
}

fn quota_failure(quota_id: &str, model: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model},
        }],
    })
}

fn help() -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }],
    })
}

/// A `google.protobuf.Duration` in JSON: seconds with a fraction when needed (`1s`,
/// `0.050s`).
fn proto_duration(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        millis => format!("{}.{millis:03}s", duration.as_secs()),
    }
}

/// The answer as a `GenerateContentResponse`, or as its chunks.
fn render(
    state: &Arc<SimState>,
    call: &Call<'_>,
    parsed: &Parsed,
    answer: &Answer,
    plan: StreamPlan,
) -> Response {
    let completion_tokens = answer.completion_tokens * parsed.candidates;
    if plan.fault.is_none() {
        state.count_completion(
            answer.prompt_tokens,
            completion_tokens,
            call.streaming != Streaming::No,
        );
    } else {
        state.count_error();
    }
    let head = Head {
        model: call.model,
        parsed,
        answer,
        response_id: response_id(),
    };
    let chunk = |parts, last, candidate_tokens| head.chunk(parts, last, candidate_tokens);
    match call.streaming {
        Streaming::No => stream::json(
            state.clone(),
            StatusCode::OK,
            &whole_response(call.model, parsed, answer),
            plan,
        ),
        Streaming::Sse => {
            let events = chunks(answer, chunk)
                .iter()
                .map(|data| Event::new(None, data, true))
                .collect();
            let error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, OVERLOADED).body();
            stream::sse(state.clone(), events, plan, Event::new(None, &error, false))
        }
        Streaming::JsonArray => {
            let array = Value::Array(chunks(answer, chunk));
            stream::json(state.clone(), StatusCode::OK, &array, plan)
        }
    }
}

fn response_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..22].to_string()
}

/// What every chunk of one answer shares.
struct Head<'a> {
    model: &'a str,
    parsed: &'a Parsed,
    answer: &'a Answer,
    response_id: String,
}

impl Head<'_> {
    /// A `GenerateContentResponse` carrying `parts` in each candidate; the `last` one has the
    /// finish reason. `candidate_tokens` is the usage so far of one candidate.
    fn chunk(&self, parts: Vec<Value>, last: bool, candidate_tokens: u64) -> Value {
        let candidates: Vec<Value> = (0..self.parsed.candidates)
            .map(|index| {
                let mut candidate = json!({
                    "content": {"parts": parts, "role": "model"},
                    "index": index,
                });
                if last {
                    candidate["finishReason"] = json!(finish_reason(&self.answer.finish));
                }
                candidate
            })
            .collect();
        json!({
            "candidates": candidates,
            "usageMetadata": usage(self.answer, candidate_tokens * self.parsed.candidates),
            "modelVersion": self.model,
            "responseId": self.response_id,
        })
    }
}

/// The whole `GenerateContentResponse` of a non-streamed answer.
fn whole_response(model: &str, parsed: &Parsed, answer: &Answer) -> Value {
    let head = Head {
        model,
        parsed,
        answer,
        response_id: response_id(),
    };
    head.chunk(parts(answer), true, answer.completion_tokens)
}

/// The chunks of a streamed answer: the text in word groups (the last with the finish
/// reason), or the whole function calls in one chunk, as Gemini sends them. Each carries
/// the usage so far; the last one the whole usage.
fn chunks(answer: &Answer, chunk: impl Fn(Vec<Value>, bool, u64) -> Value) -> Vec<Value> {
    if !answer.tool_calls.is_empty() {
        return vec![chunk(parts(answer), true, answer.completion_tokens)];
    }
    let pieces = answer.text_pieces();
    if pieces.is_empty() {
        return vec![chunk(vec![json!({"text": ""})], true, 0)];
    }
    let mut so_far = 0;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            // Pieces split at whitespace and tokens never span it, so counts add up.
            so_far += tokens::count(piece);
            chunk(vec![json!({"text": piece})], i + 1 == pieces.len(), so_far)
        })
        .collect()
}

fn parts(answer: &Answer) -> Vec<Value> {
    if answer.tool_calls.is_empty() {
        return vec![json!({"text": answer.text})];
    }
    answer
        .tool_calls
        .iter()
        .map(|call| json!({"functionCall": {"name": call.name, "args": call.arguments}}))
        .collect()
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        // Gemini has no tool-call reason: a call ends with STOP and functionCall parts.
        Finish::Stop | Finish::StopSequence(_) | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
    }
}

/// `usageMetadata`: `promptTokenCount` includes the cached tokens, which are also reported
/// on their own.
fn usage(answer: &Answer, candidates_tokens: u64) -> Value {
    let mut usage = json!({
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": answer.prompt_tokens + candidates_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}],
    });
    if answer.cached_tokens > 0 {
        usage["cachedContentTokenCount"] = json!(answer.cached_tokens);
        usage["cacheTokensDetails"] =
            json!([{"modality": "TEXT", "tokenCount": answer.cached_tokens}]);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Value) -> Result<Parsed, String> {
        let map: Map<String, Value> = serde_json::from_value(body).unwrap();
        validate(&map).map_err(|e| e.message)
    }

    #[test]
    fn validation_speaks_googles_words() {
        let err = check(json!({"contents": []})).err().unwrap();
        assert!(err.contains("contents is not specified"), "{err}");
        let err = check(json!({"contents": [{"role": "user", "parts": []}]}))
            .err()
            .unwrap();
        assert!(err.contains("contents[0].parts"), "{err}");
        let err = check(json!({"contents": [{"parts": [{"text": "x"}]}], "frobnicate": 1}))
            .err()
            .unwrap();
        assert!(err.contains("Unknown name \"frobnicate\""), "{err}");
        let err = check(json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"max_tokens": 5}}))
            .err()
            .unwrap();
        assert!(err.contains("at 'generation_config'"), "{err}");
        // snake_case twins are the same fields.
        let ok = check(json!({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"max_output_tokens": 5}}))
            .unwrap();
        assert_eq!(ok.conversation.max_tokens, Some(5));
    }

    #[test]
    fn tools_and_any_mode_force_a_call() {
        let parsed = check(json!({
            "contents": [{"role": "user", "parts": [{"text": "weather?"}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
        }))
        .unwrap();
        assert_eq!(
            parsed.conversation.tool_choice,
            ToolChoice::Forced(Some("get_weather".into()))
        );
    }

    #[test]
    fn retry_delays_are_proto_durations() {
        assert_eq!(proto_duration(Duration::from_secs(2)), "2s");
        assert_eq!(proto_duration(Duration::from_millis(50)), "0.050s");
    }
}
