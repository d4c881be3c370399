//! Gemini's SSE stream (each event a whole `GenerateContentResponse`) → canonical chunks.
//!
//! Gemini sends no end marker: the stream is complete when every candidate has had its
//! `finishReason` (or the prompt was blocked) by the time the connection closes. Function
//! calls arrive whole, so each becomes one tool-call delta with its id, name and arguments,
//! numbered per candidate in the order they come, the same ids a non-streamed answer gets.

use super::wire::GenerateContentResponse;
use super::{
    answer_id, answer_text, canonical_usage, error_from_json, error_from_status, model_of,
    tool_call, PROVIDER,
};
use crate::canonical::{self, FinishReason};
use crate::http;
use crate::sse;
use crate::stream::{self, ChunkHead, Translate};
use crate::{ProviderError, Usage};
use serde_json::{json, Value};
use std::collections::btree_map::{BTreeMap, Entry};

/// The translator of one Gemini stream.
#[derive(Debug)]
pub struct GeminiStream {
    head: Option<ChunkHead>,
    model: String,
    candidates: BTreeMap<u64, CandidateState>,
    usage: Option<(Usage, Option<u64>)>,
    blocked: bool,
}

#[derive(Debug, Default)]
struct CandidateState {
    tool_calls: usize,
    finished: bool,
}

impl GeminiStream {
    pub fn new(model: &str) -> Self {
        GeminiStream {
            head: None,
            model: model.to_string(),
            candidates: BTreeMap::new(),
            usage: None,
            blocked: false,
        }
    }
}

/// An event's data as the typed answer it carries, or the error it is (Google's error object,
/// also in the one-element array the non-SSE endpoint sends).
fn read_event(data: &str) -> Result<GenerateContentResponse, ProviderError> {
    let typed = match serde_json::from_str::<GenerateContentResponse>(data) {
        Ok(typed) => typed,
        Err(_) => {
            let untyped = stream::event_json(PROVIDER, data)?;
            if let Some(error) = error_from_json(None, &untyped) {
                return Err(error);
            }
            // Read again from the JSON, so the error names the field it is about.
            http::typed_value(PROVIDER, 200, &untyped)?
        }
    };
    match &typed.error {
        Some(error) => Err(error_from_status(None, error)),
        None => Ok(typed),
    }
}

impl Translate for GeminiStream {
    fn event(&mut self, event: sse::Event) -> Result<Vec<Value>, ProviderError> {
        let data = read_event(&event.data)?;
        let response_id = data.response_id.as_str();
        let head = self.head.get_or_insert_with(|| ChunkHead {
            id: answer_id(response_id, || event.data.clone()),
            created: canonical::unix_now(),
            model: model_of(data.model_version.as_deref(), &self.model),
        });
        if let Some(usage) = data.usage_metadata.as_ref().and_then(canonical_usage) {
            self.usage = Some(usage);
        }
        let mut chunks = Vec::new();
        if data.candidates.is_empty() {
            if let Some(block) = data
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_deref())
            {
                self.blocked = true;
                chunks.push(head.role(0));
                chunks.push(head.finish(0, FinishReason::ContentFilter, block));
            }
        }
        for (position, candidate) in data.candidates.iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u64);
            let state = match self.candidates.entry(index) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    chunks.push(head.role(index as u32));
                    e.insert(CandidateState::default())
                }
            };
            let parts = candidate
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or_default();
            for part in parts {
                if let Some(call) = tool_call(part, response_id, index, state.tool_calls) {
                    let mut delta = json!({"index": state.tool_calls, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments}});
                    if let Some(extra) = call.extra_content {
                        delta["extra_content"] = extra;
                    }
                    chunks.push(head.tool_call(index as u32, delta));
                    state.tool_calls += 1;
                } else if let Some(text) = answer_text(part) {
                    chunks.push(head.content(index as u32, text));
                }
            }
            if let Some(native) = candidate.finish_reason.as_deref() {
                let reason = FinishReason::from_gemini(native, state.tool_calls > 0)
                    .ok_or_else(|| canonical::unfinished(PROVIDER, 200, native))?;
                state.finished = true;
                chunks.push(head.finish(index as u32, reason, native));
            }
        }
        Ok(chunks)
    }

    fn finished(&self) -> bool {
        // Only the connection closing ends a Gemini stream.
        false
    }

    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        let complete = self.blocked
            || (!self.candidates.is_empty() && self.candidates.values().all(|c| c.finished));
        if !complete {
            return Err(stream::incomplete(
                PROVIDER,
                "every candidate's finishReason",
            ));
        }
        let (usage, reasoning) = self
            .usage
            .ok_or_else(|| http::invalid(PROVIDER, 200, "the stream carried no usageMetadata"))?;
        let head = self.head.clone().unwrap_or_default();
        Ok(vec![head.usage(&usage, reasoning)])
    }
}
