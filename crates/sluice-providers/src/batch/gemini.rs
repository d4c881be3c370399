//! Gemini's batch mode (provider reference, section 5.4), inline flavour: the requests travel
//! in the create call, the answers come back inside the batch itself.
//!
//! `POST {base}/models/{model}:batchGenerateContent` with
//! `{"batch":{"displayName","inputConfig":{"requests":{"requests":[{"request","metadata":{"key"}}]}}}}`
//! answers with a long-running Operation named `batches/{id}`; that name is the batch id Sluice
//! keeps, and `GET {base}/{name}` polls it. The state is `metadata.state` (`BATCH_STATE_*` on
//! the wire, `JOB_STATE_*` as the SDK spells it; both are read). The answers are
//! `metadata.output.inlinedResponses.inlinedResponses[]` (where the SDK reads them; also
//! accepted under the Operation's `response` once it is `done`), each `{response | error,
//! metadata}` matched by the `metadata.key` Sluice set to the `custom_id`.
//!
//! Inline mode is limited to 20 MB. The file flavour (an uploaded JSONL, results in a
//! `responsesFile`) is for larger batches and not implemented: the collector keeps Gemini
//! batches within the inline limits below.

use super::{
    fetch_json, inline_body, require_ended, required_str, translation_call, unreadable, BatchApi,
    BatchCall, BatchLimits, BatchProgress, BatchRequest, ItemOutcome, ItemResult,
};
use crate::gemini::wire::{BatchItem, BatchKey};
use crate::gemini::{
    authorized, error_from_json, model_method_url, parse_response, read, request_body,
    GeminiProvider,
};
use crate::{http, CallOptions, ProviderError};
use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::provider_kind::ProviderKind;

const PROVIDER: &str = "gemini";
/// Inline batches must stay under 20 MB (decimal, the smaller reading), less 1 KB for the
/// envelope around the requests. Google documents no request count for inline batches; 5,000
/// is chosen because the answers come back inline too, in the one Operation body a poll or a
/// results call reads whole within one call's timeout: with answers often several times the
/// size of their requests, a 20 MB batch of many small requests would make that body very
/// large, and 5,000 keeps it in the tens of MB while still filling most batches by size.
const LIMITS: BatchLimits = BatchLimits::of(ProviderKind::Gemini);

/// Gemini's batch tier (Developer API).
#[derive(Debug, Clone)]
pub struct GeminiBatch {
    base_url: String,
    http: reqwest::Client,
}

impl GeminiBatch {
    /// The same base URL as [`crate::gemini::GeminiProvider::new`]: the API root
    /// including its version, e.g. `https://generativelanguage.googleapis.com/v1beta`.
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        GeminiBatch {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    /// `{base}/batches/{id}`, for an id given with or without its `batches/` prefix.
    fn batch_url(&self, id: &str) -> String {
        let id = id.strip_prefix("batches/").unwrap_or(id);
        format!("{}/batches/{id}", self.base_url)
    }

    async fn operation(&self, call: &BatchCall<'_>, id: &str) -> Result<Value, ProviderError> {
        let request = authorized(self.http.get(self.batch_url(id)), call.api_key);
        fetch_json::<GeminiProvider>(call, request).await
    }
}

/// One inline request, serialised.
fn item(
    model: &str,
    options: CallOptions,
    request: &BatchRequest,
) -> Result<Vec<u8>, ProviderError> {
    let call = translation_call(model, options, request);
    let canonical = read(&call)?;
    let item = BatchItem {
        request: request_body(&call, &canonical)?,
        metadata: BatchKey {
            key: &request.custom_id,
        },
    };
    Ok(serde_json::to_vec(&item).expect("a request body serialises"))
}

/// The create body up to its list of requests:
/// `{"batch":{"displayName","inputConfig":{"requests":{"requests":[…]}}}}`.
fn envelope_open(label: &str) -> String {
    let label = serde_json::to_string(label).expect("a string serialises");
    format!(r#"{{"batch":{{"displayName":{label},"inputConfig":{{"requests":{{"requests":["#)
}

/// Where a batch Operation says the batch stands.
pub fn progress(operation: &Value) -> Result<BatchProgress, ProviderError> {
    let status = required_str(PROVIDER, operation, "/metadata/state", "the batch")?.to_string();
    let state = status
        .strip_prefix("BATCH_STATE_")
        .or_else(|| status.strip_prefix("JOB_STATE_"))
        .unwrap_or_default();
    Ok(match state {
        "PENDING" | "RUNNING" => BatchProgress::Running { status },
        "SUCCEEDED" | "CANCELLED" | "EXPIRED" => BatchProgress::Ended { status },
        "FAILED" => BatchProgress::Failed {
            message: operation
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("the batch failed without saying why")
                .to_string(),
            status,
        },
        _ => {
            return Err(http::invalid(
                PROVIDER,
                200,
                format!("the batch has an unknown state \"{status}\""),
            ))
        }
    })
}

/// The inline answers of an ended batch's Operation.
fn inlined_responses(operation: &Value) -> Result<&[Value], ProviderError> {
    ["/metadata/output", "/response"]
        .iter()
        .find_map(|at| {
            operation
                .pointer(&format!("{at}/inlinedResponses/inlinedResponses"))
                .and_then(Value::as_array)
        })
        .map(Vec::as_slice)
        .ok_or_else(|| {
            let problem = if operation.pointer("/metadata/output/responsesFile").is_some() {
                "the batch's output is a responsesFile; Sluice submits inline and reads only inlinedResponses"
            } else {
                "the ended batch has no \"metadata.output.inlinedResponses.inlinedResponses\""
            };
            http::invalid(PROVIDER, 200, problem)
        })
}

/// One inline answer's outcome (its key already read).
pub fn outcome(custom_id: &str, model: &str, answer: &Value) -> ItemOutcome {
    if let Some(status) = answer.get("error").filter(|e| !e.is_null()) {
        return ItemOutcome::Failed(rpc_status_error(status));
    }
    match answer.get("response") {
        Some(response) => match parse_response(200, response, model) {
            Ok(completion) => ItemOutcome::Succeeded(completion),
            Err(error) => ItemOutcome::Failed(error),
        },
        None => unreadable(PROVIDER, custom_id, "has neither a response nor an error"),
    }
}

/// A `google.rpc.Status` (`{code, message, details}`, `code` a gRPC code) classified by the
/// real-time reader, which expects the HTTP error form (`{"error":{code, message, status,
/// details}}`, `code` an HTTP status): the gRPC code is given its canonical name and HTTP
/// status, as Google's own HTTP mapping does.
pub fn rpc_status_error(status: &Value) -> ProviderError {
    let code = status.get("code").and_then(Value::as_u64).unwrap_or(2);
    let (name, http_status) = match code {
        1 => ("CANCELLED", 499),
        3 => ("INVALID_ARGUMENT", 400),
        4 => ("DEADLINE_EXCEEDED", 504),
        5 => ("NOT_FOUND", 404),
        6 => ("ALREADY_EXISTS", 409),
        7 => ("PERMISSION_DENIED", 403),
        8 => ("RESOURCE_EXHAUSTED", 429),
        9 => ("FAILED_PRECONDITION", 400),
        10 => ("ABORTED", 409),
        11 => ("OUT_OF_RANGE", 400),
        12 => ("UNIMPLEMENTED", 501),
        13 => ("INTERNAL", 500),
        14 => ("UNAVAILABLE", 503),
        16 => ("UNAUTHENTICATED", 401),
        // 2 UNKNOWN, 15 DATA_LOSS, and anything newer: the server's problem.
        _ => ("UNKNOWN", 500),
    };
    let mut error = status.clone();
    if let Some(fields) = error.as_object_mut() {
        fields.insert("code".into(), http_status.into());
        fields.entry("status").or_insert_with(|| name.into());
        fields
            .entry("message")
            .or_insert_with(|| format!("{name} with no message").into());
    }
    error_from_json(None, &json!({ "error": error }))
        .unwrap_or_else(|| http::invalid(PROVIDER, 200, "an error that is not a google.rpc.Status"))
}

#[async_trait]
impl BatchApi for GeminiBatch {
    /// The inline request as it stands in the create body, and the comma that separates it.
    fn encoded_len(
        &self,
        model: &str,
        options: CallOptions,
        request: &BatchRequest,
    ) -> Result<usize, ProviderError> {
        Ok(item(model, options, request)?.len() + 1)
    }

    async fn submit(
        &self,
        call: BatchCall<'_>,
        requests: &[BatchRequest],
        label: &str,
    ) -> Result<String, ProviderError> {
        let body = inline_body(
            PROVIDER,
            LIMITS,
            requests,
            |request| item(call.model, call.options, request),
            (&envelope_open(label), "]}}}}"),
        )?;
        let url = model_method_url(&self.base_url, call.model, "batchGenerateContent");
        let create = authorized(self.http.post(url), call.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let operation = fetch_json::<GeminiProvider>(&call, create).await?;
        let name = required_str(PROVIDER, &operation, "/name", "the batch operation")?;
        if !name.starts_with("batches/") {
            return Err(http::invalid(
                PROVIDER,
                200,
                format!("the batch operation's name \"{name}\" is not batches/…"),
            ));
        }
        Ok(name.to_string())
    }

    async fn poll(&self, call: BatchCall<'_>, id: &str) -> Result<BatchProgress, ProviderError> {
        progress(&self.operation(&call, id).await?)
    }

    async fn results(
        &self,
        call: BatchCall<'_>,
        id: &str,
    ) -> Result<Vec<ItemResult>, ProviderError> {
        let operation = self.operation(&call, id).await?;
        require_ended(PROVIDER, id, progress(&operation)?)?;
        // A cancelled or expired batch may carry no output at all: nothing ran.
        let answers = match inlined_responses(&operation) {
            Ok(answers) => answers,
            Err(_) if !status_is(&operation, "SUCCEEDED") => &[],
            Err(error) => return Err(error),
        };
        answers
            .iter()
            .map(|answer| {
                let key = required_str(PROVIDER, answer, "/metadata/key", "an inlined response")?;
                Ok(ItemResult {
                    custom_id: key.to_string(),
                    outcome: outcome(key, call.model, answer),
                })
            })
            .collect()
    }

    async fn cancel(&self, call: BatchCall<'_>, id: &str) -> Result<(), ProviderError> {
        let url = format!("{}:cancel", self.batch_url(id));
        let request = authorized(self.http.post(url), call.api_key);
        // The answer is an empty object; only its status matters.
        fetch_json::<GeminiProvider>(&call, request).await?;
        Ok(())
    }
}

/// Whether the Operation's state is `state` in either spelling.
fn status_is(operation: &Value, state: &str) -> bool {
    operation
        .pointer("/metadata/state")
        .and_then(Value::as_str)
        .is_some_and(|s| s.ends_with(&format!("_STATE_{state}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use sluice_core::job::ChatRequest;

    #[test]
    fn an_item_is_the_realtime_request_keyed_by_custom_id() {
        let r = BatchRequest {
            custom_id: "job-9".into(),
            request: serde_json::from_value::<ChatRequest>(json!({"model": "m",
                "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
            .unwrap(),
        };
        let bytes = item("gemini-2.5-flash", CallOptions::default(), &r).unwrap();
        let item: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(item["metadata"], json!({"key": "job-9"}));
        assert_eq!(item["request"]["contents"][0]["parts"][0]["text"], "hi");
        assert_eq!(item["request"]["generationConfig"]["maxOutputTokens"], 5);
        let len = GeminiBatch::new("http://x/v1beta", reqwest::Client::new())
            .encoded_len("gemini-2.5-flash", CallOptions::default(), &r)
            .unwrap();
        assert_eq!(len, bytes.len() + 1);
    }

    #[test]
    fn states_map_in_both_spellings() {
        let p = |s: &str| progress(&json!({"name": "batches/1", "metadata": {"state": s}}));
        for s in ["BATCH_STATE_PENDING", "JOB_STATE_RUNNING"] {
            assert_eq!(p(s).unwrap(), BatchProgress::Running { status: s.into() });
        }
        for s in [
            "BATCH_STATE_SUCCEEDED",
            "JOB_STATE_CANCELLED",
            "BATCH_STATE_EXPIRED",
        ] {
            assert_eq!(p(s).unwrap(), BatchProgress::Ended { status: s.into() });
        }
        let failed = progress(&json!({"metadata": {"state": "BATCH_STATE_FAILED"},
            "error": {"code": 3, "message": "bad input"}}))
        .unwrap();
        assert_eq!(
            failed,
            BatchProgress::Failed {
                status: "BATCH_STATE_FAILED".into(),
                message: "bad input".into()
            }
        );
        assert_eq!(
            p("BATCH_STATE_UNSPECIFIED").unwrap_err().kind,
            ErrorKind::InvalidResponse
        );
        assert!(progress(&json!({"done": false}))
            .unwrap_err()
            .message
            .contains("metadata.state"));
    }

    #[test]
    fn rpc_statuses_classify_like_http_errors() {
        for (code, kind) in [
            (3, ErrorKind::BadRequest),
            (8, ErrorKind::RateLimited),
            (13, ErrorKind::ServerError),
            (14, ErrorKind::ServerError),
            (4, ErrorKind::Timeout),
            (5, ErrorKind::NotFound),
            (2, ErrorKind::ServerError),
        ] {
            let e = rpc_status_error(&json!({"code": code, "message": "m"}));
            assert_eq!(e.kind, kind, "{code}");
            assert_eq!(e.message, "m");
        }
        let e = rpc_status_error(&json!({"code": 8, "message": "slow down", "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}]}));
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(20)));
        assert_eq!(e.status, Some(429));
    }

    #[test]
    fn answers_are_read_where_the_sdk_reads_them_or_under_response() {
        let answers =
            json!({"inlinedResponses": {"inlinedResponses": [{"metadata": {"key": "a"}}]}});
        let in_metadata =
            json!({"metadata": {"state": "BATCH_STATE_SUCCEEDED", "output": answers}});
        let in_response = json!({"metadata": {"state": "BATCH_STATE_SUCCEEDED"}, "done": true, "response": answers});
        assert_eq!(inlined_responses(&in_metadata).unwrap().len(), 1);
        assert_eq!(inlined_responses(&in_response).unwrap().len(), 1);
        let file = json!({"metadata": {"output": {"responsesFile": "files/x"}}});
        assert!(inlined_responses(&file)
            .unwrap_err()
            .message
            .contains("responsesFile"));
    }

    /// A batch answer names its model as a resource (`models/gemini-2.5-flash`), a real-time
    /// one as clients write it: both read as the latter, as does a deployment configured
    /// with the resource name and an answer without `modelVersion`.
    #[test]
    fn an_answer_names_its_model_as_clients_write_it_on_either_tier() {
        let response = |version: Option<&str>| {
            let mut response = json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}});
            if let Some(version) = version {
                response["modelVersion"] = json!(version);
            }
            response
        };
        let realtime =
            parse_response(200, &response(Some("gemini-2.5-flash")), "gemini-2.5-flash").unwrap();
        assert_eq!(realtime.response["model"], "gemini-2.5-flash");
        for (version, called) in [
            (Some("models/gemini-2.5-flash"), "gemini-2.5-flash"),
            (None, "models/gemini-2.5-flash"),
        ] {
            let answer = json!({"metadata": {"key": "a"}, "response": response(version)});
            match outcome("a", called, &answer) {
                ItemOutcome::Succeeded(c) => {
                    assert_eq!(
                        c.response["model"], realtime.response["model"],
                        "{version:?}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn answers_map() {
        let ok = json!({"metadata": {"key": "a"}, "response": {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}});
        match outcome("a", "gemini-x", &ok) {
            ItemOutcome::Succeeded(c) => assert_eq!(c.usage.prompt_tokens, 4),
            other => panic!("{other:?}"),
        }
        let err =
            json!({"metadata": {"key": "b"}, "error": {"code": 3, "message": "Invalid value"}});
        match outcome("b", "gemini-x", &err) {
            ItemOutcome::Failed(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
            other => panic!("{other:?}"),
        }
        match outcome("c", "gemini-x", &json!({"metadata": {"key": "c"}})) {
            ItemOutcome::Failed(e) => assert_eq!(e.kind, ErrorKind::InvalidResponse),
            other => panic!("{other:?}"),
        }
    }
}
