//! The simulator's tokenizer: a deterministic stand-in for a real BPE vocabulary.
//!
//! Sluice bills from the `usage` a provider reports, so the simulator must count tokens the
//! same way every time, and count prompt and completion with the same function, or cost
//! tests would not mean anything. Real tokenizers are large tables; this approximation keeps
//! their shape without the tables:
//!
//! - whitespace separates tokens and is not a token itself;
//! - a run of letters or digits is one token per started 4 characters (`"hello"` is 2,
//!   `"the"` is 1), close to BPE's average of ~4 characters of English per token;
//! - every other character (punctuation, symbols) is a token of its own.
//!
//! Message overheads follow OpenAI's published counting recipe (3 tokens per message, 1 per
//! `name`, 3 to prime the reply), so prompt counts grow with messages as they do upstream.
//! The same recipe counts every family's messages (OpenAI's `content`, Anthropic's content
//! blocks, Gemini's `parts`), so one prompt costs about the same whichever API carries it.

use serde_json::Value;

/// Characters of a letter/digit run that make one token.
const CHARS_PER_TOKEN: usize = 4;
/// OpenAI's recipe: each message costs this much on top of its text.
const TOKENS_PER_MESSAGE: u64 = 3;
/// …and a `name` one more.
const TOKENS_PER_NAME: u64 = 1;
/// Every reply is primed with the assistant header.
const TOKENS_REPLY_PRIMING: u64 = 3;
/// A non-text content part (image, audio, file): a flat price, like OpenAI's low-detail image.
const TOKENS_PER_MEDIA_PART: u64 = 85;

/// The byte ranges of the tokens of `text`, in order.
///
/// Ranges rather than a count so a completion can be cut after exactly N tokens
/// (`max_tokens`) at a character boundary.
pub fn token_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut run_start: Option<usize> = None;
    let mut run_chars = 0usize;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            match run_start {
                Some(_) if run_chars < CHARS_PER_TOKEN => run_chars += 1,
                Some(start) => {
                    spans.push((start, i));
                    run_start = Some(i);
                    run_chars = 1;
                }
                None => {
                    run_start = Some(i);
                    run_chars = 1;
                }
            }
            continue;
        }
        if let Some(start) = run_start.take() {
            spans.push((start, i));
        }
        if !c.is_whitespace() {
            spans.push((i, i + c.len_utf8()));
        }
    }
    if let Some(start) = run_start {
        spans.push((start, text.len()));
    }
    spans
}

/// How many tokens `text` is.
pub fn count(text: &str) -> u64 {
    token_spans(text).len() as u64
}

/// `text` cut after its first `max` tokens, and whether anything was cut.
pub fn truncate(text: &str, max: u64) -> (&str, bool) {
    let spans = token_spans(text);
    match usize::try_from(max) {
        Ok(max) if max < spans.len() => {
            let end = if max == 0 { 0 } else { spans[max - 1].1 };
            (&text[..end], true)
        }
        _ => (text, false),
    }
}

/// The prompt tokens of a chat request: its messages by OpenAI's recipe, plus the tool
/// definitions (counted as their JSON text, which is roughly what the model sees). A family
/// with a top-level system prompt passes it as one more message.
pub fn count_prompt(messages: &[Value], tools: Option<&Value>) -> u64 {
    let mut total = TOKENS_REPLY_PRIMING;
    for message in messages {
        total += TOKENS_PER_MESSAGE;
        let Some(object) = message.as_object() else {
            continue;
        };
        for (key, value) in object {
            total += count_value(value);
            if key == "name" {
                total += TOKENS_PER_NAME;
            }
        }
    }
    if let Some(tools) = tools {
        total += count(&tools.to_string());
    }
    total
}

/// Tokens of one message field: strings as text, content-part arrays part by part, anything
/// else (tool calls, audio references) as its JSON text.
fn count_value(value: &Value) -> u64 {
    match value {
        Value::Null => 0,
        Value::String(s) => count(s),
        Value::Array(parts) => parts.iter().map(count_part).sum(),
        other => count(&other.to_string()),
    }
}

/// Parts of every family: typed parts (OpenAI, Anthropic) by their `type`, Gemini's untyped
/// parts by the key they carry. Tool calls and results count as their JSON text.
fn count_part(part: &Value) -> u64 {
    const MEDIA: [&str; 8] = [
        "image",
        "image_url",
        "input_audio",
        "file",
        "document",
        "inlineData",
        "fileData",
        "inline_data",
    ];
    let text = |key: &str| part.get(key).and_then(Value::as_str).map_or(0, count);
    match part.get("type").and_then(Value::as_str) {
        Some("text") => text("text"),
        Some("refusal") => text("refusal"),
        Some(kind) if MEDIA.contains(&kind) => TOKENS_PER_MEDIA_PART,
        Some(_) => count(&part.to_string()),
        None if part.get("text").is_some_and(Value::is_string) => text("text"),
        None if MEDIA.iter().any(|key| part.get(key).is_some()) => TOKENS_PER_MEDIA_PART,
        None => count(&part.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_punctuation_and_whitespace() {
        assert_eq!(count(""), 0);
        assert_eq!(count("   \n\t"), 0);
        assert_eq!(count("the"), 1);
        assert_eq!(count("hello"), 2);
        assert_eq!(count("Hello, world!"), 2 + 1 + 2 + 1);
        assert_eq!(count("état 2024"), 1 + 1);
        assert_eq!(count("a-b"), 3);
    }

    #[test]
    fn truncation_cuts_at_a_token_boundary() {
        assert_eq!(truncate("one two six", 2), ("one two", true));
        assert_eq!(truncate("one two six", 3), ("one two six", false));
        assert_eq!(truncate("one two three", 3), ("one two thre", true));
        assert_eq!(truncate("one two three", 99), ("one two three", false));
        assert_eq!(truncate("hello", 1), ("hell", true));
        assert_eq!(truncate("héllo wörld", 3), ("héllo wörl", true));
        assert_eq!(truncate("x", 0), ("", true));
        let (cut, _) = truncate("Hello, world!", 3);
        assert_eq!(count(cut), 3);
    }

    #[test]
    fn prompt_counts_follow_the_message_recipe() {
        let messages = [json!({"role": "user", "content": "hi"})];
        // priming 3 + message 3 + "user" 1 + "hi" 1
        assert_eq!(count_prompt(&messages, None), 8);
        let named = [json!({"role": "user", "name": "bob", "content": "hi"})];
        assert_eq!(count_prompt(&named, None), 8 + 1 + 1);
        let parts = [json!({"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:..."}}
        ]})];
        assert_eq!(count_prompt(&parts, None), 8 + 85);
        // Gemini's untyped parts count the same way.
        let gemini = [json!({"role": "user", "parts": [{"text": "hi"}, {"inlineData": {}}]})];
        assert_eq!(count_prompt(&gemini, None), 8 + 85);
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        assert!(count_prompt(&messages, Some(&tools)) > 8);
    }
}
