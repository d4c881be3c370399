//! Streaming: canonical `chat.completion.chunk` values as a provider sends them, and the fold
//! of such a stream back into one [`Completion`].
//!
//! Every adapter streams through the same driver ([`drive`]): the body's bytes go through the
//! [SSE parser](super::sse), each event through the adapter's [`Translate`], and out come
//! OpenAI-shaped chunks — content deltas, tool-call deltas indexed as OpenAI indexes them, a
//! chunk with the finish reason, and last a chunk with empty `choices` and the usage (as
//! OpenAI sends with `stream_options.include_usage`). The driver also owns what every stream
//! needs the same way: the whole-call deadline, transport errors, key redaction, and the rule
//! that a stream ending without the provider's terminator is an error (retryable), never a
//! silently short answer.
//!
//! A stream's response headers arrive before its first chunk, so what they say about the key
//! (a `remaining: 0` rate limit, read by the adapter's own header reading, the same as for a
//! non-streamed answer) travels with the stream as [`ChunkStream::key_spent_for`]. The driver
//! also ends a stream that has started but then goes quiet for longer than the call's
//! `stream_idle_timeout`, instead of waiting out the whole-call deadline.
//!
//! [`collect`] folds a chunk stream into the `Completion` the worker stores, so a streamed
//! answer is recorded, charged and heeded (its key cooled down) like any other.

use super::canonical::{ChoiceParts, CompletionParts, FinishReason, OutToolCall};
use super::family::Family;
use super::http;
use super::sse;
use super::{Call, Completion, ErrorKind, ProviderError, Usage};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// Canonical chunks as they arrive; an `Err` ends the stream.
pub type Chunks = Pin<Box<dyn Stream<Item = Result<Value, ProviderError>> + Send>>;

/// A streamed answer: its chunks, and what its response headers said about the key.
pub struct ChunkStream {
    chunks: Chunks,
    /// See [`Completion::key_spent_for`]; known once the headers are in, before any chunk.
    pub key_spent_for: Option<Duration>,
}

impl ChunkStream {
    /// Chunks whose headers said nothing about the key (a replay, a test).
    pub fn new(chunks: impl Stream<Item = Result<Value, ProviderError>> + Send + 'static) -> Self {
        ChunkStream {
            chunks: Box::pin(chunks),
            key_spent_for: None,
        }
    }

    /// The same answer with its chunks passed through `f` (a relay, early chunks put back),
    /// what the headers said kept.
    pub fn map_chunks<S>(self, f: impl FnOnce(Chunks) -> S) -> ChunkStream
    where
        S: Stream<Item = Result<Value, ProviderError>> + Send + 'static,
    {
        ChunkStream {
            chunks: Box::pin(f(self.chunks)),
            key_spent_for: self.key_spent_for,
        }
    }
}

impl Stream for ChunkStream {
    type Item = Result<Value, ProviderError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

/// One provider's events → canonical chunks.
pub trait Translate: Send + 'static {
    /// The chunks one event yields (often none), or the error it carries.
    fn event(&mut self, event: sse::Event) -> Result<Vec<Value>, ProviderError>;
    /// True once the provider's terminator has arrived; nothing after it is read.
    fn finished(&self) -> bool;
    /// The body ended: the last chunks, or an error when the stream is incomplete.
    fn end(&mut self) -> Result<Vec<Value>, ProviderError>;
}

struct Driver<T> {
    provider: &'static str,
    api_key: String,
    body: Body,
    parser: sse::Parser,
    translate: T,
    pending: VecDeque<Result<Value, ProviderError>>,
    deadline: Instant,
    timeout: Duration,
    /// The longest gap between body reads once the answer has begun.
    idle: Option<Duration>,
    /// Whether a chunk carrying output has come: before it, the wait is the first token's
    /// (the route's `first_token_timeout`), not a stall.
    begun: bool,
    done: bool,
}

/// Sends a streaming request and, once a 2xx status is in, drives its body through the
/// family's translator. A non-2xx answer is read whole and becomes the outer error, read as
/// the family reads errors; a 2xx answer's rate-limit headers say whether the key is spent,
/// as for [`http::exchange`].
pub async fn open<F: Family>(
    call: &Call<'_>,
    request: reqwest::RequestBuilder,
) -> Result<ChunkStream, ProviderError> {
    let provider = F::NAME;
    let started = Instant::now();
    let timeout = call.timeout;
    let response = http::guarded(provider, call.api_key, timeout, async {
        let response = http::start(provider, request, timeout).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| http::transport_error(provider, &e, timeout))?;
        let answer = http::Answer {
            status,
            headers,
            body,
        };
        Err(F::error(&answer, std::time::SystemTime::now()))
    })
    .await?;
    let key_spent_for = F::key_spent_for(response.headers());
    let body = Box::pin(response.bytes_stream());
    let limits = Limits {
        started,
        timeout,
        idle: call.stream_idle_timeout,
    };
    let mut stream = drive(provider, call.api_key, body, limits, F::stream(call));
    stream.key_spent_for = key_spent_for;
    Ok(stream)
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// How long a stream may take: `timeout` from `started` in all, and `idle` between reads
/// once its answer has begun.
struct Limits {
    started: Instant,
    timeout: Duration,
    idle: Option<Duration>,
}

/// Turns a 2xx streaming response into canonical chunks, within `limits`.
fn drive<T: Translate>(
    provider: &'static str,
    api_key: &str,
    body: Body,
    limits: Limits,
    translate: T,
) -> ChunkStream {
    let driver = Driver {
        provider,
        api_key: api_key.to_string(),
        body,
        parser: sse::Parser::new(),
        translate,
        pending: VecDeque::new(),
        deadline: limits.started + limits.timeout,
        timeout: limits.timeout,
        idle: limits.idle,
        begun: false,
        done: false,
    };
    ChunkStream::new(futures::stream::unfold(driver, |mut d| async move {
        let item = d.next().await?;
        let item = item.map_err(|e| http::redact(e, &d.api_key));
        Some((item, d))
    }))
}

impl<T: Translate> Driver<T> {
    async fn next(&mut self) -> Option<Result<Value, ProviderError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if item.is_err() {
                    self.done = true;
                    self.pending.clear();
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            let idle = self
                .idle
                .filter(|_| self.begun)
                .filter(|limit| Instant::now() + *limit < self.deadline);
            let until = idle.map_or(self.deadline, |limit| Instant::now() + limit);
            let read = tokio::time::timeout_at(until, self.body.next()).await;
            match read {
                Err(_) => self.fail(match idle {
                    Some(limit) => http::limit_error(
                        self.provider,
                        "no stream data",
                        limit,
                        "stream_idle_timeout",
                    ),
                    None => http::timeout_error(self.provider, self.timeout),
                }),
                Ok(Some(Err(e))) => {
                    self.fail(http::transport_error(self.provider, &e, self.timeout))
                }
                Ok(Some(Ok(bytes))) => {
                    for event in self.parser.feed(&bytes) {
                        match self.translate.event(event) {
                            Ok(chunks) => {
                                self.begun |= chunks.iter().any(carries_output);
                                self.pending.extend(chunks.into_iter().map(Ok));
                            }
                            Err(e) => {
                                self.fail(e);
                                break;
                            }
                        }
                        if self.translate.finished() {
                            self.done = true;
                            break;
                        }
                    }
                }
                Ok(None) => {
                    self.done = true;
                    match self.translate.end() {
                        Ok(chunks) => self.pending.extend(chunks.into_iter().map(Ok)),
                        Err(e) => self.pending.push_back(Err(e)),
                    }
                }
            }
        }
    }

    fn fail(&mut self, error: ProviderError) {
        self.pending.push_back(Err(error));
        self.done = true;
    }
}

/// Whether a canonical chunk carries part of the answer (text, a tool call) or its end: what
/// counts as a first token, after which a silent stream is stalled.
pub fn carries_output(chunk: &Value) -> bool {
    chunk["choices"].as_array().is_some_and(|choices| {
        choices.iter().any(|choice| {
            let delta = &choice["delta"];
            delta["content"].as_str().is_some_and(|c| !c.is_empty())
                || delta.get("tool_calls").is_some()
                || !choice["finish_reason"].is_null()
        })
    })
}

/// An event's data as JSON, or the `InvalidResponse` saying what came instead.
pub fn event_json(provider: &'static str, data: &str) -> Result<Value, ProviderError> {
    serde_json::from_str(data).map_err(|e| {
        http::invalid(
            provider,
            200,
            format!("a stream event is not JSON ({e}): {}", data.trim()),
        )
    })
}

/// The error for a stream that stopped before the provider's end marker.
pub fn incomplete(provider: &'static str, missing: &str) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorKind::InvalidResponse,
        Some(200),
        format!("the stream ended before {missing}; the answer is incomplete"),
    )
}

/// What every chunk of one answer repeats: `id`, `created`, `model`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkHead {
    pub id: String,
    pub created: i64,
    pub model: String,
}

impl ChunkHead {
    /// A chunk of this answer with `choices` and `usage` as given.
    pub fn chunk(&self, choices: Value, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        })
    }

    /// A chunk carrying `delta` for choice `index`.
    pub fn delta(&self, index: u32, delta: Value) -> Value {
        self.chunk(
            json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]),
            Value::Null,
        )
    }

    /// Text for choice `index`.
    pub fn content(&self, index: u32, text: &str) -> Value {
        self.delta(index, json!({ "content": text }))
    }

    /// The start of choice `index`: the role, as OpenAI's first chunk carries it.
    pub fn role(&self, index: u32) -> Value {
        self.delta(index, json!({"role": "assistant", "content": ""}))
    }

    /// A tool-call delta (`id`, `type` and `name` on the first fragment of a call).
    pub fn tool_call(&self, index: u32, call: Value) -> Value {
        self.delta(index, json!({ "tool_calls": [call] }))
    }

    /// The chunk ending choice `index`, with the provider's own reason next to the canonical.
    pub fn finish(&self, index: u32, reason: FinishReason, native: &str) -> Value {
        self.chunk(
            json!([{"index": index, "delta": {}, "logprobs": null,
                    "finish_reason": reason.as_str(), "native_finish_reason": native}]),
            Value::Null,
        )
    }

    /// The last chunk: no choices, the whole call's usage.
    pub fn usage(&self, usage: &Usage, reasoning_tokens: Option<u64>) -> Value {
        self.chunk(json!([]), usage.to_canonical(reasoning_tokens))
    }
}

/// Folds a chunk stream into the `Completion` it amounts to: content concatenated, tool-call
/// fragments joined by index, the finish reason and usage from the chunks that carry them.
pub async fn collect(
    provider: &'static str,
    mut stream: ChunkStream,
) -> Result<Completion, ProviderError> {
    let mut fold = Fold::default();
    while let Some(chunk) = stream.next().await {
        fold.push(&chunk?);
    }
    let mut completion = fold.finish(provider)?;
    completion.key_spent_for = stream.key_spent_for;
    Ok(completion)
}

#[derive(Default)]
struct Fold {
    head: Option<ChunkHead>,
    choices: BTreeMap<u32, ChoiceFold>,
    usage: Option<(Usage, Option<u64>)>,
}

#[derive(Default)]
struct ChoiceFold {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, OutToolCall>,
    finish_reason: Option<String>,
    native_finish_reason: Option<String>,
}

impl Fold {
    fn push(&mut self, chunk: &Value) {
        let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
        if self.head.is_none() {
            self.head = Some(ChunkHead {
                id: text(chunk, "id").unwrap_or_default(),
                created: chunk.get("created").and_then(Value::as_i64).unwrap_or(0),
                model: text(chunk, "model").unwrap_or_default(),
            });
        }
        if let Some(usage) = chunk.get("usage").and_then(Usage::from_canonical) {
            let reasoning = chunk
                .pointer("/usage/completion_tokens_details/reasoning_tokens")
                .and_then(Value::as_u64);
            self.usage = Some((usage, reasoning));
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as u32;
            let fold = self.choices.entry(index).or_default();
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(content) = delta.get("content").and_then(Value::as_str) {
                fold.content
                    .get_or_insert_with(String::new)
                    .push_str(content);
            }
            if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
                fold.refusal
                    .get_or_insert_with(String::new)
                    .push_str(refusal);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = fold.tool_calls.entry(at).or_insert_with(|| OutToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                    extra_content: None,
                });
                if let Some(id) = text(call, "id") {
                    entry.id = id;
                }
                if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                    entry.name.push_str(name);
                }
                if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str)
                {
                    entry.arguments.push_str(arguments);
                }
                if let Some(extra) = call.get("extra_content") {
                    entry.extra_content = Some(extra.clone());
                }
            }
            if let Some(reason) = text(choice, "finish_reason") {
                fold.finish_reason = Some(reason);
            }
            if let Some(native) = text(choice, "native_finish_reason") {
                fold.native_finish_reason = Some(native);
            }
        }
    }

    fn finish(self, provider: &'static str) -> Result<Completion, ProviderError> {
        if self.choices.is_empty() {
            return Err(http::invalid(
                provider,
                200,
                "the stream carried no choices",
            ));
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, c)| {
                let reason = c.finish_reason.ok_or_else(|| {
                    http::invalid(
                        provider,
                        200,
                        format!("choice {index} of the stream has no finish_reason"),
                    )
                })?;
                let tool_calls: Vec<OutToolCall> = c.tool_calls.into_values().collect();
                // Content may be null only beside tool calls or a refusal, as in OpenAI's
                // answers; an empty answer is otherwise an empty string.
                let other_output = !tool_calls.is_empty() || c.refusal.is_some();
                let content = match c.content {
                    Some(text) if !text.is_empty() || !other_output => Some(text),
                    None if !other_output => Some(String::new()),
                    _ => None,
                };
                Ok(ChoiceParts {
                    index,
                    content,
                    refusal: c.refusal,
                    tool_calls,
                    finish_reason: FinishReason::parse(&reason),
                    native_finish_reason: c.native_finish_reason,
                })
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        // A whole answer without usage is how the server streams, not a mishap: another call
        // would be billed again and end the same way, so it is not retried.
        let (usage, reasoning_tokens) = self.usage.ok_or_else(|| ProviderError {
            should_retry: Some(false),
            ..http::invalid(
                provider,
                200,
                "the stream carried no usage (OpenAI's last chunk when stream_options.include_usage \
                 is set), so the call's cost cannot be known; the deployment's server must send it",
            )
        })?;
        let head = self.head.unwrap_or_default();
        let parts = CompletionParts {
            id: head.id,
            created: head.created,
            model: head.model,
            choices,
            usage,
            reasoning_tokens,
        };
        Ok(parts.into_completion(200))
    }
}

/// The chunks a translator makes of a body arriving in these pieces, through the same driver
/// a real response goes through (for the adapters' tests).
#[cfg(test)]
pub(crate) async fn replay<T: Translate>(
    translate: T,
    pieces: &[&[u8]],
) -> Vec<Result<Value, ProviderError>> {
    let pieces: Vec<reqwest::Result<bytes::Bytes>> = pieces
        .iter()
        .map(|p| Ok(bytes::Bytes::copy_from_slice(p)))
        .collect();
    let body: Body = Box::pin(futures::stream::iter(pieces));
    let limits = Limits {
        started: Instant::now(),
        timeout: Duration::from_secs(5),
        idle: None,
    };
    let stream = drive("test", "sk-secret", body, limits, translate);
    stream.collect().await
}

/// The same, split at every byte boundary in turn: a stream must mean the same however the
/// network cuts it.
#[cfg(test)]
pub(crate) async fn replay_all_splits<T: Translate>(
    make: impl Fn() -> T,
    body: &[u8],
) -> Vec<Result<Value, ProviderError>> {
    let whole = replay(make(), &[body]).await;
    for split in 1..body.len() {
        let parts = replay(make(), &[&body[..split], &body[split..]]).await;
        assert_eq!(
            strip_created(&parts),
            strip_created(&whole),
            "split at byte {split}"
        );
    }
    whole
}

#[cfg(test)]
fn strip_created(items: &[Result<Value, ProviderError>]) -> Vec<Result<Value, ProviderError>> {
    items
        .iter()
        .map(|item| {
            item.clone().map(|mut v| {
                v["created"] = 0.into();
                v
            })
        })
        .collect()
}

/// Folds replayed chunks.
#[cfg(test)]
pub(crate) async fn fold(
    items: Vec<Result<Value, ProviderError>>,
) -> Result<Completion, ProviderError> {
    collect("test", ChunkStream::new(futures::stream::iter(items))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(chunks: Vec<Result<Value, ProviderError>>) -> ChunkStream {
        ChunkStream::new(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_stream_folds_into_the_completion_it_amounts_to() {
        let head = ChunkHead {
            id: "msg_1".into(),
            created: 1_700_000_000,
            model: "claude-x".into(),
        };
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        let chunks = vec![
            head.role(0),
            head.content(0, "Let me "),
            head.content(0, "check."),
            head.tool_call(
                0,
                json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
            ),
            head.tool_call(0, json!({"index": 0, "function": {"arguments": "{\"city\":"}})),
            head.tool_call(0, json!({"index": 0, "function": {"arguments": "\"Oslo\"}"}})),
            head.finish(0, FinishReason::ToolCalls, "tool_use"),
            head.usage(&usage, None),
        ];
        let done = collect("anthropic", stream_of(chunks.into_iter().map(Ok).collect()))
            .await
            .unwrap();
        assert_eq!(done.usage, usage);
        let r = done.response;
        assert_eq!(r["id"], "msg_1");
        assert_eq!(r["object"], "chat.completion");
        let choice = &r["choices"][0];
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["native_finish_reason"], "tool_use");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}])
        );
    }

    /// A streamed refusal (OpenAI's `delta.refusal`) is kept in the folded answer, whose
    /// content stays null, as the unstreamed answer has it.
    #[tokio::test]
    async fn a_streamed_refusal_is_kept() {
        let head = ChunkHead::default();
        let usage = Usage {
            prompt_tokens: 9,
            completion_tokens: 4,
            ..Usage::default()
        };
        let chunks = vec![
            head.role(0),
            head.delta(0, json!({"refusal": "I can't "})),
            head.delta(0, json!({"refusal": "help with that."})),
            head.finish(0, FinishReason::Stop, "stop"),
            head.usage(&usage, None),
        ];
        let done = collect("openai", stream_of(chunks.into_iter().map(Ok).collect()))
            .await
            .unwrap();
        let message = &done.response["choices"][0]["message"];
        assert_eq!(message["refusal"], "I can't help with that.");
        assert_eq!(message["content"], Value::Null);
    }

    #[tokio::test]
    async fn errors_and_missing_parts_fail_the_fold() {
        let head = ChunkHead::default();
        let error = ProviderError::new("anthropic", ErrorKind::ServerError, None, "Overloaded");
        let e = collect(
            "anthropic",
            stream_of(vec![Ok(head.content(0, "x")), Err(error.clone())]),
        )
        .await
        .unwrap_err();
        assert_eq!(e, error);
        // Cut before its finish: retried.
        let e = collect("openai", stream_of(vec![Ok(head.content(0, "x"))]))
            .await
            .unwrap_err();
        assert!(e.message.contains("no finish_reason"), "{}", e.message);
        assert!(e.is_retryable());
        // Whole but without usage: its cost is unknown, and another call ends the same way.
        let whole = vec![
            Ok(head.content(0, "x")),
            Ok(head.finish(0, FinishReason::Stop, "stop")),
        ];
        let e = collect("openai", stream_of(whole)).await.unwrap_err();
        assert!(e.message.contains("no usage"), "{}", e.message);
        assert!(!e.is_retryable());
    }
}
