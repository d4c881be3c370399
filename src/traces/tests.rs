//! The spans' switch (disabled without an exporter) and the trace context carried on.

use super::*;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// The subscriber `main` builds when no endpoint is configured: the log (which leaves
/// the target out) and the optional layers, absent. No span of the target is then
/// enabled, so none costs more than the check of its call site.
#[test]
fn without_an_exporter_every_span_is_disabled() {
    let filter = leave_out_of_log(tracing_subscriber::EnvFilter::new("trace"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(filter);
    let subscriber = tracing_subscriber::registry()
        .with(log)
        .with(crate::bench::trips::layer(false))
        .with(export::Traces::layer(None));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(target: TARGET, "job");
        assert!(span.is_disabled());
        assert_eq!(traceparent(&span), None);
        // The log's own spans are untouched.
        assert!(!tracing::info_span!("logged").is_disabled());
    });
}

#[test]
fn a_traceparent_joins_its_trace_and_a_malformed_one_is_ignored() {
    use opentelemetry::trace::TracerProvider as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracing::info_span!(target: TARGET, "job");
        adopt(&span, Some(parent));
        let child = traceparent(&span).expect("a context to carry on");
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
        assert!(!child.contains("00f067aa0ba902b7"), "{child}");

        let span = tracing::info_span!(target: TARGET, "job");
        adopt(&span, Some("00-not-a-trace"));
        let own = traceparent(&span).expect("a trace of its own");
        assert!(!own.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{own}");
    });
}
