//! Reading a Gemini `GenerateContentRequest`: what Gemini checks before generating, in
//! Google's wording (unknown fields refused, snake_case twins accepted), and the
//! [`Conversation`] the simulated model answers.

use super::ApiError;
use crate::answer::{Conversation, Format, Tool, ToolChoice, ToolResult};
use crate::tokens;
use serde_json::{Map, Value};

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

/// A field by its camelCase name or its snake_case twin: Google's JSON parser takes both.
pub(crate) fn field<'a>(object: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
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

/// The fields of a request the simulator acts on, checked.
pub(crate) struct Parsed {
    pub(super) candidates: u64,
    pub(super) conversation: Conversation,
}

/// Checks what Gemini checks before generating, in Google's wording.
pub(super) fn validate(request: &Map<String, Value>) -> Result<Parsed, ApiError> {
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
