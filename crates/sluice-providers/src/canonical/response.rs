//! The response side: the canonical finish reasons with each family's mapping (section 6.3
//! of the provider reference), and the one builder of the canonical `chat.completion` object.

use crate::{Completion, ErrorKind, ProviderError, Usage};
use serde_json::{json, Value};

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
    pub fn into_completion(self, status: u16) -> Completion {
        Completion {
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
