//! `sluice probe`: asks a running Sluice process's health endpoint and succeeds only on a
//! 2xx answer, so a container's health check needs no HTTP client in the image (the runtime
//! image has no curl) and reads the same endpoints a load balancer does.

use std::time::Duration;

/// Asks `url` (`http://127.0.0.1:8080/readyz`), waiting at most `timeout`; prints the
/// answer's body, which says what is missing when the process is not ready, and fails,
/// naming the status, unless the answer is a success.
pub async fn probe(url: reqwest::Url, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    // The error names the URL and why nothing answered.
    let response = client.get(url.clone()).send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    outln!("{body}");
    Ok(())
}
