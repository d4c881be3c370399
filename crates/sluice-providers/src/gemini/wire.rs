//! Gemini's `generateContent` wire format as serde types (provider reference, section 5),
//! written from Google's documentation and the `google-genai` SDK's mappers, not from the
//! simulator. camelCase on the wire.
//!
//! The request side borrows from the [`CanonicalRequest`](crate::canonical) it is
//! built from. The response side reads only what Sluice uses: fields Google adds later are
//! ignored (no `deny_unknown_fields`), every field the documentation marks optional is an
//! `Option`, and a `functionCall` without its `name` is an `InvalidResponse` naming the field
//! instead of a call to a function called "".

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GenerateContentRequest`: the body of `generateContent` (streamed or not) and of an inline
/// batch request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    pub contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tools<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
}

/// A turn (`user` or `model`), or the system instruction (no role).
#[derive(Debug, Serialize)]
pub struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub parts: Vec<Part<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Model,
}

/// A request part: exactly one of its data fields is set (a call may carry its
/// `thoughtSignature` beside it).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Part<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<InlineData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse<'a>>,
    /// Handed back exactly as Gemini gave it with the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineData<'a> {
    pub mime_type: &'a str,
    pub data: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData<'a> {
    pub file_uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<&'static str>,
}

/// An earlier turn's call, sent back. `id` only when Gemini issued it.
#[derive(Debug, Serialize)]
pub struct FunctionCallOut<'a> {
    pub name: &'a str,
    pub args: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

/// A tool's answer. `response` must be an object: the output goes under `output`.
#[derive(Debug, Serialize)]
pub struct FunctionResponse<'a> {
    pub name: &'a str,
    pub response: FunctionOutput<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct FunctionOutput<'a> {
    pub output: ToolOutput<'a>,
}

/// A tool's output: a JSON answer as itself, anything else as a string.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ToolOutput<'a> {
    Json(Value),
    Text(&'a str),
}

/// `generationConfig`; left out when nothing is set.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<&'a Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.stop_sequences.is_empty()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.frequency_penalty.is_none()
            && self.presence_penalty.is_none()
            && self.thinking_config.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
    }
}

/// `thinkingConfig`: a token budget (Gemini 2.5) or a level (later models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ThinkingConfig {
    ThinkingBudget(u32),
    ThinkingLevel(&'static str),
}

/// `tools[]`: Sluice sends one entry with every function.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tools<'a> {
    pub function_declarations: Vec<FunctionDeclaration<'a>>,
}

/// A function, its arguments in plain JSON Schema (`parametersJsonSchema`; `parameters`
/// takes only an OpenAPI subset).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig<'a> {
    pub function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig<'a> {
    /// `AUTO`, `ANY` (must call), `NONE`.
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<[&'a str; 1]>,
}

/// `GenerateContentResponse`: a 2xx answer, each event of a stream, a batch's inline answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: Option<String>,
    #[serde(default)]
    pub response_id: String,
    /// Set only on an error delivered with a success status (or inside a stream).
    pub error: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub index: Option<u64>,
    pub content: Option<CandidateContent>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CandidateContent {
    #[serde(default)]
    pub parts: Vec<ResponsePart>,
}

/// An answer part: text (answer or, with `thought: true`, a thought summary), or a
/// function call with the signature Gemini wants back on the next turn.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponsePart {
    pub text: Option<String>,
    pub thought: Option<bool>,
    pub function_call: Option<FunctionCall>,
    pub thought_signature: Option<Value>,
}

/// `FunctionCall`: `{id?, name, args}`. Fields in the order Gemini writes them, so a call
/// written back out (the seed of an id made for a call Gemini gave none) reads the same.
#[derive(Debug, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    pub block_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    pub prompt_token_count: Option<u64>,
    pub candidates_token_count: Option<u64>,
    pub cached_content_token_count: Option<u64>,
    pub thoughts_token_count: Option<u64>,
    pub tool_use_prompt_token_count: Option<u64>,
}

/// One inline request of a batch: the request and the key its answer comes back with.
#[derive(Debug, Serialize)]
pub struct BatchItem<'a> {
    pub request: GenerateContentRequest<'a>,
    pub metadata: BatchKey<'a>,
}

#[derive(Debug, Serialize)]
pub struct BatchKey<'a> {
    pub key: &'a str,
}
