//! The simulated model: what a conversation is answered with, whatever API carried it.
//!
//! Each wire-format module reads its request into a [`Conversation`] (the question, tool
//! results, offered tools, tool choice, output format and limits) and renders the
//! [`Answer`] this module derives from it. Keeping the "model" in one place is what makes
//! the three APIs agree: the same question gets the same words, the same tool call and the
//! same token counts from OpenAI's, Anthropic's and Gemini's endpoints, streamed or not.
//!
//! Answers are deterministic: text is a function of the last user turn (directives
//! stripped), so a retried or re-routed job gets the same text; tool arguments and JSON
//! answers are examples of the schema asked for ([`super::schema::example`]).

use super::faults::{self, DirectiveError, Directives};
use super::{schema, tokens};
use serde_json::{json, Value};

/// What the simulated model is asked, read from any family's request.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// The text of the last user turn (directives are stripped here, not by the caller).
    pub question: String,
    /// When the conversation ends with tool results: those results, to be answered in text.
    pub tool_results: Vec<ToolResult>,
    /// The tools the request offers.
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub format: Format,
    /// The cap on generated tokens (`max_tokens`, `maxOutputTokens`, …).
    pub max_tokens: Option<u64>,
    /// Stop sequences: the answer ends before the first one it contains.
    pub stop: Vec<String>,
    /// The prompt's size, counted by the family (its message shapes differ).
    pub prompt_tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    /// The JSON Schema of its arguments (`Value::Null` when it takes none).
    pub schema: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The tool's name when the request says it (Gemini) or it can be found from the call id.
    pub name: Option<String>,
    pub content: String,
}

/// Whether the request lets, or makes, the model call a tool.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ToolChoice {
    #[default]
    Auto,
    /// Tools are offered but must not be called.
    None,
    /// A tool must be called: this one, or (`None`) the first offered.
    Forced(Option<String>),
}

/// The shape the answer's text must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Format {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON conforming to this schema.
    JsonSchema(Value),
}

/// Why an answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The answer is complete.
    Stop,
    /// It ended before this stop sequence.
    StopSequence(String),
    /// `max_tokens` cut it.
    Length,
    /// It is a tool call.
    ToolCalls,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Unique per answer, without a family's prefix (`call_`, `toolu_`).
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One choice of an answer and its token counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The text (empty for a tool call).
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: Finish,
    pub prompt_tokens: u64,
    /// Tokens of this one choice: its text and its tool calls.
    pub completion_tokens: u64,
    /// Prompt tokens served from cache (`cached=`), at most `prompt_tokens`.
    pub cached_tokens: u64,
}

/// Words per streamed text chunk: several, so clients see real deltas without one event per
/// token.
const WORDS_PER_CHUNK: usize = 3;

impl Answer {
    /// The text in stream-sized pieces that concatenate to exactly [`Answer::text`].
    pub fn text_pieces(&self) -> Vec<&str> {
        pieces(&self.text)
    }
}

/// `text` in pieces of a few words each (the whitespace before a word travels with it), in
/// order, concatenating to `text`.
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                words += 1;
                in_word = false;
                if words == WORDS_PER_CHUNK {
                    out.push(&text[start..i]);
                    start = i;
                    words = 0;
                }
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// `text` in pieces of at most `size` characters, for text without spaces to stream (a tool
/// call's JSON arguments).
pub fn fragments(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (count, (i, _)) in text.char_indices().enumerate() {
        if count > 0 && count % size == 0 {
            out.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Answers `conversation` as `directives` ask. Fails only for a `tool=` directive that names
/// no offered tool (or that the tool choice forbids).
pub fn answer(
    conversation: &Conversation,
    directives: &Directives,
) -> Result<Answer, DirectiveError> {
    let prompt_tokens = conversation.prompt_tokens;
    let cached_tokens = directives.cached.unwrap_or(0).min(prompt_tokens);
    if let Some(tool) = chosen_tool(conversation, directives)? {
        let call = ToolCall {
            id: uuid::Uuid::new_v4().simple().to_string()[..24].to_string(),
            name: tool.name.clone(),
            arguments: arguments(tool),
        };
        return Ok(Answer {
            text: String::new(),
            completion_tokens: tool_call_tokens(&call),
            tool_calls: vec![call],
            finish: Finish::ToolCalls,
            prompt_tokens,
            cached_tokens,
        });
    }
    let full = match &conversation.format {
        Format::Text => reply_text(conversation),
        Format::JsonObject => json!({ "answer": reply_text(conversation) }).to_string(),
        Format::JsonSchema(schema) => schema::example(schema, "answer").to_string(),
    };
    let (text, mut finish) = match first_stop(&full, &conversation.stop) {
        Some((at, stop)) => (&full[..at], Finish::StopSequence(stop.to_string())),
        None => (full.as_str(), Finish::Stop),
    };
    let text = match conversation.max_tokens {
        Some(max) => {
            let (text, cut) = tokens::truncate(text, max);
            if cut {
                finish = Finish::Length;
            }
            text
        }
        None => text,
    };
    Ok(Answer {
        text: text.to_string(),
        tool_calls: Vec::new(),
        finish,
        prompt_tokens,
        completion_tokens: tokens::count(text),
        cached_tokens,
    })
}

/// A tool call costs its name and its arguments' JSON text, as the model wrote them.
fn tool_call_tokens(call: &ToolCall) -> u64 {
    tokens::count(&call.name) + tokens::count(&call.arguments.to_string())
}

fn arguments(tool: &Tool) -> Value {
    match &tool.schema {
        Value::Null => json!({}),
        schema => schema::example(schema, &tool.name),
    }
}

/// The tool to call, if the answer is a tool call.
///
/// A forced tool choice calls a tool even right after a tool result, as the providers do;
/// a `tool=` directive answers a tool result with text, so a two-turn tool conversation
/// whose first message carries the directive ends.
fn chosen_tool<'a>(
    conversation: &'a Conversation,
    directives: &Directives,
) -> Result<Option<&'a Tool>, DirectiveError> {
    let find = |name: &str| {
        conversation
            .tools
            .iter()
            .find(|tool| tool.name == name)
            .ok_or_else(|| {
                let offered: Vec<&str> = conversation
                    .tools
                    .iter()
                    .map(|tool| tool.name.as_str())
                    .collect();
                DirectiveError(format!(
                    "tool={name}: the request offers no such tool (offered: [{}])",
                    offered.join(", ")
                ))
            })
    };
    match (&conversation.tool_choice, directives.tool.as_deref()) {
        (ToolChoice::None, Some(name)) => Err(DirectiveError(format!(
            "tool={name}: the request's tool choice forbids calling tools"
        ))),
        (ToolChoice::None, None) => Ok(None),
        (ToolChoice::Forced(Some(forced)), _) => find(forced).map(Some),
        (ToolChoice::Forced(None), Some(name)) => find(name).map(Some),
        (ToolChoice::Forced(None), None) => Ok(conversation.tools.first()),
        (ToolChoice::Auto, Some(name)) => {
            let tool = find(name)?;
            Ok(conversation.tool_results.is_empty().then_some(tool))
        }
        (ToolChoice::Auto, None) => Ok(None),
    }
}

/// The earliest stop sequence in `text`: where it starts, and which it is.
fn first_stop<'a>(text: &str, stops: &'a [String]) -> Option<(usize, &'a str)> {
    stops
        .iter()
        .filter(|stop| !stop.is_empty())
        .filter_map(|stop| text.find(stop.as_str()).map(|at| (at, stop.as_str())))
        .min_by_key(|(at, _)| *at)
}

/// Filler vocabulary: plain words so answers look like prose and tokenise like it.
const WORDS: [&str; 48] = [
    "the",
    "queue",
    "model",
    "answer",
    "request",
    "token",
    "worker",
    "simulated",
    "provider",
    "result",
    "quickly",
    "carefully",
    "every",
    "job",
    "deadline",
    "batch",
    "route",
    "cost",
    "is",
    "was",
    "will",
    "can",
    "should",
    "often",
    "record",
    "retry",
    "delay",
    "stable",
    "steady",
    "a",
    "of",
    "to",
    "and",
    "with",
    "for",
    "each",
    "message",
    "limit",
    "reply",
    "system",
    "bounded",
    "durable",
    "precise",
    "latency",
    "budget",
    "tier",
    "key",
    "clear",
];

/// The text answer: to the tool results when the conversation ends with them, else to the
/// question.
fn reply_text(conversation: &Conversation) -> String {
    if conversation.tool_results.is_empty() {
        return answer_to(&faults::strip(&conversation.question));
    }
    let results: Vec<String> = conversation
        .tool_results
        .iter()
        .map(|result| {
            let content = faults::strip(&result.content);
            match &result.name {
                Some(name) => format!("{name} returned {}", quote(&content)),
                None => format!("the tool returned {}", quote(&content)),
            }
        })
        .collect();
    let mut text = format!(
        "This is a simulated answer using the tool results: {}.",
        results.join("; ")
    );
    filler(&mut text, &results.join("\n"));
    text
}

/// The reply to a question: a function of its text and nothing else.
pub fn answer_to(question: &str) -> String {
    let mut text = if question.split_whitespace().next().is_none() {
        "This is a simulated answer.".to_string()
    } else {
        format!("This is a simulated answer to {}.", quote(question))
    };
    filler(&mut text, question);
    text
}

/// The first twelve words of `text` in double quotes, with an ellipsis when there are more.
fn quote(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut quote = words.iter().take(12).copied().collect::<Vec<_>>().join(" ");
    if words.len() > 12 {
        quote.push('…');
    }
    format!("\"{quote}\"")
}

/// One to three sentences of filler words seeded by `seed`.
fn filler(text: &mut String, seed: &str) {
    let mut rng = SplitMix64(fnv1a(seed.as_bytes()));
    for _ in 0..1 + rng.below(3) {
        let length = 6 + rng.below(7);
        for i in 0..length {
            let word = WORDS[rng.below(WORDS.len() as u64) as usize];
            text.push(' ');
            if i == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push_str(word);
            }
        }
        text.push('.');
    }
}

/// FNV-1a: a hash that stays the same across builds and platforms, unlike std's hasher, so
/// answers and request keys do not change when Sluice is upgraded.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A tiny seeded generator for the filler words; quality does not matter, stability does.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(question: &str) -> Conversation {
        Conversation {
            question: question.into(),
            prompt_tokens: 10,
            ..Conversation::default()
        }
    }

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    #[test]
    fn replies_depend_only_on_the_question_without_directives() {
        let none = Directives::default();
        let a = answer(&asked("What is a queue? [sim fail=429]"), &none).unwrap();
        let b = answer(&asked("What is a queue?"), &none).unwrap();
        assert_eq!(a.text, b.text);
        assert!(a
            .text
            .starts_with("This is a simulated answer to \"What is a queue?\"."));
        assert_ne!(a.text, answer(&asked("Other"), &none).unwrap().text);
        assert_eq!(a.completion_tokens, tokens::count(&a.text));
        assert_eq!(a.finish, Finish::Stop);
    }

    #[test]
    fn pieces_are_word_groups_that_rebuild_the_text() {
        let text = "One two three four five six seven.";
        assert_eq!(pieces(text), ["One two three", " four five six", " seven."]);
        assert_eq!(pieces("").len(), 0);
        assert_eq!(fragments("{\"a\":\"é\"}", 4), ["{\"a\"", ":\"é\"", "}"]);
        let a = answer(&asked("Tell me about queues"), &Directives::default()).unwrap();
        assert!(a.text_pieces().len() > 2);
        assert_eq!(a.text_pieces().concat(), a.text);
    }

    #[test]
    fn limits_and_stop_sequences_end_the_text() {
        let mut c = asked("Tell me a long story");
        c.max_tokens = Some(3);
        let a = answer(&c, &Directives::default()).unwrap();
        assert_eq!((a.finish, a.completion_tokens), (Finish::Length, 3));

        let mut c = asked("Tell me a long story");
        c.stop = vec!["simulated".into()];
        let a = answer(&c, &Directives::default()).unwrap();
        assert_eq!(a.text, "This is a ");
        assert_eq!(a.finish, Finish::StopSequence("simulated".into()));
    }

    #[test]
    fn tool_directive_and_forced_choice_call_a_tool() {
        let mut c = asked("Weather in Oslo?");
        c.tools = vec![weather()];
        let directed = Directives {
            tool: Some("get_weather".into()),
            ..Directives::default()
        };
        let a = answer(&c, &directed).unwrap();
        assert_eq!(a.finish, Finish::ToolCalls);
        assert_eq!(a.text, "");
        assert_eq!(a.tool_calls[0].arguments, json!({"city": "sample city"}));
        assert!(a.completion_tokens > 0);

        // After the result, the same directive answers in text that mentions it.
        c.tool_results = vec![ToolResult {
            name: Some("get_weather".into()),
            content: "{\"temp\": 3}".into(),
        }];
        let a = answer(&c, &directed).unwrap();
        assert_eq!(a.finish, Finish::Stop);
        assert!(a.text.contains("get_weather returned"), "{}", a.text);

        // A forced choice calls again, as the providers do.
        c.tool_choice = ToolChoice::Forced(None);
        let a = answer(&c, &Directives::default()).unwrap();
        assert_eq!(a.tool_calls[0].name, "get_weather");

        let unknown = Directives {
            tool: Some("nope".into()),
            ..Directives::default()
        };
        let err = answer(&c, &unknown).unwrap_err();
        assert!(err.0.contains("offered: [get_weather]"), "{err}");
        c.tool_choice = ToolChoice::None;
        assert!(answer(&c, &directed).is_err());
    }

    #[test]
    fn json_formats_answer_json() {
        let mut c = asked("Give me JSON");
        c.format = Format::JsonObject;
        let a = answer(&c, &Directives::default()).unwrap();
        let v: Value = serde_json::from_str(&a.text).unwrap();
        assert!(v["answer"].as_str().unwrap().starts_with("This is"));

        c.format = Format::JsonSchema(
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        );
        let a = answer(&c, &Directives::default()).unwrap();
        assert_eq!(a.text, "{\"n\":1}");
    }

    #[test]
    fn cached_tokens_are_capped_at_the_prompt() {
        let cached = Directives {
            cached: Some(1000),
            ..Directives::default()
        };
        assert_eq!(answer(&asked("hi"), &cached).unwrap().cached_tokens, 10);
    }
}
