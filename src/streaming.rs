//! Streamed answers: what a worker tells the API process that serves a `stream: true` request.
//!
//! The client's HTTP connection ends at one API process, while the job runs in whichever
//! worker took it off the queue, perhaps on another machine. So the worker sends the
//! provider's chunks, as they arrive, to the reply inbox named in the job's envelope
//! ([`crate::queue::replies`]), and the API process turns them into server-sent events. The
//! job itself is recorded, retried, stored and charged exactly like a non-streamed one; the
//! events are only a live view of it.
//!
//! An attempt that fails before its first chunk is invisible to the client (the next attempt
//! streams instead). One that fails after chunks were sent cannot be taken back: the client's
//! stream ends with an error, and the job carries on and stores its answer, which the client
//! can still fetch by the job id. So does one whose worker died mid-answer, which sends no
//! failure: chunks name the delivery that sent them ([`StreamEvent::Chunks::from`]), and the
//! first chunks from another delivery (the job's next attempt, elsewhere) end the stream with
//! that error instead of being spliced onto the first answer.

use crate::providers::stream::ChunkHead;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// One message from the worker running a streamed job to the process serving its client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// OpenAI `chat.completion.chunk`s, in order: all those that arrived from the provider
    /// together. A burst travels as one message instead of one each, which at a hundred
    /// streams is most of the relay's work; a lone chunk (the first, usually) is not held back.
    Chunks {
        chunks: Vec<Value>,
        /// The delivery of the job whose attempt produced them, drawn by its worker: chunks
        /// from two deliveries are two answers (nil from a worker that predates it).
        #[serde(default)]
        from: Uuid,
    },
    /// The current attempt failed. With `will_retry`, the job goes on (later, or on another
    /// deployment) and its next attempt streams in turn; without, the job has failed.
    Failed {
        kind: String,
        message: String,
        /// The request parameter the provider blamed, for the client's error object
        /// (OpenAI's `param`). Left out when none was named, so an event from a worker that
        /// predates it still reads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        param: Option<String>,
        will_retry: bool,
    },
    /// The job's answer is stored; nothing follows.
    Done,
}

impl StreamEvent {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a stream event always serialises")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// True when a request asks for a streamed answer.
pub fn wants_stream(extra: &serde_json::Map<String, Value>) -> bool {
    extra.get("stream") == Some(&Value::Bool(true))
}

/// True when a streaming request asks for the usage chunk (`stream_options.include_usage`).
pub fn wants_usage(extra: &serde_json::Map<String, Value>) -> bool {
    extra
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        == Some(&Value::Bool(true))
}

/// A chunk as the client asked for it. Workers always ask providers for usage (it is what a
/// job is charged for), but OpenAI sends the usage chunk, which has no choices, only to a
/// client that asked for it with `stream_options.include_usage`; a client that did not reads
/// `chunk.choices[0]` of every chunk, and would fail on it. So without the option the usage
/// chunk is left out and no chunk carries `usage`.
pub fn chunk_for_client(mut chunk: Value, with_usage: bool) -> Option<Value> {
    if with_usage {
        return Some(chunk);
    }
    let object = chunk.as_object_mut()?;
    let has_choices = object
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|choices| !choices.is_empty());
    if !has_choices {
        return None;
    }
    object.remove("usage");
    Some(chunk)
}

/// A finished `chat.completion` replayed as the chunks that would have streamed it: one with
/// the whole message, then one with only the usage (as with `stream_options.include_usage`).
/// For a client that asks to stream an answer that already exists (a repeated idempotency
/// key), so it gets the stream it asked for.
pub fn chunks_of(completion: &Value) -> Vec<Value> {
    let text = |field: &str| {
        completion
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let head = ChunkHead {
        id: text("id"),
        created: completion
            .get("created")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        model: text("model"),
    };
    let choices: Vec<Value> = completion
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .map(|choice| {
                    let message = choice.get("message").cloned().unwrap_or(json!({}));
                    let mut delta = json!({ "role": "assistant" });
                    for field in ["content", "refusal"] {
                        if let Some(value) = message.get(field).filter(|v| !v.is_null()) {
                            delta[field] = value.clone();
                        }
                    }
                    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                        let calls: Vec<Value> = calls
                            .iter()
                            .enumerate()
                            .map(|(index, call)| {
                                let mut call = call.clone();
                                call["index"] = json!(index);
                                call
                            })
                            .collect();
                        delta["tool_calls"] = Value::Array(calls);
                    }
                    json!({
                        "index": choice.get("index").cloned().unwrap_or(json!(0)),
                        "delta": delta,
                        "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null),
                        "logprobs": null,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        head.chunk(Value::Array(choices), Value::Null),
        head.chunk(
            json!([]),
            completion.get("usage").cloned().unwrap_or(Value::Null),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_chunk_goes_only_to_a_client_that_asked_for_it() {
        let content = json!({"object": "chat.completion.chunk", "usage": null,
                             "choices": [{"index": 0, "delta": {"content": "hi"}}]});
        let usage = json!({"object": "chat.completion.chunk", "choices": [],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        let asked = |v: bool| {
            let mut extra = serde_json::Map::new();
            extra.insert("stream_options".into(), json!({"include_usage": v}));
            wants_usage(&extra)
        };
        assert!(asked(true));
        assert!(!asked(false));
        assert!(!wants_usage(&serde_json::Map::new()));

        assert_eq!(chunk_for_client(usage.clone(), true), Some(usage.clone()));
        assert_eq!(
            chunk_for_client(content.clone(), true),
            Some(content.clone())
        );
        assert_eq!(chunk_for_client(usage, false), None);
        let plain = chunk_for_client(content, false).unwrap();
        assert!(plain.get("usage").is_none());
        assert_eq!(plain["choices"][0]["delta"]["content"], "hi");
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let failed = StreamEvent::Failed {
            kind: "rate_limited".into(),
            message: "slow down".into(),
            param: None,
            will_retry: true,
        };
        let bytes = failed.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""event":"failed""#));
        assert_eq!(StreamEvent::from_bytes(&bytes).unwrap(), failed);
        let blamed = StreamEvent::Failed {
            kind: "bad_request".into(),
            message: "n is too large".into(),
            param: Some("n".into()),
            will_retry: false,
        };
        assert_eq!(StreamEvent::from_bytes(&blamed.to_bytes()).unwrap(), blamed);
        // An event without a param (from a worker that predates it) still reads.
        assert_eq!(
            StreamEvent::from_bytes(
                br#"{"event":"failed","kind":"rate_limited","message":"slow down","will_retry":true}"#
            )
            .unwrap(),
            failed
        );
        assert_eq!(
            StreamEvent::from_bytes(br#"{"event":"done"}"#).unwrap(),
            StreamEvent::Done
        );
        assert!(StreamEvent::from_bytes(br#"{"event":"nonsense"}"#).is_err());
    }

    #[test]
    fn a_completion_replays_as_a_content_chunk_and_a_usage_chunk() {
        let completion = json!({
            "id": "job-1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "hi",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        });
        let chunks = chunks_of(&completion);
        assert_eq!(chunks.len(), 2);
        let delta = &chunks[0]["choices"][0]["delta"];
        assert_eq!(delta["content"], "hi");
        assert_eq!(delta["tool_calls"][0]["index"], 0);
        assert_eq!(delta["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(chunks[0]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[1]["choices"], json!([]));
        assert_eq!(chunks[1]["usage"]["total_tokens"], 4);
        assert!(chunks.iter().all(|c| c["id"] == "job-1"));
    }
}
