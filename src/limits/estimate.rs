//! The token estimate a call is counted for before it is sent: the tokens/min buckets (and the
//! API's tenant limits) need a number before the provider's own count exists, and budgets
//! price the same estimate, so there is one way to make it.

use crate::job::ChatRequest;
use serde_json::Value;

/// Tokens assumed for the answer when neither the request (`max_tokens`,
/// `max_completion_tokens`) nor the deployment (`default_max_tokens`) bounds it.
pub const DEFAULT_COMPLETION_ESTIMATE: u32 = 1024;
/// Tokens every message costs beyond its text (role, separators), rounded up from OpenAI's
/// published 3–4.
const PER_MESSAGE_OVERHEAD: u32 = 4;
/// Tokens that prime every reply.
const PER_REQUEST_OVERHEAD: u32 = 3;
/// Tokens assumed per image or audio part: the high end of a detailed image tile set, so a
/// multimodal request is not under-counted.
const PER_MEDIA_PART: u32 = 1_000;

/// A conservative estimate of the tokens one call will use, prompt and answer together, for
/// the tokens/min buckets.
///
/// - Text (message contents, text parts, tool-call arguments, names, tool definitions):
///   one token per 4 ASCII bytes, rounded up, plus one token per non-ASCII character (CJK and
///   emoji run close to one token per character or more, so chars/4 would under-count them).
/// - 4 tokens per message and 3 per request for the chat framing; 1,000 per image/audio part.
/// - The answer: `max_completion_tokens`, else `max_tokens`, else `default_completion`
///   (the deployment's `default_max_tokens`, or [`DEFAULT_COMPLETION_ESTIMATE`]).
///
/// The estimate is never below the real count for ordinary text, which is the safe side: a
/// bucket paced on an over-estimate runs a little under its quota, never over.
pub fn estimate_tokens(request: &ChatRequest, default_completion: u32) -> u32 {
    estimate_split(request, default_completion).total()
}

/// [`estimate_tokens`] in its two parts, which providers price differently (a budget's
/// [estimate](crate::budgets::estimate) needs them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEstimate {
    /// The prompt: text, framing and media parts.
    pub prompt: u32,
    /// The answer's bound: `max_completion_tokens`, else `max_tokens`, else the default.
    pub completion: u32,
}

impl TokenEstimate {
    pub fn total(self) -> u32 {
        self.prompt.saturating_add(self.completion)
    }
}

/// The two parts of [`estimate_tokens`].
pub fn estimate_split(request: &ChatRequest, default_completion: u32) -> TokenEstimate {
    let mut prompt = TextCount::default();
    let mut framing = PER_REQUEST_OVERHEAD;
    for message in &request.messages {
        framing = framing.saturating_add(PER_MESSAGE_OVERHEAD);
        framing = framing.saturating_add(prompt.value(message));
    }
    if let Some(tools) = request.extra.get("tools") {
        prompt.json(tools);
    }
    let completion = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|name| request.extra.get(*name).and_then(Value::as_u64))
        .map_or(default_completion, |n| n.min(u64::from(u32::MAX)) as u32);
    TokenEstimate {
        prompt: prompt.tokens().saturating_add(framing),
        completion,
    }
}

/// Text seen so far, counted the way [`estimate_tokens`] documents.
#[derive(Default)]
struct TextCount {
    ascii_bytes: u64,
    other_chars: u64,
}

impl TextCount {
    fn text(&mut self, text: &str) {
        if text.is_ascii() {
            self.ascii_bytes += text.len() as u64;
        } else {
            for c in text.chars() {
                if c.is_ascii() {
                    self.ascii_bytes += 1;
                } else {
                    self.other_chars += 1;
                }
            }
        }
    }

    /// Counts a message (or part of one); returns the media tokens it carried.
    fn value(&mut self, value: &Value) -> u32 {
        match value {
            Value::String(text) => {
                self.text(text);
                0
            }
            Value::Array(items) => items
                .iter()
                .fold(0u32, |sum, item| sum.saturating_add(self.value(item))),
            Value::Object(map) => {
                let media = match map.get("type").and_then(Value::as_str) {
                    Some("image_url" | "input_audio" | "image" | "file") => PER_MEDIA_PART,
                    _ => 0,
                };
                let mut tokens = media;
                for (name, field) in map {
                    match name.as_str() {
                        // Counted as a media part above: its base64 is not text tokens.
                        "image_url" | "input_audio" | "file" => {}
                        // Framing, already in the per-message overhead.
                        "role" | "type" => {}
                        _ => tokens = tokens.saturating_add(self.value(field)),
                    }
                }
                tokens
            }
            Value::Number(_) | Value::Bool(_) | Value::Null => 0,
        }
    }

    /// Tool definitions: their JSON text, which is roughly what the provider tokenises.
    fn json(&mut self, value: &Value) {
        self.text(&value.to_string());
    }

    fn tokens(&self) -> u32 {
        let tokens = self.ascii_bytes.div_ceil(4) + self.other_chars;
        tokens.min(u64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_estimate_counts_text_framing_and_the_answer() {
        // 40 ASCII bytes = 10 tokens, + 4 per message + 3 per request + max_tokens.
        let r = request(json!({"model": "m", "max_tokens": 100,
            "messages": [{"role": "user", "content": "a".repeat(40)}]}));
        assert_eq!(estimate_tokens(&r, 7), 10 + 4 + 3 + 100);
        // No max_tokens: the default; max_completion_tokens wins over max_tokens.
        let r = request(json!({"model": "m", "messages": [{"role": "user", "content": "abc"}]}));
        assert_eq!(estimate_tokens(&r, 50), 1 + 4 + 3 + 50);
        let r = request(
            json!({"model": "m", "max_tokens": 9, "max_completion_tokens": 20,
            "messages": [{"role": "user", "content": "abc"}]}),
        );
        assert_eq!(estimate_tokens(&r, 50), 1 + 4 + 3 + 20);
    }

    #[test]
    fn the_estimate_is_conservative_for_non_ascii_and_media() {
        let r = request(json!({"model": "m", "max_tokens": 0,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "日本語"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(10_000))}}
        ]}]}));
        assert_eq!(estimate_tokens(&r, 0), 3 + PER_MEDIA_PART + 4 + 3);
    }

    #[test]
    fn the_estimate_covers_tools_and_tool_calls() {
        let plain = request(json!({"model": "m", "max_tokens": 0,
            "messages": [{"role": "user", "content": "hi"}]}));
        let with_tools = request(json!({"model": "m", "max_tokens": 0,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}]}));
        assert!(estimate_tokens(&with_tools, 0) > estimate_tokens(&plain, 0) + 20);
    }
}
