//! The provider call itself: plain, or streamed when a client watches the answer or a
//! first-token or idle limit applies.

use super::watcher::Watcher;
use crate::providers::{http, stream};
use crate::providers::{Call, Completion, ProviderError};
use crate::router::Deployment;
use futures::StreamExt;
use std::time::Duration;

/// Makes the call, returning the answer and the time to its first token. A plain call
/// (nobody streaming, no first-token or idle limit) is made as one request and its first
/// token is its whole answer; otherwise it is streamed, so a client sees chunks live,
/// `first_token_timeout` can abandon a call that has not started answering and the
/// stream driver one that stalls past `call.stream_idle_timeout`.
pub(super) async fn call_deployment(
    deployment: &Deployment,
    call: Call<'_>,
    watcher: Option<&Watcher>,
    first_token_timeout: Option<Duration>,
) -> (Result<Completion, ProviderError>, Option<Duration>) {
    let provider = deployment.kind.as_str();
    let started = std::time::Instant::now();
    if watcher.is_none() && first_token_timeout.is_none() && call.stream_idle_timeout.is_none() {
        let result = deployment.adapter.chat(call).await;
        let first_token = result.is_ok().then(|| started.elapsed());
        return (result, first_token);
    }
    let opening = async {
        let mut chunks = deployment.adapter.chat_stream(call).await?;
        // Chunks before the first token (a role, an empty delta) are kept and replayed.
        let mut before = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let token = chunk.as_ref().map_or(true, stream::carries_output);
            before.push(chunk);
            if token {
                break;
            }
        }
        Ok::<_, ProviderError>((before, chunks))
    };
    let opened = match first_token_timeout {
        Some(limit) => tokio::time::timeout(limit, opening)
            .await
            .unwrap_or_else(|_| {
                Err(http::limit_error(
                    provider,
                    "no first token",
                    limit,
                    "first_token_timeout",
                ))
            }),
        None => opening.await,
    };
    let (before, rest) = match opened {
        Ok(opened) => opened,
        Err(error) => return (Err(error), None),
    };
    let first_token = started.elapsed();
    let chunks = rest.map_chunks(|rest| futures::stream::iter(before).chain(rest));
    let result = match watcher {
        Some(watcher) => watcher.relay(provider, chunks).await,
        None => stream::collect(provider, chunks).await,
    };
    (result, Some(first_token))
}
