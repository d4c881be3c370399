//! Delivering a body over time: server-sent-event streams and bodies that break on the way.
//!
//! The three families stream with the same mechanics and different frames: OpenAI sends
//! `data:` lines ending with `data: [DONE]`, Anthropic named events ending with
//! `message_stop`, Gemini `data:` lines ending when the connection closes. Each family
//! builds its frames; this module sends them, holds back the first content frame for
//! `ttft`, and carries out the body faults: `cut` closes the connection half-way without
//! the terminator (HTTP framing left incomplete, as when a network path dies), `midstream`
//! sends the family's error frame half-way and ends there, `stall` stops sending half-way
//! and keeps the connection open (a stuck generation or a silent network path), so only a
//! client's own idle limit or deadline ends it.

use super::call::{BodyFault, StreamPlan, HOLD};
use super::SimState;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lets the frames before a cut reach the socket before the connection is torn down, so the
/// client reliably sees "some chunks, then a broken connection".
const FLUSH: Duration = Duration::from_millis(50);

/// One server-sent event, framed.
#[derive(Debug, Clone)]
pub struct Event {
    frame: Bytes,
    /// Carries generated content: `ttft` delays the first such event (`itl` each later one),
    /// faults strike after half of them.
    content: bool,
}

impl Event {
    /// `event: NAME` (when named) and `data: JSON`, then the blank line that ends an event.
    pub fn new(name: Option<&str>, data: &Value, content: bool) -> Event {
        let mut frame = String::new();
        if let Some(name) = name {
            frame.push_str("event: ");
            frame.push_str(name);
            frame.push('\n');
        }
        frame.push_str("data: ");
        frame.push_str(&data.to_string());
        frame.push_str("\n\n");
        Event {
            frame: Bytes::from(frame),
            content,
        }
    }

    /// A frame that is not JSON, like OpenAI's `data: [DONE]`.
    pub fn raw(frame: &'static str) -> Event {
        Event {
            frame: Bytes::from_static(frame.as_bytes()),
            content: false,
        }
    }
}

enum Step {
    Send(Bytes),
    /// The first content event goes next: log the call's time to it (taken before the
    /// write, so that the write counts against the caller, not the provider).
    FirstToken(u64, Instant),
    Wait(Duration),
    Abort,
}

/// A 200 `text/event-stream` response sending `events` as `plan` says; `error` is the
/// family's in-stream error event, for `midstream`.
pub fn sse(state: Arc<SimState>, events: Vec<Event>, plan: StreamPlan, error: Event) -> Response {
    let contents = events.iter().filter(|event| event.content).count();
    // The fault strikes after half of the content (at least one event, so something arrived).
    let strike_after = contents.div_ceil(2).max(1);
    let mut steps = Vec::with_capacity(events.len() + 3);
    let mut seen = 0;
    let mut waited = false;
    for (i, event) in events.into_iter().enumerate() {
        if event.content && !waited {
            steps.push(Step::Wait(plan.ttft));
            waited = true;
        } else if event.content && !plan.itl.is_zero() {
            steps.push(Step::Wait(plan.itl));
        }
        seen += usize::from(event.content);
        if let (true, Some((key, arrived))) = (event.content && seen == 1, plan.timed) {
            steps.push(Step::FirstToken(key, arrived));
        }
        steps.push(Step::Send(event.frame));
        let strike = if contents == 0 { i + 1 } else { seen };
        if let (Some(fault), true) = (plan.fault, strike == strike_after) {
            match fault {
                BodyFault::Cut => steps.extend([Step::Wait(FLUSH), Step::Abort]),
                BodyFault::Midstream => steps.push(Step::Send(error.frame)),
                BodyFault::Stall => steps.extend([Step::Wait(HOLD), Step::Abort]),
            }
            break;
        }
    }
    let mut response = Response::new(stepped(state, steps));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A JSON response; with a `cut`, only the first half of the body arrives before the
/// connection closes (the `content-length` promises all of it), with a `stall` the first
/// half and then nothing.
pub fn json(state: Arc<SimState>, status: StatusCode, body: &Value, plan: StreamPlan) -> Response {
    let bytes = Bytes::from(body.to_string());
    let length = bytes.len();
    let mut response = match plan.fault {
        Some(fault @ (BodyFault::Cut | BodyFault::Stall)) => {
            let half = bytes.slice(..length / 2);
            let wait = if fault == BodyFault::Cut { FLUSH } else { HOLD };
            Response::new(stepped(
                state,
                vec![Step::Send(half), Step::Wait(wait), Step::Abort],
            ))
        }
        _ => Response::new(Body::from(bytes)),
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

fn stepped(state: Arc<SimState>, steps: Vec<Step>) -> Body {
    let stream = futures::stream::iter(steps)
        .then(move |step| {
            let state = state.clone();
            async move {
                match step {
                    Step::Send(bytes) => Some(Ok(bytes)),
                    Step::FirstToken(key, arrived) => {
                        state.note_first_token(key, arrived);
                        None
                    }
                    Step::Wait(duration) => match super::call::pause(&state, duration).await {
                        Ok(()) => None,
                        Err(()) => Some(Err(broken("the simulator is shutting down"))),
                    },
                    Step::Abort => Some(Err(broken("simulated cut (fail=cut, or a stall's end)"))),
                }
            }
        })
        .filter_map(futures::future::ready);
    Body::from_stream(stream)
}

fn broken(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.to_string())
}
