//! Reading an Anthropic Messages request: what Anthropic checks before generating, in its
//! `field: problem` wording, and the [`Conversation`] the simulated model answers.

use super::ApiError;
use crate::answer::{Conversation, Format, Tool, ToolChoice, ToolResult};
use crate::{faults, tokens};
use serde_json::{json, Map, Value};

/// The content block types a request may carry.
const BLOCK_TYPES: [&str; 10] = [
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
];

/// The fields of a request the simulator acts on, checked.
pub(crate) struct Parsed<'a> {
    pub(super) model: &'a str,
    pub(super) messages: &'a [Value],
    pub(super) stream: bool,
    pub(super) conversation: Conversation,
}

/// Checks what Anthropic checks before generating, in its `field: problem` wording.
pub(super) fn validate(request: &Map<String, Value>) -> Result<Parsed<'_>, ApiError> {
    let model = match request.get("model") {
        None => return Err(ApiError::invalid("model: Field required")),
        Some(Value::String(model)) if !model.is_empty() => model.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(
                "model: Input should be a valid, non-empty string",
            ))
        }
    };
    let max_tokens = match request.get("max_tokens") {
        None => return Err(ApiError::invalid("max_tokens: Field required")),
        Some(value) => match value.as_i64() {
            Some(max) if max >= 1 => max as u64,
            Some(_) => {
                return Err(ApiError::invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    "max_tokens: Input should be a valid integer",
                ))
            }
        },
    };
    let messages = match request.get("messages") {
        None => return Err(ApiError::invalid("messages: Field required")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
            ))
        }
        Some(Value::Array(messages)) => messages.as_slice(),
        Some(_) => return Err(ApiError::invalid("messages: Input should be a valid list")),
    };
    for (i, message) in messages.iter().enumerate() {
        let last = i + 1 == messages.len();
        validate_message(i, message, last)?;
    }
    // Anthropic's models after the Claude 3 family take one of the two, not both.
    let sampling = |name: &str| request.get(name).is_some_and(|v| !v.is_null());
    if sampling("temperature") && sampling("top_p") && !model.starts_with("claude-3") {
        return Err(ApiError::invalid(
            "temperature and top_p cannot both be specified for this model. Please use only one.",
        ));
    }
    match request.get("system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(ApiError::invalid(format!(
                        "system.{j}.type: Input should be 'text'"
                    )));
                }
            }
        }
        Some(_) => return Err(ApiError::invalid("system: Input should be a valid string")),
    }
    let tools = tools_of(request.get("tools"))?;
    let stop = match request.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(_) => {
            return Err(ApiError::invalid(
                "stop_sequences: Input should be a valid list",
            ))
        }
    };
    let format = match request.get("output_config").and_then(|c| c.get("format")) {
        None | Some(Value::Null) => Format::Text,
        Some(format) if format.get("type").and_then(Value::as_str) == Some("json_schema") => {
            match format.get("schema") {
                Some(schema) => Format::JsonSchema(schema.clone()),
                None => {
                    return Err(ApiError::invalid(
                        "output_config.format.schema: Field required",
                    ))
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "output_config.format.type: Input should be 'json_schema'",
            ))
        }
    };
    // The system prompt is one more message to the tokenizer.
    let mut counted = messages.to_vec();
    if let Some(system) = request.get("system") {
        counted.push(json!({"role": "system", "content": system}));
    }
    let conversation = Conversation {
        question: question(messages),
        tool_results: tool_results(messages),
        tool_choice: tool_choice(request.get("tool_choice"), &tools)?,
        tools,
        format,
        max_tokens: Some(max_tokens),
        stop,
        prompt_tokens: tokens::count_prompt(&counted, request.get("tools")),
    };
    Ok(Parsed {
        model,
        messages,
        stream: request.get("stream").and_then(Value::as_bool) == Some(true),
        conversation,
    })
}

/// One message, as Anthropic checks it: its role, its content (empty only in a final
/// assistant turn, a prefill), and each content block's type, required fields and text.
fn validate_message(i: usize, message: &Value, last: bool) -> Result<(), ApiError> {
    match message.get("role").and_then(Value::as_str) {
        Some("user" | "assistant") => {}
        None if message.get("role").is_none() => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Field required"
            )))
        }
        _ => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )))
        }
    }
    let blocks = match message.get("content") {
        None => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content: Field required"
            )))
        }
        Some(Value::String(text)) => {
            let prefill = last && message.get("role").and_then(Value::as_str) == Some("assistant");
            if text.is_empty() && !prefill {
                return Err(ApiError::invalid(format!(
                    "messages.{i}: all messages must have non-empty content except for the \
                     optional final assistant message"
                )));
            }
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content: Input should be a valid string or list of content blocks"
            )))
        }
    };
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        if !BLOCK_TYPES.contains(&kind) {
            return Err(ApiError::invalid(format!(
                "{at}.type: Input tag '{kind}' found using 'type' does not match any of the \
                 expected tags: {}",
                BLOCK_TYPES.map(|t| format!("'{t}'")).join(", ")
            )));
        }
        let required: &[&str] = match kind {
            "text" => &["text"],
            "image" | "document" => &["source"],
            "tool_use" => &["id", "name", "input"],
            "tool_result" => &["tool_use_id"],
            _ => &[],
        };
        if let Some(missing) = required.iter().find(|field| block.get(**field).is_none()) {
            return Err(ApiError::invalid(format!(
                "{at}.{kind}.{missing}: Field required"
            )));
        }
        if kind == "text" {
            let text = block
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if text.is_empty() {
                return Err(ApiError::invalid(
                    "messages: text content blocks must be non-empty",
                ));
            }
            if text.trim().is_empty() {
                return Err(ApiError::invalid(
                    "messages: text content blocks must contain non-whitespace text",
                ));
            }
        }
    }
    Ok(())
}

/// The text blocks of the last user message (tool results are not questions).
fn question(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| faults::content_texts(m.get("content")).join(" "))
        .unwrap_or_default()
}

/// The `tool_result` blocks of a last user message, named after the `tool_use` they answer.
fn tool_results(messages: &[Value]) -> Vec<ToolResult> {
    let Some(last) = messages.last() else {
        return Vec::new();
    };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Vec::new();
    }
    let blocks = |m: &'_ Value| -> Vec<Value> {
        m.get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let name_of = |id: &str| {
        messages
            .iter()
            .flat_map(blocks)
            .find(|b| {
                b.get("type").and_then(Value::as_str) == Some("tool_use")
                    && b.get("id").and_then(Value::as_str) == Some(id)
            })
            .and_then(|b| b.get("name").and_then(Value::as_str).map(String::from))
    };
    blocks(last)
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| ToolResult {
            name: b
                .get("tool_use_id")
                .and_then(Value::as_str)
                .and_then(name_of),
            content: faults::content_texts(b.get("content")).join(" "),
        })
        .collect()
}

/// `tools`: client tools with an `input_schema`; server tools (with a versioned `type`)
/// are accepted and never called.
fn tools_of(tools: Option<&Value>) -> Result<Vec<Tool>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(ApiError::invalid("tools: Input should be a valid list")),
    };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let custom = matches!(
            tool.get("type").and_then(Value::as_str),
            None | Some("custom")
        );
        if !custom {
            continue;
        }
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return Err(ApiError::invalid(format!(
                "tools.{i}.custom.name: Field required"
            )));
        };
        let Some(schema) = tool.get("input_schema") else {
            return Err(ApiError::invalid(format!(
                "tools.{i}.custom.input_schema: Field required"
            )));
        };
        out.push(Tool {
            name: name.to_string(),
            schema: schema.clone(),
        });
    }
    Ok(out)
}

/// `tool_choice`: `{"type": "auto" | "any" | "tool" (with `name`) | "none"}`.
fn tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(ToolChoice::Auto);
    };
    let kind = choice.get("type").and_then(Value::as_str);
    if tools.is_empty() && kind != Some("none") {
        return Err(ApiError::invalid(
            "tool_choice: tool_choice may only be specified while providing tools",
        ));
    }
    match kind {
        Some("auto") => Ok(ToolChoice::Auto),
        Some("none") => Ok(ToolChoice::None),
        Some("any") => Ok(ToolChoice::Forced(None)),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) if tools.iter().any(|tool| tool.name == name) => {
                Ok(ToolChoice::Forced(Some(name.to_string())))
            }
            Some(name) => Err(ApiError::invalid(format!(
                "tool_choice: Tool '{name}' not found in provided tools"
            ))),
            None => Err(ApiError::invalid("tool_choice.tool.name: Field required")),
        },
        _ => Err(ApiError::invalid(
            "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Value) -> Result<(), String> {
        let map: Map<String, Value> = serde_json::from_value(body).unwrap();
        validate(&map).map(|_| ()).map_err(|e| e.message)
    }

    #[test]
    fn validation_names_the_field_like_anthropic() {
        let user = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            check(json!({"model": "m", "messages": user})),
            Err("max_tokens: Field required".into())
        );
        assert_eq!(
            check(json!({"model": "m", "max_tokens": 0, "messages": user})),
            Err("max_tokens: Input should be greater than or equal to 1".into())
        );
        assert_eq!(
            check(
                json!({"model": "m", "max_tokens": 9, "messages": [{"role": "system", "content": "x"}]})
            ),
            Err("messages.0.role: Input should be 'user' or 'assistant'".into())
        );
        assert_eq!(
            check(
                json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]})
            ),
            Err("messages.0.content.0.tool_result.tool_use_id: Field required".into())
        );
        assert_eq!(
            check(
                json!({"model": "m", "max_tokens": 9, "messages": user, "tools": [{"name": "f"}]})
            ),
            Err("tools.0.custom.input_schema: Field required".into())
        );
        assert!(check(json!({"model": "m", "max_tokens": 9, "messages": user, "system": [{"type": "text", "text": "be brief"}]})).is_ok());
    }

    #[test]
    fn tool_results_are_named_after_their_tool_use() {
        let messages = [
            json!({"role": "user", "content": "weather?"}),
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "3 degrees"}]}),
        ];
        assert_eq!(
            tool_results(&messages),
            [ToolResult {
                name: Some("get_weather".into()),
                content: "3 degrees".into()
            }]
        );
        assert_eq!(question(&messages), "");
    }
}
