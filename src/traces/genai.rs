//! The provider call's span, in OpenTelemetry's semantic conventions for generative AI
//! (the client inference span, as of semantic conventions 1.37, still marked in development):
//! named `chat {gen_ai.request.model}`, of kind CLIENT, with `gen_ai.operation.name`, the
//! provider as `gen_ai.provider.name` (and as `gen_ai.system`, its name before 1.37, which
//! many backends still read), the requested and answering model, the answer's id and finish
//! reasons, the token counts, and `error.type` on a failure. Never the messages or the key.

use super::TARGET;
use crate::job::ChatRequest;
use crate::provider_kind::ProviderKind;
use crate::providers::{Completion, ProviderError};
use opentelemetry::{Array, StringValue, Value};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `gen_ai.provider.name` of an API family, from the conventions' list of well-known values.
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
    }
}

/// The span of one chat call to `model` of a `kind` provider, with what `request` asks for;
/// the answer or the failure is recorded by [`record_answer`] or [`record_failure`].
pub fn chat_span(kind: ProviderKind, model: &str, request: &ChatRequest) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "chat",
        otel.name = format!("chat {model}"),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider_name(kind),
        gen_ai.system = provider_name(kind),
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let extra = &request.extra;
    if let Some(max_tokens) = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|name| extra.get(*name).and_then(serde_json::Value::as_u64))
    {
        span.record("gen_ai.request.max_tokens", count(max_tokens));
    }
    if let Some(temperature) = extra.get("temperature").and_then(serde_json::Value::as_f64) {
        span.record("gen_ai.request.temperature", temperature);
    }
    span
}

/// Records the answer of the call `span` stands for: the model that answered, the answer's
/// id, its finish reasons and the tokens counted.
pub fn record_answer(span: &tracing::Span, completion: &Completion) {
    if span.is_disabled() {
        return;
    }
    let response = &completion.response;
    if let Some(model) = response.get("model").and_then(serde_json::Value::as_str) {
        span.record("gen_ai.response.model", model);
    }
    if let Some(id) = response.get("id").and_then(serde_json::Value::as_str) {
        span.record("gen_ai.response.id", id);
    }
    span.record(
        "gen_ai.usage.input_tokens",
        count(completion.usage.prompt_tokens),
    );
    span.record(
        "gen_ai.usage.output_tokens",
        count(completion.usage.completion_tokens),
    );
    let reasons: Vec<StringValue> = response
        .get("choices")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|choice| choice.get("finish_reason")?.as_str())
        .map(|reason| StringValue::from(reason.to_string()))
        .collect();
    span.set_attribute(
        "gen_ai.response.finish_reasons",
        Value::Array(Array::String(reasons)),
    );
}

/// A count as an OpenTelemetry integer (signed 64 bits): the span bridge would write an
/// unsigned one as text.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records the failure of the call `span` stands for: its kind as `error.type` (the stable
/// name Sluice stores; never the provider's message, which may quote the request).
pub fn record_failure(span: &tracing::Span, error: &ProviderError) {
    super::record_error(span, error.kind.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_is_named_as_the_conventions_name_it() {
        assert_eq!(provider_name(ProviderKind::Openai), "openai");
        assert_eq!(provider_name(ProviderKind::Anthropic), "anthropic");
        assert_eq!(provider_name(ProviderKind::Gemini), "gcp.gemini");
    }
}
