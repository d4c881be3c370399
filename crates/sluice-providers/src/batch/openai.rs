//! OpenAI's Batch API (provider reference, section 2): an uploaded JSONL file, a batch object
//! to poll, and results in two files.
//!
//! Submitting is two calls: `POST {base}/files` (multipart, `purpose=batch`) uploads one line
//! per request, `{"custom_id","method":"POST","url":"/v1/chat/completions","body":{…}}`, the
//! body built by the real-time adapter; `POST {base}/batches` then starts the batch on that
//! file with Sluice's label in `metadata.sluice_batch`.
//!
//! Results come from two files, and both must be read: a `completed` batch can still hold
//! failed requests. `output_file_id` has the lines whose call was made (`response.status_code`
//! 200 or an HTTP error such as 400, with the error body); `error_file_id` has those that never
//! reached the model (`error.code` `batch_expired`, `batch_cancelled`, `request_timeout`).
//! Either id may be null.

use super::{
    check_size, fetch, fetch_json, jsonl_lines, require_ended, required_str, translation_call,
    unreadable, BatchApi, BatchCall, BatchLimits, BatchProgress, BatchRequest, ItemOutcome,
    ItemResult,
};
use crate::openai::{completion_from_json, error_from_json, request_body, OpenAiProvider};
use crate::{http, CallOptions, ErrorKind, ProviderError};
use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::provider_kind::ProviderKind;

const PROVIDER: &str = "openai";
/// The endpoint every line calls; the batch's `endpoint` must be the same.
const ENDPOINT: &str = "/v1/chat/completions";
/// Documented (`CreateBatchRequest.input_file_id`): 50,000 requests and 200 MB. Taken as
/// decimal megabytes, the smaller reading.
const LIMITS: BatchLimits = BatchLimits::of(ProviderKind::Openai);

/// OpenAI's (or a compatible API's) batch tier.
#[derive(Debug, Clone)]
pub struct OpenAiBatch {
    base_url: String,
    http: reqwest::Client,
}

impl OpenAiBatch {
    /// The same base URL as [`crate::openai::OpenAiProvider::new`]: the API root
    /// including its version, e.g. `https://api.openai.com/v1`; a trailing `/` is ignored.
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        OpenAiBatch {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    fn get(&self, call: &BatchCall<'_>, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(call.api_key)
    }

    fn post(&self, call: &BatchCall<'_>, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(call.api_key)
    }

    async fn batch(&self, call: &BatchCall<'_>, id: &str) -> Result<Value, ProviderError> {
        let path = format!("/batches/{id}");
        fetch_json::<OpenAiProvider>(call, self.get(call, &path)).await
    }

    /// The lines of a result file, read whole (see [`super::jsonl_lines`]).
    async fn file_outcomes(
        &self,
        call: &BatchCall<'_>,
        file_id: &str,
        into: &mut Vec<ItemResult>,
    ) -> Result<(), ProviderError> {
        let path = format!("/files/{file_id}/content");
        let answer = fetch::<OpenAiProvider>(call, self.get(call, &path)).await?;
        let what = format!("file {file_id}");
        for line in jsonl_lines(PROVIDER, call.api_key, &what, &answer.body) {
            let line = line?;
            let custom_id = required_str(PROVIDER, &line, "/custom_id", "a result line")?;
            into.push(ItemResult {
                custom_id: custom_id.to_string(),
                outcome: outcome(custom_id, &line),
            });
        }
        Ok(())
    }
}

/// One input line: the real-time body less `stream`, which does not apply to a batch.
fn line(model: &str, options: CallOptions, request: &BatchRequest) -> Value {
    let mut body = request_body(&translation_call(model, options, request), false);
    if let Some(body) = body.as_object_mut() {
        body.remove("stream");
    }
    json!({"custom_id": request.custom_id, "method": "POST", "url": ENDPOINT, "body": body})
}

/// A line as it is uploaded: its JSON and the newline that ends it.
fn encoded_line(model: &str, options: CallOptions, request: &BatchRequest) -> Vec<u8> {
    let mut bytes = line(model, options, request).to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Where a batch object says the batch stands.
pub fn progress(batch: &Value) -> Result<BatchProgress, ProviderError> {
    let status = required_str(PROVIDER, batch, "/status", "the batch")?.to_string();
    Ok(match status.as_str() {
        "validating" | "in_progress" | "finalizing" | "cancelling" => {
            BatchProgress::Running { status }
        }
        "completed" | "expired" | "cancelled" => BatchProgress::Ended { status },
        "failed" => BatchProgress::Failed {
            message: failure_message(batch),
            status,
        },
        other => {
            return Err(http::invalid(
                PROVIDER,
                200,
                format!("the batch has an unknown status \"{other}\""),
            ))
        }
    })
}

/// A failed batch's `errors.data`, one `line N: message (code)` each, so the caller can see
/// which job's line was refused.
fn failure_message(batch: &Value) -> String {
    let errors = batch
        .pointer("/errors/data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let messages: Vec<String> = errors
        .iter()
        .map(|error| {
            let field = |name: &str| error.get(name).and_then(Value::as_str);
            let mut text = String::new();
            if let Some(line) = error.get("line").and_then(Value::as_u64) {
                text.push_str(&format!("line {line}: "));
            }
            text.push_str(field("message").unwrap_or("no message"));
            if let Some(code) = field("code") {
                text.push_str(&format!(" ({code})"));
            }
            text
        })
        .collect();
    if messages.is_empty() {
        "the batch failed without saying why".to_string()
    } else {
        messages.join("; ")
    }
}

/// One result line's outcome (its `custom_id` already read).
pub fn outcome(custom_id: &str, line: &Value) -> ItemOutcome {
    if let Some(error) = line.get("error").filter(|e| !e.is_null()) {
        let field = |name: &str| error.get(name).and_then(Value::as_str);
        let message = field("message").unwrap_or("no message");
        return match field("code") {
            Some("batch_expired") => ItemOutcome::Expired,
            Some("batch_cancelled") => ItemOutcome::Cancelled,
            // The request never reached an answer for reasons of the batch's own (the call to
            // the model timed out, …): not the request's fault, so worth another run.
            code => {
                let kind = if code == Some("request_timeout") {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::ServerError
                };
                let code = code.unwrap_or("no code");
                ItemOutcome::Failed(ProviderError::new(
                    PROVIDER,
                    kind,
                    None,
                    format!("{message} ({code})"),
                ))
            }
        };
    }
    let Some(response) = line.get("response").filter(|r| !r.is_null()) else {
        return unreadable(PROVIDER, custom_id, "has neither a response nor an error");
    };
    let Some(status) = response.get("status_code").and_then(Value::as_u64) else {
        return unreadable(PROVIDER, custom_id, "has no response.status_code");
    };
    let status = u16::try_from(status).unwrap_or(u16::MAX);
    let body = response.get("body").cloned().unwrap_or(Value::Null);
    if status == 200 {
        match completion_from_json(status, body) {
            Ok(completion) => ItemOutcome::Succeeded(completion),
            Err(error) => ItemOutcome::Failed(error),
        }
    } else {
        ItemOutcome::Failed(error_from_json(status, Some(&body), || {
            format!("status {status} with no error message")
        }))
    }
}

#[async_trait]
impl BatchApi for OpenAiBatch {
    /// The line and its newline: OpenAI's limit is the input file's size.
    fn encoded_len(
        &self,
        model: &str,
        options: CallOptions,
        request: &BatchRequest,
    ) -> Result<usize, ProviderError> {
        Ok(encoded_line(model, options, request).len())
    }

    async fn submit(
        &self,
        call: BatchCall<'_>,
        requests: &[BatchRequest],
        label: &str,
    ) -> Result<String, ProviderError> {
        let jsonl: Vec<u8> = requests
            .iter()
            .flat_map(|request| encoded_line(call.model, call.options, request))
            .collect();
        check_size(PROVIDER, LIMITS, requests.len(), jsonl.len())?;
        let file = reqwest::multipart::Part::bytes(jsonl)
            .file_name(format!("sluice-{label}.jsonl"))
            .mime_str("application/jsonl")
            .expect("a valid media type");
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", file);
        let upload = self.post(&call, "/files").multipart(form);
        let uploaded = fetch_json::<OpenAiProvider>(&call, upload).await?;
        let file_id = required_str(PROVIDER, &uploaded, "/id", "the uploaded file")?;
        let create = self.post(&call, "/batches").json(&json!({
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "metadata": {"sluice_batch": label},
        }));
        let batch = fetch_json::<OpenAiProvider>(&call, create).await?;
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
        let mut results = Vec::new();
        for field in ["output_file_id", "error_file_id"] {
            if let Some(file_id) = batch.get(field).and_then(Value::as_str) {
                self.file_outcomes(&call, file_id, &mut results).await?;
            }
        }
        Ok(results)
    }

    async fn cancel(&self, call: BatchCall<'_>, id: &str) -> Result<(), ProviderError> {
        let path = format!("/batches/{id}/cancel");
        fetch_json::<OpenAiProvider>(&call, self.post(&call, &path)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::job::ChatRequest;

    fn request(custom_id: &str, body: Value) -> BatchRequest {
        BatchRequest {
            custom_id: custom_id.into(),
            request: serde_json::from_value::<ChatRequest>(body).unwrap(),
        }
    }

    #[test]
    fn a_line_is_the_realtime_body_without_stream() {
        let r = request(
            "job-1",
            json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}],
                   "stream": true, "stream_options": {"include_usage": true}, "temperature": 0.5}),
        );
        let line = line("gpt-4o-mini", CallOptions::default(), &r);
        assert_eq!(
            line,
            json!({"custom_id": "job-1", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                            "temperature": 0.5}})
        );
        let len = OpenAiBatch::new("http://x/v1", reqwest::Client::new())
            .encoded_len("gpt-4o-mini", CallOptions::default(), &r)
            .unwrap();
        assert_eq!(len, line.to_string().len() + 1);
    }

    #[test]
    fn statuses_map() {
        let running = |s: &str| BatchProgress::Running { status: s.into() };
        let ended = |s: &str| BatchProgress::Ended { status: s.into() };
        for s in ["validating", "in_progress", "finalizing", "cancelling"] {
            assert_eq!(progress(&json!({"status": s})).unwrap(), running(s));
        }
        for s in ["completed", "expired", "cancelled"] {
            assert_eq!(progress(&json!({"status": s})).unwrap(), ended(s));
        }
        let failed = progress(&json!({"status": "failed", "errors": {"object": "list", "data": [
            {"code": "duplicate_custom_id", "message": "The custom_id job-1 is duplicated.", "param": null, "line": 3},
            {"code": "invalid_url", "message": "Wrong URL.", "line": 5}]}}))
        .unwrap();
        assert_eq!(
            failed,
            BatchProgress::Failed {
                status: "failed".into(),
                message: "line 3: The custom_id job-1 is duplicated. (duplicate_custom_id); line 5: Wrong URL. (invalid_url)".into(),
            }
        );
        let e = progress(&json!({"status": "sleeping"})).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        let e = progress(&json!({"id": "batch_1"})).unwrap_err();
        assert!(e.message.contains("\"status\""), "{}", e.message);
    }

    #[test]
    fn result_lines_map() {
        let ok = json!({"custom_id": "a", "response": {"status_code": 200, "request_id": "r", "body": {
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}}, "error": null});
        match outcome("a", &ok) {
            ItemOutcome::Succeeded(c) => assert_eq!(c.usage.prompt_tokens, 3),
            other => panic!("{other:?}"),
        }
        let refused = json!({"custom_id": "b", "response": {"status_code": 400, "body": {
            "error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error", "code": null}}}, "error": null});
        match outcome("b", &refused) {
            ItemOutcome::Failed(e) => {
                assert_eq!((e.kind, e.status), (ErrorKind::BadRequest, Some(400)));
                assert_eq!(e.message, "Invalid value for 'temperature'");
            }
            other => panic!("{other:?}"),
        }
        let code = |c: &str| json!({"custom_id": "c", "response": null, "error": {"code": c, "message": "m"}});
        assert!(matches!(
            outcome("c", &code("batch_expired")),
            ItemOutcome::Expired
        ));
        assert!(matches!(
            outcome("c", &code("batch_cancelled")),
            ItemOutcome::Cancelled
        ));
        match outcome("c", &code("request_timeout")) {
            ItemOutcome::Failed(e) => {
                assert!(e.kind.is_retryable() && e.kind == ErrorKind::Timeout)
            }
            other => panic!("{other:?}"),
        }
        match outcome("c", &code("something_new")) {
            ItemOutcome::Failed(e) => assert_eq!(e.kind, ErrorKind::ServerError),
            other => panic!("{other:?}"),
        }
        match outcome("d", &json!({"custom_id": "d"})) {
            ItemOutcome::Failed(e) => assert_eq!(e.kind, ErrorKind::InvalidResponse),
            other => panic!("{other:?}"),
        }
        // A 200 whose body is not a completion is that request's retryable failure.
        let bad =
            json!({"custom_id": "e", "response": {"status_code": 200, "body": {"choices": []}}});
        match outcome("e", &bad) {
            ItemOutcome::Failed(e) => assert_eq!(e.kind, ErrorKind::InvalidResponse),
            other => panic!("{other:?}"),
        }
    }
}
