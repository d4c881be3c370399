//! The request side: a canonical request read once into the parts every adapter maps
//! (system prompts hoisted, content parts told apart, tool-call arguments parsed, tool
//! results tied back to their calls), with errors naming the field.

use super::params::{bad_request, NO_OP_VALUES};
use crate::ProviderError;
use serde_json::{Map, Value};
use sluice_core::job::ChatRequest;
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
            if let Some(expected) = sluice_core::job::param_type_problem(name, value) {
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
