//! The canonical request and response, typed: what the non-OpenAI adapters translate from and
//! back into.
//!
//! Sluice's canonical format is OpenAI's chat-completions body ([`ChatRequest`]). The OpenAI
//! adapter forwards it almost untouched, but Anthropic and Gemini need it taken apart first:
//! system prompts hoisted, content parts told apart, tool-call arguments parsed from their JSON
//! strings, tool results tied back to the calls they answer. [`CanonicalRequest::read`] does
//! that once, with errors naming the field, so both adapters start from the same reading.
//!
//! Every parameter the reading does not type stays in [`CanonicalRequest::rest`]; an adapter
//! that cannot honour a parameter — typed or not — refuses it through [`ParamPolicy`] rather
//! than dropping it silently, unless the deployment opted into `drop_unsupported_params`.
//!
//! The response side is [`CompletionParts::to_value`], the one builder of the canonical
//! `chat.completion` object, and [`FinishReason`] with the mapping of section 6.3 of the
//! provider reference.

mod params;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use params::{bad_request, ParamPolicy, ADVISORY};
pub use request::{
    CanonicalRequest, FieldProblem, Image, Message, Part, ReasoningEffort, ResponseFormat, Tool,
    ToolCall, ToolChoice,
};
pub use response::{unfinished, unix_now, ChoiceParts, CompletionParts, FinishReason, OutToolCall};
