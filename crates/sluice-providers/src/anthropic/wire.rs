//! Anthropic's Messages wire format as serde types (provider reference, sections 3 and 4),
//! written from Anthropic's documentation, not from the simulator.
//!
//! The request side borrows from the [`CanonicalRequest`](crate::canonical) it is
//! built from and serializes in the order the API documents its fields. The response side
//! reads only what Sluice uses: a field Anthropic adds later is ignored (no
//! `deny_unknown_fields`), a block or event type newer than this code is `Other`, and a field
//! the documentation calls required (a `tool_use` block's `id`, `name` and `input`) is
//! required, so an answer without it is an `InvalidResponse` naming the field instead of a
//! tool call with an empty id.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// `MessageCreateParams`: the body of `POST /v1/messages` and a batch request's `params`.
#[derive(Debug, Serialize)]
pub struct MessagesRequest<'a> {
    pub model: &'a str,
    /// Required by the API; there is no default.
    pub max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
    pub messages: Vec<InputMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolParam<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceParam<'a>>,
    #[serde(skip_serializing_if = "OutputConfig::is_empty")]
    pub output_config: OutputConfig<'a>,
    /// Sent only when true: a batch request must not carry it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// `metadata`: OpenAI's `user` as Anthropic's end-user id.
#[derive(Debug, Serialize)]
pub struct Metadata<'a> {
    pub user_id: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn: a role and its content blocks.
#[derive(Debug, Serialize)]
pub struct InputMessage<'a> {
    pub role: Role,
    pub content: Vec<InputBlock<'a>>,
}

/// The input content blocks Sluice sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    /// Goes inside a user turn.
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource<'a> {
    Url { url: &'a str },
    Base64 { media_type: &'a str, data: &'a str },
}

/// `ToolParam`.
#[derive(Debug, Serialize)]
pub struct ToolParam<'a> {
    pub name: &'a str,
    /// Required by the API; "no arguments" is an empty object schema.
    pub input_schema: Cow<'a, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// Strict tool use: the same promise as OpenAI's `strict`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

/// `tool_choice`; `disable_parallel_tool_use` is OpenAI's `parallel_tool_calls: false`.
#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoiceParam<'a> {
    None,
    Auto {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    /// Must call some tool.
    Any {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    /// Must call this one.
    Tool {
        name: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
}

/// `output_config`: a JSON schema's format and the effort level.
#[derive(Debug, Default, Serialize)]
pub struct OutputConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<&'static str>,
}

impl OutputConfig<'_> {
    fn is_empty(&self) -> bool {
        self.format.is_none() && self.effort.is_none()
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputFormat<'a> {
    JsonSchema { schema: &'a Value },
}

/// `Message`: a 2xx answer of `POST /v1/messages`, a batch result's `message`. `content`,
/// `stop_reason` and `usage` are optional here only so their absence gets the adapter's own
/// message; `type: "error"` is an error wrapped in a success.
#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    pub content: Option<Vec<ContentBlock>>,
    pub stop_reason: Option<String>,
    pub usage: Option<Usage>,
    /// Set when `type` is `error`.
    pub error: Option<ErrorDetail>,
}

/// An output content block. Thinking, server-tool and newer blocks have no place in the
/// canonical message and are `Other`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        /// Already parsed JSON (an object).
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// `usage`. Whole in a `Message`; in a stream, `message_start` and every `message_delta`
/// carry some of the counts, cumulative, so a later count replaces an earlier one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// These counts over `earlier`: the ones given here win.
    pub fn over(self, earlier: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.or(earlier.input_tokens),
            output_tokens: self.output_tokens.or(earlier.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .or(earlier.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .or(earlier.cache_read_input_tokens),
        }
    }
}

/// `ErrorResponse`: `{"type":"error","error":{"type","message"},"request_id"}` (a non-2xx
/// body, a batch result's `error`, a stream's `error` event).
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub message: Option<String>,
    /// `{"error_code": "enforced_spend_limit_reached"}` on a spend cap's 429.
    pub details: Option<ErrorDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetails {
    pub error_code: Option<String>,
}

/// A stream event's data (section 3.3). `ping` and event types newer than this code are
/// `Other`, skipped as the SDK skips them.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartedBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: Option<Usage>,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: ErrorDetail,
    },
    #[serde(other)]
    Other,
}

/// `message_start`'s message: empty content, no stop reason yet, the input counts.
#[derive(Debug, Deserialize)]
pub struct StartedMessage {
    pub id: Option<String>,
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

/// `content_block_start`'s block: text (usually empty) or a `tool_use` with its id and name.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StartedBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

/// `content_block_delta`'s delta. Thinking, signatures and citations have no canonical delta.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct MessageDelta {
    pub stop_reason: Option<String>,
}

/// One request of a Message Batches create body.
#[derive(Debug, Serialize)]
pub struct BatchItem<'a> {
    pub custom_id: &'a str,
    pub params: MessagesRequest<'a>,
}
