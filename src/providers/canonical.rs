//! The canonical request and response, typed: what the non-OpenAI adapters translate from and
//! back into.
//!
//! Sluice's canonical format is OpenAI's chat-completions body ([`ChatRequest`]). The OpenAI
//! adapter forwards it almost untouched, but Anthropic and Gemini need it taken apart first:
//! system prompts hoisted, content parts told apart, tool-call arguments parsed from their JSON
//! strings, tool results tied back to the calls they answer. [`CanonicalRequest::read`] does
//! that once, with errors naming the field, so both adapters start from the same reading.
//!
//! Every parameter the reading does not type stays in [`CanonicalRequest::rest`]; an adapter
//! that cannot honour a parameter — typed or not — refuses it through [`ParamPolicy`] rather
//! than dropping it silently, unless the deployment opted into `drop_unsupported_params`.
//!
//! The response side is [`CompletionParts::to_value`], the one builder of the canonical
//! `chat.completion` object, and [`FinishReason`] with the mapping of section 6.3 of the
//! provider reference.

use super::{ErrorKind, ProviderError, Usage};
use crate::job::ChatRequest;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// A request read into the parts every adapter maps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CanonicalRequest {
    /// Every `system` and `developer` message, in order, joined by a blank line.
    pub system: Option<String>,
    /// The conversation without its system messages.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `parallel_tool_calls`; `None` when absent (the provider's default, parallel allowed).
    pub parallel_tool_calls: Option<bool>,
    /// `max_completion_tokens`, else the deprecated `max_tokens`.
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Not an OpenAI parameter, but Anthropic and Gemini both have it and clients send it.
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub response_format: Option<ResponseFormat>,
    /// `n` when above 1.
    pub n: Option<u32>,
    pub seed: Option<i64>,
    /// Non-zero penalties only.
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    /// `reasoning_effort`: how hard a reasoning model thinks before it answers.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// OpenAI's end-user id.
    pub user: Option<String>,
    /// Every other parameter with a value that asks for something (nulls and documented
    /// no-op values such as `logprobs: false` are left out). The adapter refuses or maps them.
    pub rest: Vec<(String, Value)>,
    /// Tool-call id → function name, from the assistant turns: Gemini's `functionResponse`
    /// needs the name, which OpenAI's `tool` message does not carry.
    pub tool_names: HashMap<String, String>,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    User(Vec<Part>),
    Assistant {
        /// Text, when the turn has any.
        text: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's answer to the call `tool_call_id`.
    Tool {
        tool_call_id: String,
        content: String,
    },
}

/// A piece of user content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// An `http(s)` URL the provider fetches.
    Url(String),
    /// A `data:` URL, split.
    Base64 { media_type: String, data: String },
}

/// A tool call made by the model, with its arguments parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
    /// Provider data a client must hand back unchanged (Gemini's thought signature, carried
    /// as `extra_content` the way Google's own OpenAI-compatible endpoint does).
    pub extra_content: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema of the arguments; `None` means no arguments.
    pub parameters: Option<Value>,
    /// `strict: true`: the arguments must follow the schema exactly (OpenAI's Structured
    /// Outputs for function calls), which an adapter passes on or refuses, never drops.
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    /// Must call some tool (`"required"`).
    Required,
    /// Must call this one.
    Function(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: Value },
}

/// OpenAI's `reasoning_effort` levels, lowest first. Which of them a model accepts is the
/// model's to say; the adapters map each to their provider's nearest documented control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningEffort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    XHigh,
}

impl ReasoningEffort {
    const ALL: [ReasoningEffort; 6] = [
        ReasoningEffort::None,
        ReasoningEffort::Minimal,
        ReasoningEffort::Low,
        ReasoningEffort::Medium,
        ReasoningEffort::High,
        ReasoningEffort::XHigh,
    ];

    /// The level as OpenAI writes it (`"xhigh"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::None => "none",
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
            ReasoningEffort::XHigh => "xhigh",
        }
    }

    fn read(value: &Value) -> Result<ReasoningEffort, FieldProblem> {
        let text = value.as_str();
        Self::ALL
            .into_iter()
            .find(|level| Some(level.as_str()) == text)
            .ok_or_else(|| {
                FieldProblem::new(
                    "reasoning_effort",
                    "must be one of \"none\", \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\"",
                )
            })
    }
}

/// Parameters whose documented default is a no-op: a client that sends the default asks for
/// nothing, so no adapter refuses it.
type IsNoOp = fn(&Value) -> bool;

const NO_OP_VALUES: &[(&str, IsNoOp)] = &[
    ("logprobs", |v| v == &Value::Bool(false)),
    ("logit_bias", |v| v.as_object().is_some_and(Map::is_empty)),
    ("service_tier", |v| {
        matches!(v.as_str(), Some("auto" | "default"))
    }),
];

/// Parameters that only label or account for a call and never change the answer, so an
/// adapter without an equivalent leaves them out without asking (documented in the README).
pub const ADVISORY: &[&str] = &[
    "store",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "stream_options",
];

impl CanonicalRequest {
    /// Reads a request. Errors name the field (`messages[2].tool_calls[0].function.arguments`).
    pub fn read(request: &ChatRequest) -> Result<CanonicalRequest, FieldProblem> {
        let mut out = CanonicalRequest::default();
        let mut system: Vec<String> = Vec::new();
        for (i, message) in request.messages.iter().enumerate() {
            let at = |field: &str| {
                if field.is_empty() {
                    format!("messages[{i}]")
                } else {
                    format!("messages[{i}].{field}")
                }
            };
            let role = message.get("role").and_then(Value::as_str).unwrap_or("");
            let content = message.get("content").unwrap_or(&Value::Null);
            match role {
                "system" | "developer" => {
                    let text = text_of(content).ok_or_else(|| {
                        FieldProblem::new(at("content"), "must be text or text parts")
                    })?;
                    system.push(text);
                }
                "user" => out
                    .messages
                    .push(Message::User(user_parts(content, &at("content"))?)),
                "assistant" => {
                    let text = match content {
                        Value::Null => None,
                        other => Some(text_of(other).ok_or_else(|| {
                            FieldProblem::new(at("content"), "must be text or text parts")
                        })?),
                    }
                    .filter(|t| !t.is_empty());
                    let mut tool_calls = Vec::new();
                    if let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) {
                        let calls = calls.as_array().ok_or_else(|| {
                            FieldProblem::new(at("tool_calls"), "must be an array")
                        })?;
                        for (j, call) in calls.iter().enumerate() {
                            let call = tool_call(call, &at(&format!("tool_calls[{j}]")))?;
                            out.tool_names.insert(call.id.clone(), call.name.clone());
                            tool_calls.push(call);
                        }
                    }
                    out.messages.push(Message::Assistant { text, tool_calls });
                }
                "tool" => {
                    let tool_call_id = message
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| FieldProblem::new(at("tool_call_id"), "is missing"))?
                        .to_string();
                    let content = text_of(content).ok_or_else(|| {
                        FieldProblem::new(at("content"), "must be text or text parts")
                    })?;
                    out.messages.push(Message::Tool {
                        tool_call_id,
                        content,
                    });
                }
                other => {
                    return Err(FieldProblem::new(
                        at("role"),
                        format!("role \"{other}\" cannot be translated for this provider"),
                    ))
                }
            }
        }
        if !system.is_empty() {
            out.system = Some(system.join("\n\n"));
        }
        out.read_params(&request.extra)?;
        Ok(out)
    }

    fn read_params(&mut self, extra: &Map<String, Value>) -> Result<(), FieldProblem> {
        for (name, value) in extra {
            // `stream` is decided by which call the adapter makes (`chat` or `chat_stream`).
            if value.is_null() || matches!(name.as_str(), "model" | "messages" | "stream") {
                continue;
            }
            // The types are checked at submission already; again here for a job that came
            // another way (a foreign producer's envelope), and so the reads below are total.
            if let Some(expected) = crate::job::param_type_problem(name, value) {
                return Err(FieldProblem::new(name, expected));
            }
            match name.as_str() {
                "max_completion_tokens" => self.max_tokens = value.as_u64(),
                "max_tokens" => {
                    // `max_completion_tokens` wins when both are given.
                    if extra
                        .get("max_completion_tokens")
                        .is_none_or(Value::is_null)
                    {
                        self.max_tokens = value.as_u64();
                    }
                }
                "temperature" => self.temperature = value.as_f64(),
                "top_p" => self.top_p = value.as_f64(),
                "top_k" => self.top_k = value.as_u64(),
                "seed" => self.seed = value.as_i64(),
                "n" => {
                    self.n = value
                        .as_u64()
                        .filter(|&n| n > 1)
                        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                }
                // A penalty of 0 is the default, the same as none.
                "frequency_penalty" => {
                    self.frequency_penalty = value.as_f64().filter(|&v| v != 0.0)
                }
                "presence_penalty" => self.presence_penalty = value.as_f64().filter(|&v| v != 0.0),
                "stop" => {
                    self.stop = match value {
                        Value::String(s) => vec![s.clone()],
                        items => items
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect(),
                    }
                }
                "tools" => self.tools = tools(value)?,
                "tool_choice" => self.tool_choice = Some(tool_choice(value)?),
                "parallel_tool_calls" => self.parallel_tool_calls = value.as_bool(),
                "response_format" => self.response_format = Some(response_format(value)?),
                "reasoning_effort" => self.reasoning_effort = Some(ReasoningEffort::read(value)?),
                "user" => self.user = value.as_str().map(str::to_string),
                _ => {
                    let no_op = NO_OP_VALUES
                        .iter()
                        .any(|(param, is_no_op)| param == name && is_no_op(value));
                    if !no_op {
                        self.rest.push((name.clone(), value.clone()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A request field that cannot be read, named by its path in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl FieldProblem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldProblem {
            field: field.into(),
            message: message.into(),
        }
    }

    /// As the adapter's error: the request's fault, not retried.
    pub fn into_error(self, provider: &'static str) -> ProviderError {
        bad_request(provider, format!("{}: {}", self.field, self.message))
    }
}

/// A `BadRequest` found before any call: the request cannot be sent to this provider.
pub fn bad_request(provider: &'static str, message: String) -> ProviderError {
    ProviderError::new(provider, ErrorKind::BadRequest, None, message)
}

/// How an adapter treats a parameter it cannot honour: refuse it (the default), or, when the
/// deployment says `drop_unsupported_params = true`, leave it out and log that it did.
#[derive(Debug, Clone, Copy)]
pub struct ParamPolicy {
    pub provider: &'static str,
    pub drop_unsupported: bool,
}

impl ParamPolicy {
    /// `Ok` when the parameter may be left out, the error naming it otherwise.
    pub fn unsupported(&self, param: &str) -> Result<(), ProviderError> {
        self.unsupported_because(param, None)
    }

    /// The same with the reason why (`"n" above 1`).
    pub fn unsupported_because(
        &self,
        param: &str,
        detail: Option<&str>,
    ) -> Result<(), ProviderError> {
        if self.drop_unsupported {
            tracing::debug!(
                provider = self.provider,
                param,
                "dropping a parameter the provider does not support"
            );
            return Ok(());
        }
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        Err(bad_request(
            self.provider,
            format!(
                "{} does not support \"{param}\"{detail}; set drop_unsupported_params = true on the deployment to leave such parameters out",
                self.provider
            ),
        ))
    }

    /// Refuses (or drops) every parameter of `rest` that is not advisory.
    pub fn check_rest(&self, rest: &[(String, Value)]) -> Result<(), ProviderError> {
        for (name, _) in rest {
            if !ADVISORY.contains(&name.as_str()) {
                self.unsupported(name)?;
            }
        }
        Ok(())
    }
}

/// Text content: a string, or an array of text parts joined (other parts refuse).
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p.get("text").and_then(Value::as_str),
                // A refusal part in an assistant turn is the model's words too.
                Some("refusal") => p.get("refusal").and_then(Value::as_str),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|texts| texts.concat()),
        _ => None,
    }
}

fn user_parts(content: &Value, at: &str) -> Result<Vec<Part>, FieldProblem> {
    match content {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(k, part)| {
                let at = format!("{at}[{k}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => part
                        .get("text")
                        .and_then(Value::as_str)
                        .map(|t| Part::Text(t.to_string()))
                        .ok_or_else(|| FieldProblem::new(format!("{at}.text"), "is missing")),
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                FieldProblem::new(format!("{at}.image_url.url"), "is missing")
                            })?;
                        image(url)
                            .map(Part::Image)
                            .map_err(|m| FieldProblem::new(format!("{at}.image_url.url"), m))
                    }
                    Some(other) => Err(FieldProblem::new(
                        format!("{at}.type"),
                        format!("content part \"{other}\" cannot be translated for this provider"),
                    )),
                    None => Err(FieldProblem::new(format!("{at}.type"), "is missing")),
                }
            })
            .collect(),
        _ => Err(FieldProblem::new(at, "must be a string or content parts")),
    }
}

/// An image URL: `http(s)://…` as is, `data:<media type>;base64,<data>` split.
fn image(url: &str) -> Result<Image, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest
            .split_once(',')
            .ok_or("a data: URL needs a ',' before its data")?;
        let media_type = header
            .strip_suffix(";base64")
            .ok_or("only base64 data: URLs are supported (data:image/png;base64,…)")?;
        if media_type.is_empty() {
            return Err("the data: URL names no media type".into());
        }
        return Ok(Image::Base64 {
            media_type: media_type.to_string(),
            data: data.to_string(),
        });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Image::Url(url.to_string()));
    }
    Err("must be an http(s) URL or a base64 data: URL".into())
}

fn tool_call(call: &Value, at: &str) -> Result<ToolCall, FieldProblem> {
    let field = |name: &str| {
        call.pointer(name).and_then(Value::as_str).ok_or_else(|| {
            FieldProblem::new(format!("{at}{}", name.replace('/', ".")), "is missing")
        })
    };
    if let Some(kind) = call.get("type").and_then(Value::as_str) {
        if kind != "function" {
            return Err(FieldProblem::new(
                format!("{at}.type"),
                format!("tool call type \"{kind}\" cannot be translated for this provider"),
            ));
        }
    }
    let id = field("/id")?.to_string();
    let name = field("/function/name")?.to_string();
    let raw = field("/function/arguments")?;
    let arguments = if raw.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(raw).map_err(|e| {
            FieldProblem::new(
                format!("{at}.function.arguments"),
                format!("is not valid JSON ({e})"),
            )
        })?
    };
    if !arguments.is_object() {
        return Err(FieldProblem::new(
            format!("{at}.function.arguments"),
            "must encode a JSON object",
        ));
    }
    Ok(ToolCall {
        id,
        name,
        arguments,
        extra_content: call.get("extra_content").cloned(),
    })
}

fn tools(value: &Value) -> Result<Vec<Tool>, FieldProblem> {
    let items = value
        .as_array()
        .ok_or_else(|| FieldProblem::new("tools", "must be an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let at = format!("tools[{i}]");
            match tool.get("type").and_then(Value::as_str) {
                Some("function") | None => {}
                Some(other) => {
                    return Err(FieldProblem::new(
                        format!("{at}.type"),
                        format!("tool type \"{other}\" cannot be translated for this provider"),
                    ))
                }
            }
            let function = tool
                .get("function")
                .ok_or_else(|| FieldProblem::new(format!("{at}.function"), "is missing"))?;
            Ok(Tool {
                name: function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| FieldProblem::new(format!("{at}.function.name"), "is missing"))?
                    .to_string(),
                description: function
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                parameters: function.get("parameters").filter(|p| !p.is_null()).cloned(),
                strict: match function.get("strict") {
                    None | Some(Value::Null) => false,
                    Some(strict) => strict.as_bool().ok_or_else(|| {
                        FieldProblem::new(format!("{at}.function.strict"), "must be true or false")
                    })?,
                },
            })
        })
        .collect()
}

fn tool_choice(value: &Value) -> Result<ToolChoice, FieldProblem> {
    match value {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(FieldProblem::new(
                "tool_choice",
                format!("\"{other}\" is not none, auto or required"),
            )),
        },
        Value::Object(_) => value
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|name| ToolChoice::Function(name.to_string()))
            .ok_or_else(|| {
                FieldProblem::new(
                    "tool_choice",
                    "only {\"type\":\"function\",\"function\":{\"name\":…}} can be translated for this provider",
                )
            }),
        _ => Err(FieldProblem::new(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}

fn response_format(value: &Value) -> Result<ResponseFormat, FieldProblem> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = value
                .get("json_schema")
                .ok_or_else(|| FieldProblem::new("response_format.json_schema", "is missing"))?;
            Ok(ResponseFormat::JsonSchema {
                name: spec
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_string(),
                schema: spec.get("schema").cloned().ok_or_else(|| {
                    FieldProblem::new("response_format.json_schema.schema", "is missing")
                })?,
            })
        }
        Some(other) => Err(FieldProblem::new(
            "response_format.type",
            format!("\"{other}\" is not text, json_object or json_schema"),
        )),
        None => Err(FieldProblem::new("response_format.type", "is missing")),
    }
}

// ---------------------------------------------------------------------------------------------
// The response side.

/// The canonical finish reasons (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    /// A canonical `finish_reason` string; the deprecated `function_call` is a tool call, and
    /// anything newer than this code counts as `stop`.
    pub fn parse(reason: &str) -> FinishReason {
        match reason {
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Stop,
        }
    }

    /// Anthropic's `stop_reason` (section 6.3). `None` for `pause_turn`, which has no canonical
    /// value: the turn is unfinished and the call is retried. A reason newer than this code is
    /// taken as `stop` (the raw value is kept next to it).
    pub fn from_anthropic(stop_reason: &str) -> Option<FinishReason> {
        match stop_reason {
            "end_turn" | "stop_sequence" => Some(FinishReason::Stop),
            "max_tokens" | "model_context_window_exceeded" => Some(FinishReason::Length),
            "tool_use" => Some(FinishReason::ToolCalls),
            "refusal" => Some(FinishReason::ContentFilter),
            "pause_turn" => None,
            _ => Some(FinishReason::Stop),
        }
    }

    /// Gemini's `finishReason` (section 6.3); `STOP` means `tool_calls` when the candidate
    /// called a function. `None` for the reasons with no canonical value (malformed or
    /// unexpected tool calls, `OTHER`, `LANGUAGE`, unspecified): the call is retried.
    pub fn from_gemini(finish_reason: &str, called_a_function: bool) -> Option<FinishReason> {
        match finish_reason {
            "STOP" if called_a_function => Some(FinishReason::ToolCalls),
            "STOP" => Some(FinishReason::Stop),
            "MAX_TOKENS" => Some(FinishReason::Length),
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => {
                Some(FinishReason::ContentFilter)
            }
            r if r.starts_with("IMAGE_") || r == "NO_IMAGE" => Some(FinishReason::ContentFilter),
            _ => None,
        }
    }
}

/// The error for a finish reason with no canonical value: the provider stopped without a
/// usable answer, so the attempt is retried (section 6.3, "error / retryable").
pub fn unfinished(provider: &'static str, status: u16, native: &str) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorKind::InvalidResponse,
        Some(status),
        format!("the model stopped with \"{native}\", which leaves no complete answer; retrying"),
    )
}

/// A tool call in an answer: arguments as the JSON string OpenAI's format carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OutToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub extra_content: Option<Value>,
}

impl OutToolCall {
    pub fn to_value(&self) -> Value {
        let mut call = json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        });
        if let Some(extra) = &self.extra_content {
            call["extra_content"] = extra.clone();
        }
        call
    }
}

/// One choice of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceParts {
    pub index: u32,
    pub content: Option<String>,
    /// Why the model declined (OpenAI's `refusal`), when it did.
    pub refusal: Option<String>,
    pub tool_calls: Vec<OutToolCall>,
    pub finish_reason: FinishReason,
    /// The provider's own value, kept next to the canonical one.
    pub native_finish_reason: Option<String>,
}

/// Everything the canonical `chat.completion` object is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionParts {
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChoiceParts>,
    pub usage: Usage,
    /// `completion_tokens_details.reasoning_tokens`, when the provider says.
    pub reasoning_tokens: Option<u64>,
}

impl CompletionParts {
    /// The successful call these parts describe.
    pub fn into_completion(self, status: u16) -> super::Completion {
        super::Completion {
            response: self.to_value(),
            usage: self.usage,
            status,
            key_spent_for: None,
        }
    }

    /// The `chat.completion` object.
    pub fn to_value(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|c| {
                let mut message =
                    json!({"role": "assistant", "content": c.content, "refusal": c.refusal});
                if !c.tool_calls.is_empty() {
                    message["tool_calls"] =
                        c.tool_calls.iter().map(OutToolCall::to_value).collect();
                }
                let mut choice = json!({
                    "index": c.index,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": c.finish_reason.as_str(),
                });
                if let Some(native) = &c.native_finish_reason {
                    choice["native_finish_reason"] = Value::String(native.clone());
                }
                choice
            })
            .collect();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage.to_canonical(self.reasoning_tokens),
        })
    }
}

/// Seconds since the epoch, for `created`.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
