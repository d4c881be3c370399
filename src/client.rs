//! A small client for Sluice's HTTP API, used by `sluice submit|get|wait` and the tests.

use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach Sluice at {url}: {source}; is `sluice serve` running?")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("Sluice answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("Sluice sent a response that is not JSON: {0}")]
    BadResponse(reqwest::Error),
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
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base_url.clone(),
                source,
            })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(ClientError::BadResponse)?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ClientError::Api {
                status: status.as_u16(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string(),
            })
        }
    }
}
