//! `POST /v1/chat/completions`: OpenAI's endpoint, served by the job loop.
//!
//! An application already written for OpenAI points its SDK's `base_url` at Sluice and gets
//! routing, fallback, retries and cost records without changing a line. The request becomes
//! a `realtime` job like any other (recorded, queued, run by the realtime pool, stored and
//! charged), and the handler waits for it to finish and answers with its completion. The
//! answer's `id` is the job id, so the finished job stays pollable at `GET /v1/jobs/{id}`.
//!
//! Sluice-specific metadata travels in headers, so the body stays OpenAI's:
//! `x-sluice-team` and `x-sluice-feature` tag the job (the body's `user` tags the user), and
//! `idempotency-key` becomes the job's `custom_id`, so a client's retry of a request whose
//! answer it lost does not run (or bill) the request twice.

use super::auth::Tenant;
use super::error::ApiError;
use super::jobs::{wait_until_final, MAX_WAIT};
use super::ApiState;
use crate::failure::JobFailure;
use crate::job::{ChatRequest, Envelope, JobSpec, JobStatus, Urgency};
use crate::queue::Inbox;
use crate::store::JobView;
use crate::streaming::{chunk_for_client, chunks_of, wants_stream, wants_usage, StreamEvent};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use uuid::Uuid;

/// The response header naming the job that served a request.
pub const JOB_ID_HEADER: &str = "x-sluice-job-id";

/// `POST /v1/chat/completions`.
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("", format!("the body is not valid JSON: {e}")))?;
    let request: ChatRequest = crate::job::from_value_naming_field(value)?;
    // A model no route serves is answered as OpenAI answers one: 404 `model_not_found`, the
    // answer of a job that fails `unknown_model`, rather than the 400 of `POST /v1/jobs`.
    if state.config.resolve_model(&request.model).is_none() {
        let message = state.config.unknown_model(&request.model);
        return Err(
            ApiError::for_failure(JobFailure::UnknownModel, message).with("param", json!("model"))
        );
    }
    let stream = wants_stream(&request.extra);
    let with_usage = wants_usage(&request.extra);
    state.tenant_limits.admit(&tenant, [&request])?;
    let mut envelope = Envelope::new(&tenant, job_spec(request, &headers)?);
    let id = envelope.id;
    // Opened before the job is published, so not even the first chunk can miss it.
    let inbox = if stream {
        let inbox = state
            .submitter
            .queue
            .open_inbox(id)
            .await
            .map_err(|e| ApiError::from(crate::submit::SubmitError::QueueUnavailable(e)))?;
        envelope.reply_to = Some(inbox.address.clone());
        Some(inbox)
    } else {
        None
    };
    let submitted = state.submitter.submit_envelopes(vec![envelope]).await?;
    // A repeated idempotency key answers the first job, whose replies (if any) went elsewhere.
    let id = submitted[0].id;
    let response = match inbox.filter(|_| !submitted[0].duplicate) {
        Some(inbox) => live_stream(&state, &tenant, id, inbox, with_usage).await,
        None => {
            let job = wait_until_final(&state, &tenant, id, MAX_WAIT).await?;
            if stream {
                replayed_stream(job, with_usage)
            } else {
                answer(job)
            }
        }
    };
    // Failures name their job too, so a client can look at its attempts.
    let mut response = response.unwrap_or_else(IntoResponse::into_response);
    response.headers_mut().insert(
        JOB_ID_HEADER,
        HeaderValue::from_str(&id.to_string()).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// Streams job `id` as server-sent events while a worker runs it: waits for its first chunk
/// (an attempt that fails before it is retried unseen), then relays every chunk the moment it
/// arrives. A job that fails before any chunk is an ordinary error response. Once chunks went
/// out, only their delivery's chunks follow: chunks from another delivery (the first one's
/// worker died mid-answer, another attempt answers from the start) end the stream with an
/// error, as a failed attempt's event does.
async fn live_stream(
    state: &ApiState,
    tenant: &str,
    id: Uuid,
    mut inbox: Inbox,
    with_usage: bool,
) -> Result<Response, ApiError> {
    let (first, from) = loop {
        match next_event(&mut inbox).await {
            Some(StreamEvent::Chunks { chunks, from }) if !chunks.is_empty() => {
                break (chunks, from)
            }
            Some(StreamEvent::Chunks { .. }) => continue,
            Some(StreamEvent::Failed {
                will_retry: true, ..
            }) => continue,
            Some(StreamEvent::Failed {
                kind,
                message,
                param,
                will_retry: false,
            }) => return Err(failure(id, JobFailure::from_name(&kind), &message, param)),
            // Finished without streaming (a redelivery of a job that was already final), or
            // the live view was lost: the store has the answer.
            Some(StreamEvent::Done) | None => {
                let job = wait_until_final(state, tenant, id, MAX_WAIT).await?;
                return replayed_stream(job, with_usage);
            }
        }
    };
    let events = futures::stream::unfold(
        (inbox, VecDeque::from(first), false),
        move |(mut inbox, mut pending, ended)| async move {
            if ended {
                return None;
            }
            loop {
                if let Some(chunk) = pending.pop_front() {
                    match chunk_event(chunk, id, with_usage) {
                        Some(event) => return Some((event, (inbox, pending, false))),
                        None => continue,
                    }
                }
                // The stream ends with `[DONE]`, or with the error that cut it short.
                let last = match next_event(&mut inbox).await {
                    Some(StreamEvent::Chunks { chunks, from: other }) if other == from => {
                        pending.extend(chunks);
                        continue;
                    }
                    Some(StreamEvent::Chunks { .. }) => error_event(
                        JobFailure::Interrupted,
                        &format!(
                        "job {id} stopped mid-answer (its worker stopped) and another attempt \
                         answers from the start; it may still finish, see GET /v1/jobs/{id}"
                        ),
                    ),
                    Some(StreamEvent::Done) => Event::default().data("[DONE]"),
                    Some(StreamEvent::Failed { kind, message, .. }) => error_event(
                        JobFailure::from_name(&kind),
                        &format!("job {id} failed mid-stream ({kind}): {message}; it may still finish, see GET /v1/jobs/{id}"),
                    ),
                    None => error_event(
                        JobFailure::Unrecognised,
                        &format!(
                            "lost the live stream of job {id}; its answer will be at GET /v1/jobs/{id}"
                        ),
                    ),
                };
                return Some((last, (inbox, pending, true)));
            }
        },
    )
    .map(Ok::<_, Infallible>);
    Ok(Sse::new(events).into_response())
}

/// The next event from a worker, or `None` when none will come: the inbox's transport is
/// gone, an event is unreadable, or the worker has been silent longer than any answer takes.
async fn next_event(inbox: &mut Inbox) -> Option<StreamEvent> {
    let bytes = tokio::time::timeout(MAX_WAIT, inbox.recv()).await.ok()??;
    match StreamEvent::from_bytes(&bytes) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(error = %e, "dropped an unreadable stream event");
            None
        }
    }
}

/// A stored job as the stream its client asked for (or its error, if it did not succeed).
fn replayed_stream(job: JobView, with_usage: bool) -> Result<Response, ApiError> {
    let id = job.id;
    if job.status != JobStatus::Succeeded {
        return answer(job);
    }
    let completion = job.result.unwrap_or_default();
    let events: Vec<Result<Event, Infallible>> = chunks_of(&completion)
        .into_iter()
        .filter_map(|chunk| chunk_event(chunk, id, with_usage).map(Ok))
        .chain([Ok(Event::default().data("[DONE]"))])
        .collect();
    Ok(Sse::new(futures::stream::iter(events)).into_response())
}

/// A chunk as an SSE event, named by its job like a non-streamed answer.
/// The event carrying `chunk` to the client, under the job's id; `None` for a chunk the
/// client did not ask for (see [`chunk_for_client`]).
fn chunk_event(chunk: Value, id: Uuid, with_usage: bool) -> Option<Event> {
    let mut chunk = chunk_for_client(chunk, with_usage)?;
    if let Some(object) = chunk.as_object_mut() {
        object.insert("id".into(), Value::String(id.to_string()));
    }
    Some(Event::default().data(chunk.to_string()))
}

/// An error inside a stream whose `200` is already sent, in the shape OpenAI sends (and its
/// SDKs raise): a data line holding an `error` object, typed by `failure`'s one mapping.
fn error_event(failure: JobFailure, message: &str) -> Event {
    let answer = failure.answer();
    Event::default().data(
        json!({"error": {
            "message": message,
            "type": answer.error_type,
            "param": null,
            "code": answer.code,
        }})
        .to_string(),
    )
}

/// The realtime job for `request`, tagged from the headers.
fn job_spec(request: ChatRequest, headers: &HeaderMap) -> Result<JobSpec, ApiError> {
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(|text| Some(text.to_string()))
                .map_err(|_| ApiError::invalid(name, "must be visible ASCII")),
        }
    };
    let user = request
        .extra
        .get("user")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut spec = JobSpec::new(Urgency::Realtime, request);
    spec.tags.user = user;
    spec.tags.team = header("x-sluice-team")?;
    spec.tags.feature = header("x-sluice-feature")?;
    spec.custom_id = header("idempotency-key")?;
    Ok(spec)
}

/// The HTTP answer for a job that is final (or still running after the longest wait).
fn answer(job: JobView) -> Result<Response, ApiError> {
    match job.status {
        JobStatus::Succeeded => {
            let mut completion = job.result.ok_or_else(|| {
                ApiError::internal(format!("job {} succeeded without a result", job.id))
            })?;
            if let Some(object) = completion.as_object_mut() {
                object.insert("id".into(), Value::String(job.id.to_string()));
            }
            Ok((StatusCode::OK, Json(completion)).into_response())
        }
        JobStatus::Failed => {
            let (kind, message, param) = job
                .error
                .map(|e| (e.kind, e.message, e.param))
                .unwrap_or_else(|| (JobFailure::Unrecognised, "the job failed".into(), None));
            Err(failure(job.id, kind, &message, param))
        }
        JobStatus::Cancelled => Err(ApiError::for_failure(
            JobFailure::Cancelled,
            format!("job {} was cancelled before it ran", job.id),
        )),
        JobStatus::Queued | JobStatus::Running => {
            let mut error = ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "still_running",
                format!(
                    "job {} is still {} after {}; its answer will be at GET /v1/jobs/{}",
                    job.id,
                    job.status,
                    humantime::format_duration(MAX_WAIT),
                    job.id
                ),
            );
            // The job goes on and will be charged: a retry would run (and charge) it again.
            error.should_retry = Some(false);
            Err(error)
        }
    }
}

/// The error answer for job `id`, which failed with `kind` and `message`: the status, type
/// and code of the one mapping ([`JobFailure::answer`]). The parameter the provider blamed
/// goes in OpenAI's `param`, where an OpenAI client looks for the field to fix; it is the
/// provider's name for it, not a path into Sluice's request, so it is not Sluice's `field`.
fn failure(id: Uuid, kind: JobFailure, message: &str, param: Option<String>) -> ApiError {
    let error = ApiError::for_failure(kind, format!("job {id} failed ({kind}): {message}"));
    match param {
        Some(param) => error.with("param", json!(param)),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_user_become_tags_and_idempotency_key_the_custom_id() {
        let mut request = ChatRequest::single_user_message("smart", "hi");
        request.extra.insert("user".into(), "u-7".into());
        let mut headers = HeaderMap::new();
        headers.insert("x-sluice-team", HeaderValue::from_static("search"));
        headers.insert("idempotency-key", HeaderValue::from_static("req-1"));
        let spec = job_spec(request, &headers).unwrap();
        assert_eq!(spec.urgency, Urgency::Realtime);
        assert_eq!(spec.tags.user.as_deref(), Some("u-7"));
        assert_eq!(spec.tags.team.as_deref(), Some("search"));
        assert_eq!(spec.tags.feature, None);
        assert_eq!(spec.custom_id.as_deref(), Some("req-1"));
        // `user` stays in the body for the provider too.
        assert_eq!(spec.request.extra["user"], "u-7");
    }
}
