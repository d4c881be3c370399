//! Traces: one span tree per job, exported over OTLP when `[telemetry] otlp_endpoint` says
//! where (see `docs/observability.md`).
//!
//! The spans are `tracing` spans with the target [`TARGET`], which the log leaves out and
//! which only the OpenTelemetry layer ([`export`]) takes: without an endpoint that layer is
//! absent, no subscriber wants the target, and every span here is disabled where it is
//! declared (its fields are not even evaluated), so tracing costs the hot path nothing.
//!
//! A job crosses processes through the queue: the submit span's W3C trace context
//! (`traceparent`) rides in the envelope (both backends) and in the AMQP message's headers
//! (RabbitMQ), and the worker's spans take it as their parent ([`adopt`]), so one trace
//! covers the HTTP request, the submission, the wait on the queue, every attempt with its
//! provider call, and the settlement. An incoming HTTP `traceparent` is the request span's
//! parent in turn.
//!
//! Nothing secret goes on a span: no key (its id only), no token, no message content.

pub mod export;
pub mod genai;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span Sluice exports, and of nothing else.
pub const TARGET: &str = "sluice_spans";

/// The W3C header (and envelope field) carrying a span's context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span`, to carry its context to another process; `None` when the span
/// is disabled (nothing is exported) or has no valid context.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// `filter` (the log's) leaving the spans out: they are for traces, and log lines stay as
/// they are whether traces are exported or not.
pub fn leave_out_of_log(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    filter.add_directive(format!("{TARGET}=off").parse().expect("a valid directive"))
}

/// Makes the context `traceparent` names the parent of `span` (not yet entered), so it joins
/// that trace. A malformed `traceparent` is ignored: the span starts a trace of its own, as
/// W3C Trace Context says.
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    if span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if opentelemetry::trace::TraceContextExt::span(&context)
        .span_context()
        .is_valid()
    {
        // Fails only on a span already started, which callers never pass.
        let _ = span.set_parent(context);
    }
}

/// Records how long job `id` waited between its submission (the time in its UUIDv7 id) and
/// the start of its first attempt, as a span `queue wait` beside `run` (the job's span in
/// the worker): under the submitter's span when `traceparent` names it, else under `run`.
/// Nothing for an id that holds no time (a foreign producer's UUIDv4).
pub fn queue_wait(run: &tracing::Span, traceparent: Option<&str>, id: uuid::Uuid) {
    use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _};
    if run.is_disabled() {
        return;
    }
    let Some((secs, nanos)) = id.get_timestamp().map(|t| t.to_unix()) else {
        return;
    };
    let submitted = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    let remote = traceparent.map(|traceparent| {
        let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
        TraceContextPropagator::new().extract(&carrier)
    });
    let parent = match remote {
        Some(context) if context.span().span_context().is_valid() => context,
        _ => run.context(),
    };
    let tracer = opentelemetry::global::tracer("sluice");
    let mut span = tracer.build_with_context(
        opentelemetry::trace::SpanBuilder::from_name("queue wait")
            .with_start_time(submitted)
            .with_attributes([opentelemetry::KeyValue::new(
                "sluice.job.id",
                id.to_string(),
            )]),
        &parent,
    );
    span.end_with_timestamp(std::time::SystemTime::now());
}

/// Marks `span` failed: OpenTelemetry's error status, and `error.type` (a stable name,
/// never a message, which could quote input).
pub fn record_error(span: &tracing::Span, error_type: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_status(opentelemetry::trace::Status::error(error_type.to_string()));
    span.set_attribute("error.type", error_type.to_string());
}

#[cfg(test)]
mod tests;
