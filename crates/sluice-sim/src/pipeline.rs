//! One request pipeline for every family: from the bytes a client sent to the response it
//! reads, with each family's words supplied by its [`WireFormat`].
//!
//! A chat call goes: count it, check the credentials, read the JSON body, log it, validate
//! it into the family's parsed form, run the shared steps of a call ([`call::run`]:
//! directives, faults, latency, the answer), then render the outcome: the answer (counted in
//! the stats and the rate-limit window, whole or streamed, with the family's headers) or an
//! error (the family's error body and headers, `retry-after` on a rate limit). A batch item
//! takes the same reading and validation and the same answer ([`batch_item`]), without a
//! call's timing. The families ([`crate::openai`], [`crate::anthropic`], [`crate::gemini`])
//! only read and write their formats, so no step can be forgotten or done differently by one
//! of them.

use crate::answer::{Answer, Conversation};
use crate::batches;
use crate::call::{self, Batched, Outcome, StreamPlan};
use crate::faults::{DirectiveError, Fault};
use crate::stream::{self, Event};
use crate::{Family, Limits, RateHeaders, SimState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How an answer leaves: whole, as server-sent events, or (Gemini's `streamGenerateContent`
/// without `alt=sse`) as one JSON array of the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Whole,
    Sse,
    JsonArray,
}

/// A streamed answer's body, in the family's frames.
pub(crate) enum Streamed {
    /// Server-sent events, and the family's in-stream error event (for `fail=midstream`).
    Sse { events: Vec<Event>, error: Event },
    /// One JSON document sent over time.
    Json(Value),
}

/// Where a request body was found: a call's body or a batch item's (the families word the
/// same problem differently there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Call,
    BatchItem,
}

/// A family's error, as the pipeline needs it.
pub(crate) trait WireError: Send {
    fn status(&self) -> StatusCode;
    /// What a rate limit asks the client to wait (`retry-after`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// The error body; `request_id` for the families that repeat it there.
    fn body(&self, request_id: &str) -> Value;
}

/// One API family's wire format: how its requests read and its answers and errors are
/// written. Everything else is the pipeline's.
pub(crate) trait WireFormat: Send + Sync + 'static {
    /// Which family, for the stats.
    const FAMILY: Family;
    /// The rate limits its headers announce; `None` when it sends no rate-limit headers.
    const LIMITS: Option<Limits>;
    type Error: WireError;
    /// What the URL says about a call (Gemini: the model and how to stream).
    type Target: Send + Sync;
    /// The checked fields of a request, borrowing its body.
    type Parsed<'a>: Send + Sync;

    /// The credentials (and required headers), with `?key=` for the family that takes it.
    fn check_auth(headers: &HeaderMap, query_key: Option<&str>) -> Result<(), Self::Error>;
    fn not_json(error: serde_json::Error) -> Self::Error;
    fn not_an_object(body: &Value, place: Place) -> Self::Error;
    /// A batch item's request as the family validates it (Gemini drops the item's `model`).
    fn batch_request(request: &Map<String, Value>) -> Cow<'_, Map<String, Value>> {
        Cow::Borrowed(request)
    }
    /// Checks the request as the provider does, in its words.
    fn validate(request: &Map<String, Value>) -> Result<Self::Parsed<'_>, Self::Error>;
    /// Every piece of text the request carries, to look for directives in.
    fn texts<'a>(request: &'a Map<String, Value>, parsed: &Self::Parsed<'a>) -> Vec<&'a str>;
    fn conversation<'p>(parsed: &'p Self::Parsed<'_>) -> &'p Conversation;
    fn delivery(target: &Self::Target, parsed: &Self::Parsed<'_>) -> Delivery;
    /// How many identical choices (candidates) an answer carries.
    fn choices(_parsed: &Self::Parsed<'_>) -> u64 {
        1
    }
    /// The whole (not streamed) answer.
    fn whole(target: &Self::Target, parsed: &Self::Parsed<'_>, answer: &Answer) -> Value;
    /// The answer streamed as `delivery` says.
    fn streamed(
        target: &Self::Target,
        parsed: &Self::Parsed<'_>,
        answer: &Answer,
        delivery: Delivery,
    ) -> Streamed;
    /// A batch item's answer: the whole answer, unless the family marks the batch tier.
    fn batch_answer(target: &Self::Target, parsed: &Self::Parsed<'_>, answer: &Answer) -> Value {
        Self::whole(target, parsed, answer)
    }
    /// A batch item asked to stream.
    fn streaming_in_batch() -> Self::Error;
    /// The error the provider sends for an injected fault.
    fn fault_error(
        state: &SimState,
        fault: Fault,
        target: &Self::Target,
        parsed: &Self::Parsed<'_>,
    ) -> Self::Error;
    fn bad_directive(error: DirectiveError) -> Self::Error;
    fn shutting_down() -> Self::Error;
    fn not_found(method: &Method, uri: &Uri) -> Self::Error;
    /// The headers the family puts on every answer.
    fn decorate(
        headers: &mut HeaderMap,
        request_id: &str,
        rate: Option<RateHeaders>,
        started: Instant,
    );
    /// The headers of a rate limit's wait: whole seconds, rounded up so a client never
    /// comes back early.
    fn retry_after_headers(headers: &mut HeaderMap, retry_after: Duration) {
        let seconds = retry_after.as_millis().div_ceil(1000) as u64;
        headers.insert("retry-after", HeaderValue::from(seconds));
    }
}

/// A request id as OpenAI and Anthropic write them.
pub(crate) fn request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// Serves one chat call of family `F`.
pub(crate) async fn serve<F: WireFormat>(
    state: Arc<SimState>,
    target: F::Target,
    headers: HeaderMap,
    query_key: Option<&str>,
    body: &[u8],
) -> Response {
    let started = Instant::now();
    state.count_request(F::FAMILY, &headers, query_key);
    match complete::<F>(&state, &target, &headers, query_key, body, started).await {
        Ok(response) => response,
        Err(error) => {
            state.count_error();
            error_response::<F>(&state, &error, started)
        }
    }
}

/// Validates the request, runs the call, and renders its outcome.
async fn complete<F: WireFormat>(
    state: &Arc<SimState>,
    target: &F::Target,
    headers: &HeaderMap,
    query_key: Option<&str>,
    raw: &[u8],
    started: Instant,
) -> Result<Response, F::Error> {
    F::check_auth(headers, query_key)?;
    let body: Value = serde_json::from_slice(raw).map_err(F::not_json)?;
    let Some(request) = body.as_object() else {
        return Err(F::not_an_object(&body, Place::Call));
    };
    state.log_request(body.clone());
    let parsed = F::validate(request)?;
    let delivery = F::delivery(target, &parsed);
    let outcome = call::run(
        state,
        headers,
        call::Request {
            body: request,
            texts: F::texts(request, &parsed),
            conversation: F::conversation(&parsed).clone(),
            stream: delivery == Delivery::Sse,
        },
    )
    .await;
    match outcome {
        Outcome::Answer { answer, stream } => Ok(render::<F>(
            state, target, &parsed, delivery, &answer, stream, started,
        )),
        Outcome::Fail(fault) => Err(F::fault_error(state, fault, target, &parsed)),
        Outcome::BadDirective(error) => Err(F::bad_directive(error)),
        Outcome::Shutdown => Err(F::shutting_down()),
    }
}

/// The answer, counted, whole or streamed, with the family's headers.
fn render<F: WireFormat>(
    state: &Arc<SimState>,
    target: &F::Target,
    parsed: &F::Parsed<'_>,
    delivery: Delivery,
    answer: &Answer,
    plan: StreamPlan,
    started: Instant,
) -> Response {
    let completion_tokens = answer.completion_tokens * F::choices(parsed);
    if plan.fault.is_none() {
        state.count_completion(
            answer.prompt_tokens,
            completion_tokens,
            delivery != Delivery::Whole,
        );
    } else {
        state.count_error();
    }
    let rate = F::LIMITS.map(|limits| {
        RateHeaders::counted(state, limits, answer.prompt_tokens + completion_tokens)
    });
    let mut response = match delivery {
        Delivery::Whole => stream::json(
            state.clone(),
            StatusCode::OK,
            &F::whole(target, parsed, answer),
            plan,
        ),
        streaming => match F::streamed(target, parsed, answer, streaming) {
            Streamed::Sse { events, error } => stream::sse(state.clone(), events, plan, error),
            Streamed::Json(body) => stream::json(state.clone(), StatusCode::OK, &body, plan),
        },
    };
    F::decorate(response.headers_mut(), &request_id(), rate, started);
    response
}

/// An error response in `F`'s words, with its headers (a rate limit's spent window and
/// `retry-after`).
pub(crate) fn error_response<F: WireFormat>(
    state: &SimState,
    error: &F::Error,
    started: Instant,
) -> Response {
    let request_id = request_id();
    let rate = F::LIMITS.map(|limits| match error.retry_after() {
        Some(retry_after) => RateHeaders::exhausted(limits, retry_after),
        None => RateHeaders::counted(state, limits, 0),
    });
    let mut response = (error.status(), axum::Json(error.body(&request_id))).into_response();
    F::decorate(response.headers_mut(), &request_id, rate, started);
    if let Some(retry_after) = error.retry_after() {
        F::retry_after_headers(response.headers_mut(), retry_after);
    }
    response
}

/// A successful answer of another of `F`'s endpoints (the batch APIs), with its headers.
pub(crate) fn ok_response<F: WireFormat>(
    state: &SimState,
    response: impl IntoResponse,
    started: Instant,
) -> Response {
    let mut response = response.into_response();
    let rate = F::LIMITS.map(|limits| RateHeaders::counted(state, limits, 0));
    F::decorate(response.headers_mut(), &request_id(), rate, started);
    response
}

/// An answer of another of `F`'s endpoints (the batch APIs), or its error.
pub(crate) fn respond<F: WireFormat>(
    state: &SimState,
    started: Instant,
    result: Result<impl IntoResponse, F::Error>,
) -> Response {
    match result {
        Ok(response) => ok_response::<F>(state, response, started),
        Err(error) => error_response::<F>(state, &error, started),
    }
}

/// Any other path or method: `F`'s 404.
pub(crate) fn not_found<F: WireFormat>(state: &SimState, method: &Method, uri: &Uri) -> Response {
    error_response::<F>(state, &F::not_found(method, uri), Instant::now())
}

/// A batch item: `body`, answered as a realtime call of it would be (the answer, or the
/// error), or failed by its `batch=` directive.
pub(crate) fn batch_item<F: WireFormat>(
    state: &SimState,
    target: &F::Target,
    body: &Value,
) -> batches::Outcome {
    state.log_request(body.clone());
    let answered = || -> Result<batches::Outcome, F::Error> {
        let Some(request) = body.as_object() else {
            return Err(F::not_an_object(body, Place::BatchItem));
        };
        let request = F::batch_request(request);
        let parsed = F::validate(&request)?;
        if F::delivery(target, &parsed) != Delivery::Whole {
            return Err(F::streaming_in_batch());
        }
        let texts = F::texts(&request, &parsed);
        match call::batched(&texts, F::conversation(&parsed)).map_err(F::bad_directive)? {
            Batched::Answer(answer) => Ok(batches::Outcome::Answered {
                body: F::batch_answer(target, &parsed, &answer),
                usage: batches::Usage {
                    prompt_tokens: answer.prompt_tokens,
                    completion_tokens: answer.completion_tokens * F::choices(&parsed),
                    cached_tokens: answer.cached_tokens,
                },
            }),
            Batched::Fail(fault) => Err(F::fault_error(state, fault, target, &parsed)),
            Batched::Expire => Ok(batches::Outcome::Expires),
        }
    };
    answered().unwrap_or_else(|error| batches::Outcome::Failed {
        status: error.status().as_u16(),
        body: error.body(&request_id()),
    })
}
