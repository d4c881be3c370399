//! The OTLP pipeline: spans of [`TARGET`](super::TARGET) batched and posted as protobuf to the
//! collector's `/v1/traces`, over the reqwest client Sluice already has.
//!
//! The batch processor keeps its queue on a thread of its own: ending a span only hands it
//! over (dropped when the queue is full), so a collector that is slow, down or unreachable
//! costs a job nothing. Its exports are sent on the process's tokio runtime; a failing
//! collector is a warning in the log (once, until it answers again), never an error.

use super::TARGET;
use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How long one export may take, connecting included, before it is given up (its spans
/// dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the spans still queued at shutdown may take to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The service name when neither the configuration nor `OTEL_SERVICE_NAME` gives one.
const DEFAULT_SERVICE_NAME: &str = "sluice";

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces: {0}")]
pub struct ExportError(String);

/// A running export of traces; [`Traces::shutdown`] sends what is still queued.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts exporting spans to `url` (the collector's `/v1/traces`), naming the service
    /// `service_name` (else `OTEL_SERVICE_NAME`, else `sluice`). Exports are sent on
    /// `runtime`. Also installs the provider as OpenTelemetry's global one, for the spans
    /// Sluice starts with a time of the past ([`super::queue_wait`]).
    pub fn start(
        url: &url::Url,
        service_name: Option<&str>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Traces, ExportError> {
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| ExportError(e.to_string()))?;
        let transport = Transport {
            client,
            runtime,
            collector: collector_name(url),
            failing: Arc::new(AtomicBool::new(false)),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(transport)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| ExportError(e.to_string()))?;
        let service_name = service_name
            .map(str::to_string)
            .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        let resource = Resource::builder()
            .with_service_name(service_name)
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Traces { provider })
    }

    /// The layer that turns Sluice's spans (and only those) into OpenTelemetry spans, while
    /// `traces` are exported; otherwise a layer that wants nothing (rather than `None`, which
    /// would want every span: each would be built, to be dropped).
    pub fn layer<S>(traces: Option<&Traces>) -> impl Layer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let spans = match traces {
            Some(_) => Targets::new().with_target(TARGET, tracing::Level::TRACE),
            None => Targets::new(),
        };
        traces
            .map(|traces| {
                tracing_opentelemetry::layer()
                    .with_tracer(traces.provider.tracer("sluice"))
                    // The span's own attributes say what it is; the code location, thread
                    // and timings of polls would only add noise to every span.
                    .with_location(false)
                    .with_threads(false)
                    .with_level(false)
                    .with_target(false)
                    .with_tracked_inactivity(false)
            })
            .with_filter(spans)
    }

    /// Sends the spans still queued (waiting at most a few seconds), then stops. Call it
    /// while the runtime given to [`Traces::start`] still runs, off its worker threads.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!("traces still queued at shutdown may be lost: {e}");
        }
    }
}

/// The collector as the log names it: scheme, host and port, never a password or a path.
fn collector_name(url: &url::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// The exporter's HTTP client: Sluice's reqwest, its requests run on the process's runtime
/// (the batch processor's thread has none), telling the log when the collector stops and
/// starts answering.
#[derive(Debug)]
struct Transport {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    collector: String,
    /// Whether the last export failed, so a collector that is down is one warning.
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl HttpClient for Transport {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut answer = http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(answer.body(body))
        });
        let outcome = match sent.await {
            Ok(Ok(Ok(response))) if response.status().is_success() => Ok(response),
            Ok(Ok(Ok(response))) => Err(format!("it answered {}", response.status())),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(e.without_url().to_string()),
            Err(e) => Err(format!("the export task failed: {e}")),
        };
        match outcome {
            Ok(response) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(collector = %self.collector, "sending traces again");
                }
                Ok(response)
            }
            Err(why) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        collector = %self.collector,
                        "cannot send traces ({why}); jobs run on, and spans are dropped until \
                         the collector answers"
                    );
                }
                Err(why.into())
            }
        }
    }
}
