//! Anthropic's event stream → canonical chunks (section 3.3 of the provider reference).
//!
//! `message_start` opens the answer (id, model, input usage); each `tool_use` block becomes a
//! tool call with the next OpenAI index, its `input_json_delta` fragments the argument deltas;
//! `message_delta` carries the stop reason and the cumulative usage; `message_stop` ends it.
//! `ping` and event types newer than this code are skipped, as the SDK does.

use super::wire::{BlockDelta, StartedBlock, StreamEvent, Usage as WireUsage};
use super::{canonical_usage, error_from_detail, PROVIDER};
use crate::canonical::{self, FinishReason};
use crate::http;
use crate::sse;
use crate::stream::{self, ChunkHead, Translate};
use crate::{ErrorKind, ProviderError};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The translator of one Anthropic stream.
#[derive(Debug)]
pub struct AnthropicStream {
    head: ChunkHead,
    /// Content block index → the tool call it streams.
    tools: HashMap<u64, StreamedTool>,
    usage: WireUsage,
    stop_reason: Option<String>,
    done: bool,
}

/// A `tool_use` block being streamed.
#[derive(Debug)]
struct StreamedTool {
    /// Its index among the answer's tool calls.
    index: u64,
    /// Whether any argument text arrived: a call without arguments streams only an empty
    /// `partial_json`, and its arguments are `{}` (as the non-streamed answer's `input` says),
    /// not the empty string, which no JSON parser takes.
    has_arguments: bool,
}

impl AnthropicStream {
    pub fn new(model: &str) -> Self {
        AnthropicStream {
            head: ChunkHead {
                id: String::new(),
                created: canonical::unix_now(),
                model: model.to_string(),
            },
            tools: HashMap::new(),
            usage: WireUsage::default(),
            stop_reason: None,
            done: false,
        }
    }

    /// The counts of a `usage` object over those seen so far: `message_delta` counts are
    /// cumulative, so the latest of each wins.
    fn take_usage(&mut self, usage: Option<WireUsage>) {
        if let Some(usage) = usage {
            self.usage = usage.over(self.usage);
        }
    }
}

/// An event's data as its typed event. Every event's data names its `type`; should one not,
/// the SSE event name (which Anthropic sets to the same) stands in for it.
fn read_event(event: &sse::Event) -> Result<StreamEvent, ProviderError> {
    match serde_json::from_str(&event.data) {
        Ok(typed) => Ok(typed),
        Err(_) => {
            let untyped = stream::event_json(PROVIDER, &event.data)?;
            match (untyped, event.event.as_deref()) {
                (Value::Object(mut fields), Some(name)) if !fields.contains_key("type") => {
                    fields.insert("type".into(), name.into());
                    http::typed_value(PROVIDER, 200, &Value::Object(fields))
                }
                // Read again from the JSON, so the error names the field it is about.
                (untyped, _) => http::typed_value(PROVIDER, 200, &untyped),
            }
        }
    }
}

impl Translate for AnthropicStream {
    fn event(&mut self, event: sse::Event) -> Result<Vec<Value>, ProviderError> {
        let head = &self.head;
        let chunks = match read_event(&event)? {
            StreamEvent::MessageStart { message } => {
                if let Some(id) = message.id {
                    self.head.id = id;
                }
                if let Some(model) = message.model {
                    self.head.model = model;
                }
                self.take_usage(message.usage);
                vec![self.head.role(0)]
            }
            StreamEvent::ContentBlockStart {
                index: at,
                content_block,
            } => match content_block {
                StartedBlock::Text { text } if !text.is_empty() => vec![head.content(0, &text)],
                StartedBlock::ToolUse { id, name } => {
                    let index = self.tools.len() as u64;
                    self.tools.insert(
                        at,
                        StreamedTool {
                            index,
                            has_arguments: false,
                        },
                    );
                    vec![self.head.tool_call(
                        0,
                        json!({"index": index, "id": id, "type": "function",
                               "function": {"name": name, "arguments": ""}}),
                    )]
                }
                StartedBlock::Text { .. } | StartedBlock::Other => Vec::new(),
            },
            StreamEvent::ContentBlockDelta { index: at, delta } => match delta {
                BlockDelta::TextDelta { text } => vec![head.content(0, &text)],
                BlockDelta::InputJsonDelta { partial_json } => match self.tools.get_mut(&at) {
                    Some(tool) => {
                        tool.has_arguments |= !partial_json.is_empty();
                        vec![head.tool_call(
                            0,
                            json!({"index": tool.index, "function": {"arguments": partial_json}}),
                        )]
                    }
                    None => Vec::new(),
                },
                // Thinking, signatures and citations have no canonical delta.
                BlockDelta::Other => Vec::new(),
            },
            StreamEvent::ContentBlockStop { index: at } => match self.tools.get(&at) {
                Some(tool) if !tool.has_arguments => vec![head.tool_call(
                    0,
                    json!({"index": tool.index, "function": {"arguments": "{}"}}),
                )],
                _ => Vec::new(),
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop_reason = Some(reason);
                }
                self.take_usage(usage);
                Vec::new()
            }
            StreamEvent::MessageStop => {
                self.done = true;
                let native = self.stop_reason.clone().ok_or_else(|| {
                    http::invalid(PROVIDER, 200, "the stream ended with no stop_reason")
                })?;
                let reason = FinishReason::from_anthropic(&native)
                    .ok_or_else(|| canonical::unfinished(PROVIDER, 200, &native))?;
                let usage = canonical_usage(self.usage)
                    .ok_or_else(|| http::invalid(PROVIDER, 200, "the stream carried no usage"))?;
                vec![
                    self.head.finish(0, reason, &native),
                    self.head.usage(&usage, None),
                ]
            }
            StreamEvent::Error { error } => {
                return Err(error_from_detail(None, &error).unwrap_or_else(|| {
                    ProviderError::new(PROVIDER, ErrorKind::ServerError, None, "an error event")
                }))
            }
            StreamEvent::Other => Vec::new(),
        };
        Ok(chunks)
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(stream::incomplete(PROVIDER, "message_stop"))
        }
    }
}
