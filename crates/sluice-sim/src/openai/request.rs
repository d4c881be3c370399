//! Reading an OpenAI Chat Completions request: what OpenAI checks before generating, in its
//! wording, and the [`Conversation`] the simulated model answers.

use super::ApiError;
use crate::answer::{Conversation, Format, Tool, ToolChoice, ToolResult};
use crate::{faults, tokens};
use serde_json::{Map, Value};

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// The fields of a request the simulator acts on, checked.
pub(crate) struct Parsed<'a> {
    pub(super) model: &'a str,
    pub(super) messages: &'a [Value],
    pub(super) n: u64,
    pub(super) service_tier: &'a str,
    /// `Some` when the answer is streamed.
    pub(super) stream: Option<Streaming>,
    pub(super) conversation: Conversation,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Streaming {
    /// `stream_options.include_usage`: a last chunk with the usage and no choices.
    pub(super) include_usage: bool,
}

/// Checks what OpenAI checks before generating, with its wording.
pub(super) fn validate(request: &Map<String, Value>) -> Result<Parsed<'_>, ApiError> {
    let model = match request.get("model") {
        None => return Err(ApiError::missing("model")),
        Some(Value::String(model)) if !model.is_empty() => model.as_str(),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid(
                "model",
                "invalid_value",
                "Invalid 'model': empty string. Expected a model name.",
            ))
        }
        Some(other) => return Err(ApiError::wrong_type("model", "a string", other)),
    };
    let messages = match request.get("messages") {
        None => return Err(ApiError::missing("messages")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ApiError::invalid(
                "messages",
                "empty_array",
                "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                 but got an empty array instead.",
            ))
        }
        Some(Value::Array(messages)) => messages.as_slice(),
        Some(other) => return Err(ApiError::wrong_type("messages", "an array", other)),
    };
    for (i, message) in messages.iter().enumerate() {
        let Some(object) = message.as_object() else {
            return Err(ApiError::wrong_type(
                &format!("messages[{i}]"),
                "an object",
                message,
            ));
        };
        let role = match object.get("role") {
            None => return Err(ApiError::missing(&format!("messages[{i}].role"))),
            Some(Value::String(role)) => role.as_str(),
            Some(other) => {
                return Err(ApiError::wrong_type(
                    &format!("messages[{i}].role"),
                    "a string",
                    other,
                ))
            }
        };
        if !ROLES.contains(&role) {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                "invalid_value",
                format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'assistant', \
                     'user', 'function', 'tool', and 'developer'."
                ),
            ));
        }
        let needs_content = matches!(role, "system" | "developer" | "user" | "tool");
        if needs_content && !object.contains_key("content") {
            return Err(ApiError::missing(&format!("messages[{i}].content")));
        }
        if role == "tool" && !object.contains_key("tool_call_id") {
            return Err(ApiError::missing(&format!("messages[{i}].tool_call_id")));
        }
    }

    let stream_options = request.get("stream_options").filter(|v| !v.is_null());
    let stream = match request.get("stream").and_then(Value::as_bool) {
        Some(true) => Some(Streaming {
            include_usage: stream_options
                .and_then(|options| options.get("include_usage"))
                .and_then(Value::as_bool)
                == Some(true),
        }),
        _ if stream_options.is_some() => {
            return Err(ApiError::invalid(
                "stream_options",
                "invalid_value",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ))
        }
        _ => None,
    };

    let n = positive_integer(request, "n")?.unwrap_or(1);
    if n > 128 {
        return Err(ApiError::invalid(
            "n",
            "integer_above_max_value",
            format!(
                "Invalid 'n': integer above maximum value. Expected a value <= 128, but got {n} instead."
            ),
        ));
    }
    // `max_completion_tokens` replaced `max_tokens`; when both come, the newer one rules.
    let max_tokens = match positive_integer(request, "max_completion_tokens")? {
        Some(max) => Some(max),
        None => positive_integer(request, "max_tokens")?,
    };
    // "auto" (and anything unknown) is served by the default tier, as OpenAI reports it.
    let service_tier = request
        .get("service_tier")
        .and_then(Value::as_str)
        .filter(|tier| ["default", "flex", "priority", "scale"].contains(tier))
        .unwrap_or("default");
    let tools_value = request.get("tools").filter(|tools| !tools.is_null());
    let tools = tools_of(tools_value)?;
    let conversation = Conversation {
        question: question(messages),
        tool_results: tool_results(messages),
        tool_choice: tool_choice(request.get("tool_choice"), &tools)?,
        tools,
        format: format(request.get("response_format"), messages)?,
        max_tokens,
        stop: match request.get("stop") {
            Some(Value::String(stop)) => vec![stop.clone()],
            Some(Value::Array(stops)) => stops
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        },
        prompt_tokens: tokens::count_prompt(messages, tools_value),
    };
    Ok(Parsed {
        model,
        messages,
        n,
        service_tier,
        stream,
        conversation,
    })
}

/// The text of the last user message (or of the last message, when no user spoke).
fn question(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .or_else(|| messages.last())
        .map(|m| faults::content_texts(m.get("content")).join(" "))
        .unwrap_or_default()
}

/// The `tool` messages that end the conversation, named after the calls they answer.
fn tool_results(messages: &[Value]) -> Vec<ToolResult> {
    let trailing = messages
        .iter()
        .rev()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .count();
    let name_of = |id: &str| {
        messages
            .iter()
            .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
            .flatten()
            .find(|call| call.get("id").and_then(Value::as_str) == Some(id))
            .and_then(|call| call.pointer("/function/name"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    messages[messages.len() - trailing..]
        .iter()
        .map(|m| ToolResult {
            name: m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .and_then(name_of),
            content: faults::content_texts(m.get("content")).join(" "),
        })
        .collect()
}

/// `tools`: function tools by name, with their parameter schemas.
fn tools_of(tools: Option<&Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(tools) = tools else {
        return Ok(Vec::new());
    };
    let Some(tools) = tools.as_array() else {
        return Err(ApiError::wrong_type("tools", "an array", tools));
    };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let Some(name) = tool.pointer("/function/name").and_then(Value::as_str) else {
            return Err(ApiError::missing(&format!("tools[{i}].function.name")));
        };
        out.push(Tool {
            name: name.to_string(),
            schema: tool
                .pointer("/function/parameters")
                .cloned()
                .unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

/// `tool_choice`: `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
fn tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(ToolChoice::Auto),
        Some(choice) => choice,
    };
    if tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice",
            "invalid_value",
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are              specified.",
        ));
    }
    match choice {
        Value::String(mode) if mode == "none" => Ok(ToolChoice::None),
        Value::String(mode) if mode == "auto" => Ok(ToolChoice::Auto),
        Value::String(mode) if mode == "required" => Ok(ToolChoice::Forced(None)),
        Value::Object(_) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if tools.iter().any(|tool| tool.name == name) => {
                Ok(ToolChoice::Forced(Some(name.to_string())))
            }
            Some(name) => Err(ApiError::invalid(
                "tool_choice",
                "invalid_value",
                format!("Invalid value for 'tool_choice': tool '{name}' is not in 'tools'."),
            )),
            None => Err(ApiError::missing("tool_choice.function.name")),
        },
        other => Err(ApiError::invalid(
            "tool_choice",
            "invalid_value",
            format!(
                "Invalid value: {other}. Supported values are: 'none', 'auto', 'required', or                  a named function."
            ),
        )),
    }
}

/// `response_format`: text, `json_object` (which OpenAI only takes when the messages say
/// "json"), or `json_schema`.
fn format(response_format: Option<&Value>, messages: &[Value]) -> Result<Format, ApiError> {
    let kind = response_format
        .and_then(|format| format.get("type"))
        .and_then(Value::as_str);
    match kind {
        Some("json_object") => {
            let mentions_json = messages.iter().any(|m| {
                faults::content_texts(m.get("content"))
                    .iter()
                    .any(|text| text.to_lowercase().contains("json"))
            });
            if !mentions_json {
                return Err(ApiError::invalid(
                    "messages",
                    "invalid_value",
                    "'messages' must contain the word 'json' in some form, to use                      'response_format' of type 'json_object'.",
                ));
            }
            Ok(Format::JsonObject)
        }
        Some("json_schema") => {
            let spec = response_format.and_then(|format| format.get("json_schema"));
            if spec.and_then(|spec| spec.get("name")).is_none() {
                return Err(ApiError::missing("response_format.json_schema.name"));
            }
            Ok(match spec.and_then(|spec| spec.get("schema")) {
                Some(schema) => Format::JsonSchema(schema.clone()),
                None => Format::JsonObject,
            })
        }
        _ => Ok(Format::Text),
    }
}

/// An optional integer field that must be at least 1.
fn positive_integer(request: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(n) if n >= 1 => Ok(Some(n as u64)),
            Some(n) => Err(ApiError::invalid(
                field,
                "integer_below_min_value",
                format!(
                    "Invalid '{field}': integer below minimum value. Expected a value >= 1, \
                     but got {n} instead."
                ),
            )),
            None => Err(ApiError::wrong_type(field, "an integer", value)),
        },
    }
}
