//! Anthropic's Message Batches (provider reference, section 4): one create call carrying
//! every request, a batch object to poll, results as JSONL at the batch's `results_url`.
//!
//! Each request is `{"custom_id","params":{…}}`, `params` the non-streaming Messages body the
//! real-time adapter builds (so `max_tokens` defaults and the unsupported-parameter policy are
//! the same). Anthropic validates `params` only once the batch runs, so a request it refuses
//! comes back as an `errored` result, classified here by the real-time classifier: an
//! `invalid_request_error` is the request's fault, an `api_error` or `overloaded_error` is
//! worth another run.
//!
//! `processing_status` says only whether the batch is still running; what happened to each
//! request is in its result (`succeeded`, `errored`, `canceled`, `expired`).

use super::{
    fetch, fetch_json, inline_body, jsonl_lines, require_ended, required_str, translation_call,
    unreadable, BatchApi, BatchCall, BatchLimits, BatchProgress, BatchRequest, ItemOutcome,
    ItemResult,
};
use crate::anthropic::wire::BatchItem;
use crate::anthropic::{
    authorized, error_from_json, message_from_json, read, request_body, AnthropicProvider,
};
use crate::{http, CallOptions, ProviderError};
use async_trait::async_trait;
use serde_json::Value;
use sluice_core::provider_kind::ProviderKind;

const PROVIDER: &str = "anthropic";
/// Documented: 100,000 requests or 256 MB per batch, whichever comes first. The bytes are
/// the create body; [`BatchApi::encoded_len`] counts each request and the comma after it,
/// and the 1 KB taken off leaves room for the `{"requests":[…]}` around them.
const LIMITS: BatchLimits = BatchLimits::of(ProviderKind::Anthropic);

/// Anthropic's batch tier.
#[derive(Debug, Clone)]
pub struct AnthropicBatch {
    endpoint: String,
    http: reqwest::Client,
}

impl AnthropicBatch {
    /// The same base URL as [`crate::anthropic::AnthropicProvider::new`]: the API
    /// root without the version path, e.g. `https://api.anthropic.com`.
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        AnthropicBatch {
            endpoint: format!(
                "{}/v1/messages/batches",
                base_url.into().trim_end_matches('/')
            ),
            http,
        }
    }

    async fn batch(&self, call: &BatchCall<'_>, id: &str) -> Result<Value, ProviderError> {
        let request = authorized(
            self.http.get(format!("{}/{id}", self.endpoint)),
            call.api_key,
        );
        fetch_json::<AnthropicProvider>(call, request).await
    }
}

/// One request of the create body, serialised.
fn item(
    model: &str,
    options: CallOptions,
    request: &BatchRequest,
) -> Result<Vec<u8>, ProviderError> {
    let call = translation_call(model, options, request);
    let canonical = read(&call)?;
    let item = BatchItem {
        custom_id: &request.custom_id,
        params: request_body(&call, &canonical, false)?,
    };
    Ok(serde_json::to_vec(&item).expect("a request body serialises"))
}

/// Where a batch object says the batch stands. Anthropic has no failed state: a batch it
/// refuses as a whole is refused at create time with an HTTP error.
pub fn progress(batch: &Value) -> Result<BatchProgress, ProviderError> {
    let status = required_str(PROVIDER, batch, "/processing_status", "the batch")?.to_string();
    match status.as_str() {
        "in_progress" | "canceling" => Ok(BatchProgress::Running { status }),
        "ended" => Ok(BatchProgress::Ended { status }),
        other => Err(http::invalid(
            PROVIDER,
            200,
            format!("the batch has an unknown processing_status \"{other}\""),
        )),
    }
}

/// One result line's outcome (its `custom_id` already read).
pub fn outcome(custom_id: &str, line: &Value) -> ItemOutcome {
    let result = line.get("result").unwrap_or(&Value::Null);
    match result.get("type").and_then(Value::as_str) {
        Some("succeeded") => match result.get("message") {
            Some(message) => match message_from_json(200, message) {
                Ok(completion) => ItemOutcome::Succeeded(completion),
                Err(error) => ItemOutcome::Failed(error),
            },
            None => unreadable(PROVIDER, custom_id, "succeeded with no message"),
        },
        // `error` is the error body a real-time call would have had: {"type":"error","error":{…}}.
        Some("errored") => match result.get("error").and_then(|e| error_from_json(None, e)) {
            Some(error) => ItemOutcome::Failed(error),
            None => unreadable(PROVIDER, custom_id, "errored with no readable error"),
        },
        Some("canceled") => ItemOutcome::Cancelled,
        Some("expired") => ItemOutcome::Expired,
        Some(other) => unreadable(
            PROVIDER,
            custom_id,
            format!("has an unknown type \"{other}\""),
        ),
        None => unreadable(PROVIDER, custom_id, "has no result.type"),
    }
}

#[async_trait]
impl BatchApi for AnthropicBatch {
    /// The request as it stands in the create body, and the comma that separates it.
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
        _label: &str,
    ) -> Result<String, ProviderError> {
        // Anthropic keeps no label on a batch; the returned id is what identifies it.
        let body = inline_body(
            PROVIDER,
            LIMITS,
            requests,
            |request| item(call.model, call.options, request),
            (r#"{"requests":["#, "]}"),
        )?;
        let create = authorized(self.http.post(&self.endpoint), call.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let batch = fetch_json::<AnthropicProvider>(&call, create).await?;
        Ok(required_str(PROVIDER, &batch, "/id", "the created batch")?.to_string())
    }

    async fn poll(&self, call: BatchCall<'_>, id: &str) -> Result<BatchProgress, ProviderError> {
        progress(&self.batch(&call, id).await?)
    }

    async fn results(
        &self,
        call: BatchCall<'_>,
        id: &str,
    ) -> Result<Vec<ItemResult>, ProviderError> {
        let batch = self.batch(&call, id).await?;
        require_ended(PROVIDER, id, progress(&batch)?)?;
        let url = required_str(PROVIDER, &batch, "/results_url", "the ended batch")?;
        // The SDK asks for the JSONL this way; the same key and version headers as the API.
        let request = authorized(self.http.get(url), call.api_key)
            .header(reqwest::header::ACCEPT, "application/binary");
        let answer = fetch::<AnthropicProvider>(&call, request).await?;
        let mut results = Vec::new();
        for line in jsonl_lines(PROVIDER, call.api_key, "the results", &answer.body) {
            let line = line?;
            let custom_id = required_str(PROVIDER, &line, "/custom_id", "a result line")?;
            results.push(ItemResult {
                custom_id: custom_id.to_string(),
                outcome: outcome(custom_id, &line),
            });
        }
        Ok(results)
    }

    async fn cancel(&self, call: BatchCall<'_>, id: &str) -> Result<(), ProviderError> {
        let request = authorized(
            self.http.post(format!("{}/{id}/cancel", self.endpoint)),
            call.api_key,
        );
        fetch_json::<AnthropicProvider>(&call, request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;
    use sluice_core::job::ChatRequest;

    fn request(body: Value) -> BatchRequest {
        BatchRequest {
            custom_id: "job-1".into(),
            request: serde_json::from_value::<ChatRequest>(body).unwrap(),
        }
    }

    #[test]
    fn an_item_is_the_realtime_body_and_the_policy_applies() {
        let r = request(json!({"model": "m", "stream": true, "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}));
        let plain: Value =
            serde_json::from_slice(&item("claude-x", CallOptions::default(), &r).unwrap()).unwrap();
        assert_eq!(plain["custom_id"], "job-1");
        assert_eq!(plain["params"]["model"], "claude-x");
        assert_eq!(plain["params"]["system"], "be brief");
        assert!(plain["params"]["max_tokens"].is_u64());
        assert!(plain["params"].get("stream").is_none());

        let seeded = request(
            json!({"model": "m", "seed": 7, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let batch = AnthropicBatch::new("http://x", reqwest::Client::new());
        let e = batch
            .encoded_len("claude-x", CallOptions::default(), &seeded)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("seed"), "{}", e.message);
        let dropping = CallOptions {
            drop_unsupported_params: true,
            ..Default::default()
        };
        let len = batch.encoded_len("claude-x", dropping, &seeded).unwrap();
        assert_eq!(len, item("claude-x", dropping, &seeded).unwrap().len() + 1);
    }

    #[test]
    fn statuses_map() {
        let p = |s: &str| progress(&json!({"processing_status": s}));
        assert_eq!(
            p("in_progress").unwrap(),
            BatchProgress::Running {
                status: "in_progress".into()
            }
        );
        assert_eq!(
            p("canceling").unwrap(),
            BatchProgress::Running {
                status: "canceling".into()
            }
        );
        assert_eq!(
            p("ended").unwrap(),
            BatchProgress::Ended {
                status: "ended".into()
            }
        );
        assert_eq!(p("paused").unwrap_err().kind, ErrorKind::InvalidResponse);
    }

    #[test]
    fn results_map() {
        let ok = json!({"custom_id": "a", "result": {"type": "succeeded", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 5, "output_tokens": 2, "service_tier": "batch"}}}});
        match outcome("a", &ok) {
            ItemOutcome::Succeeded(c) => {
                assert_eq!(c.response["choices"][0]["message"]["content"], "hi");
                assert_eq!(c.usage.completion_tokens, 2);
            }
            other => panic!("{other:?}"),
        }
        let errored = |kind: &str| {
            json!({"custom_id": "b", "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": kind, "message": "something"}, "request_id": null}}})
        };
        for (kind, expected) in [
            ("invalid_request_error", ErrorKind::BadRequest),
            ("api_error", ErrorKind::ServerError),
            ("overloaded_error", ErrorKind::ServerError),
        ] {
            match outcome("b", &errored(kind)) {
                ItemOutcome::Failed(e) => {
                    assert_eq!(e.kind, expected, "{kind}");
                    assert_eq!(e.kind.is_retryable(), kind != "invalid_request_error");
                }
                other => panic!("{other:?}"),
            }
        }
        let typed = |t: &str| json!({"custom_id": "c", "result": {"type": t}});
        assert!(matches!(
            outcome("c", &typed("canceled")),
            ItemOutcome::Cancelled
        ));
        assert!(matches!(
            outcome("c", &typed("expired")),
            ItemOutcome::Expired
        ));
        for broken in [
            typed("weird"),
            typed("errored"),
            typed("succeeded"),
            json!({"custom_id": "c"}),
        ] {
            match outcome("c", &broken) {
                ItemOutcome::Failed(e) => assert_eq!(e.kind, ErrorKind::InvalidResponse),
                other => panic!("{other:?}"),
            }
        }
    }
}
