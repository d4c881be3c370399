//! A small client for Sluice's HTTP API, used by `sluice submit|get|wait|bulk` and the tests.
//!
//! It speaks the API's wire types (`crate::bulk::wire`), never the server's own modules, so
//! it can sit above them; [`bulk`] is the `sluice bulk` commands' side.

pub mod bulk;

use crate::bulk::lines::{Line, LineReader};
use crate::bulk::wire::{
    BulkRequest, ProgressEvent, ResultsQuery, Submission, SubmitQuery, NDJSON, PENDING_HEADER,
};
use futures::TryStreamExt;
use serde_json::Value;
use std::fmt::Display;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach Sluice at {url}: {source}; is `sluice serve` running?")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("Sluice answered {status}: {message}")]
    Api {
        status: u16,
        message: String,
        /// The whole error object (`{"type", "message", "field"?, …}`).
        error: Value,
    },
    #[error("Sluice sent a response that is not JSON: {0}")]
    BadResponse(reqwest::Error),
    #[error("reading Sluice's answer failed: {0}")]
    Stream(String),
}

#[derive(Clone)]
pub struct Client {
    base_url: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `base_url` like `http://127.0.0.1:8080`; `token` is the tenant's bearer token.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Client {
        Client {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /v1/jobs` with one job or an array; returns the response body.
    pub async fn submit(&self, body: &Value) -> Result<Value, ClientError> {
        let request = self
            .http
            .post(format!("{}/v1/jobs", self.base_url))
            .json(body);
        self.send(request).await
    }

    /// `GET /v1/jobs/{id}`, long-polling up to `wait`.
    pub async fn get(&self, id: Uuid, wait: Option<Duration>) -> Result<Value, ClientError> {
        let mut url = format!("{}/v1/jobs/{id}", self.base_url);
        if let Some(wait) = wait {
            url.push_str(&format!("?wait={}ms", wait.as_millis()));
        }
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/costs?{query}` (`by=team,day&since=7d`), the tenant's report as JSON.
    pub async fn costs(&self, query: &str) -> Result<Value, ClientError> {
        let url = format!("{}/v1/costs?{query}", self.base_url);
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/budgets`: the tenant's budgets this period.
    pub async fn budgets(&self) -> Result<Value, ClientError> {
        let url = format!("{}/v1/budgets", self.base_url);
        self.send(self.http.get(url)).await
    }

    /// Polls until the job is final (or `timeout` passes) and returns it.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let job = self
                .get(id, Some(left.min(Duration::from_secs(60))))
                .await?;
            let status = job["status"].as_str().unwrap_or_default();
            if matches!(status, "succeeded" | "failed" | "cancelled") || left.is_zero() {
                return Ok(job);
            }
        }
    }

    /// `DELETE /v1/jobs/{id}`.
    pub async fn cancel(&self, id: Uuid) -> Result<Value, ClientError> {
        let request = self.http.delete(format!("{}/v1/jobs/{id}", self.base_url));
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = self.start(request).await?;
        response.json().await.map_err(ClientError::BadResponse)
    }

    /// `GET /v1/models`: the model names the server accepts.
    pub async fn models(&self) -> Result<Vec<String>, ClientError> {
        let list = self
            .send(self.http.get(format!("{}/v1/models", self.base_url)))
            .await?;
        Ok(list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect())
    }

    /// `POST /v1/bulk` with a streamed JSONL `body`, following the server's progress events:
    /// `progress(done, total)` as jobs are published. Returns the submission.
    pub async fn bulk_submit(
        &self,
        request: &BulkRequest,
        body: reqwest::Body,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Submission, ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/bulk", self.base_url))
            .query(&SubmitQuery::from(request))
            .header(reqwest::header::ACCEPT, NDJSON)
            .header(reqwest::header::CONTENT_TYPE, NDJSON)
            .body(body);
        let response = self.start(response).await?;
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        let mut events = LineReader::<_, tokio::io::Sink>::new(
            tokio_util::io::StreamReader::new(stream),
            1 << 20,
            None,
        );
        while let Some((_, line)) = events
            .next_line()
            .await
            .map_err(|e| ClientError::Stream(e.to_string()))?
        {
            let Line::Text(text) = line else {
                continue;
            };
            let event: ProgressEvent = serde_json::from_slice(text)
                .map_err(|e| ClientError::Stream(format!("a progress event is not JSON: {e}")))?;
            match event {
                ProgressEvent::Progress { done, total } => progress(done, total),
                ProgressEvent::Submitted { bulk } => return Ok(bulk),
                ProgressEvent::Error { status, error } => return Err(api_error(status, &error)),
                ProgressEvent::Unknown => {}
            }
        }
        Err(ClientError::Stream(
            "the server closed the progress stream before the submission ended; \
             `sluice bulk status` shows what was submitted, and submitting the same file again \
             under the same name submits the rest"
                .into(),
        ))
    }

    /// `GET /v1/bulk/{bulk}`: `bulk` is its id, its batch id (`batch_…`) or its name.
    pub async fn bulk(&self, bulk: impl Display) -> Result<Value, ClientError> {
        self.send(self.http.get(self.bulk_url(bulk, ""))).await
    }

    /// `POST /v1/bulk/{bulk}/cancel`.
    pub async fn bulk_cancel(&self, bulk: impl Display) -> Result<Value, ClientError> {
        self.send(self.http.post(self.bulk_url(bulk, "/cancel")))
            .await
    }

    /// The address of a bulk's resource, the bulk named by any form (a name may hold any
    /// character: it is percent-encoded).
    fn bulk_url(&self, bulk: impl Display, rest: &str) -> String {
        let mut segment = String::new();
        for byte in bulk.to_string().bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                segment.push(byte as char);
            } else {
                segment.push_str(&format!("%{byte:02X}"));
            }
        }
        format!("{}/v1/bulk/{segment}{rest}", self.base_url)
    }

    /// `GET /v1/bulk/{id}/results`: the response, whose body is the JSONL to stream, and how
    /// many jobs were not finished (so not in it).
    pub async fn bulk_results(
        &self,
        bulk: impl Display,
        query: ResultsQuery,
    ) -> Result<(reqwest::Response, u64), ClientError> {
        let request = self.http.get(self.bulk_url(bulk, "/results")).query(&query);
        let response = self.start(request).await?;
        let pending = response
            .headers()
            .get(PENDING_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((response, pending))
    }

    /// Sends a request whose success body is streamed: an error status is read as an API
    /// error, a success is handed back unread.
    async fn start(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base_url.clone(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.map_err(ClientError::BadResponse)?;
        Err(api_error(status.as_u16(), &body["error"]))
    }
}

fn api_error(status: u16, error: &Value) -> ClientError {
    ClientError::Api {
        status,
        message: error["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string(),
        error: error.clone(),
    }
}
