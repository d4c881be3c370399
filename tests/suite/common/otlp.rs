//! An OTLP/HTTP receiver of the test's own, as an OpenTelemetry collector's is: `POST
//! /v1/traces` on 127.0.0.1, protobuf bodies decoded with the real OTLP types
//! (`opentelemetry-proto`) and kept, span by span, for the test to read.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A span as the receiver got it; ids in lowercase hex, as a `traceparent` writes them.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP's `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, Attribute>,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Text(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Texts(Vec<String>),
    Other(String),
}

impl ReceivedSpan {
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            Attribute::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Attribute::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn texts(&self, key: &str) -> Option<&[String]> {
        match self.attributes.get(key)? {
            Attribute::Texts(texts) => Some(texts),
            _ => None,
        }
    }
}

/// The receiver, serving until dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`, the base URL `otlp_endpoint` takes.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// A receiver on `listener` (a port that refused connections until now, say).
    pub fn start_on(listener: tokio::net::TcpListener) -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(spans.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            endpoint,
            spans,
            task,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans received so far of trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|span| span.trace_id == trace_id)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new()).into_response();
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match value(kv) {
                Attribute::Text(name) => Some(name),
                _ => None,
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    status_code: span.status.map_or(0, |s| s.code),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value(kv)))
                        .collect(),
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn value(kv: &KeyValue) -> Attribute {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(text)) => Attribute::Text(text.clone()),
        Some(Any::IntValue(n)) => Attribute::Int(*n),
        Some(Any::DoubleValue(x)) => Attribute::Double(*x),
        Some(Any::BoolValue(b)) => Attribute::Bool(*b),
        Some(Any::ArrayValue(array)) => Attribute::Texts(
            array
                .values
                .iter()
                .filter_map(|v| match &v.value {
                    Some(Any::StringValue(text)) => Some(text.clone()),
                    _ => None,
                })
                .collect(),
        ),
        other => Attribute::Other(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
