//! One call, whatever its wire format: the steps between reading a request and rendering
//! the result.
//!
//! The pipeline (`pipeline`) has the family parse and validate its own format, then hands
//! the texts it found, the request body (for the request key) and its [`Conversation`] to
//! [`run`], which reads the directives, decides this call's fault (the request's `fail=`
//! plan, or a random fault), waits out `latency` (and `ttft` when the answer is not
//! streamed), holds `timeout` calls, and derives the [`Answer`]. The pipeline renders the
//! [`Outcome`] in the family's words. So a directive means the same thing on every endpoint.
//!
//! A batch item takes a shorter path, [`batched`]: the same directives and the same
//! [`Answer`], but none of a call's timing (no fail plan, random fault, latency or hold: a
//! batch's items are not calls a client waits on), and its `batch=` directive instead.

use super::answer::{self, Answer, Conversation};
use super::faults::{BatchFate, DirectiveError, Directives, Fault};
use super::SimState;
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// How long a `timeout` fault holds a request, and a `stall` its body, when nobody shuts the
/// simulator down.
pub(crate) const HOLD: Duration = Duration::from_secs(600);

/// What the family has to render.
#[derive(Debug)]
pub enum Outcome {
    /// Answer normally; `stream` carries what the stream must do on the way.
    Answer { answer: Answer, stream: StreamPlan },
    /// Answer with this injected error: a status, `quota`, or (not streaming) `midstream`.
    Fail(Fault),
    /// A directive (text, header or `tool=`) the simulator cannot carry out: a 400.
    BadDirective(DirectiveError),
    /// The simulator is shutting down (a held or delayed call was released).
    Shutdown,
}

/// How a body is delivered: its first-token delay and its fault, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamPlan {
    /// Before the first content chunk (streams only; a non-streamed answer has waited it).
    pub ttft: Duration,
    /// Between content chunks (streams only).
    pub itl: Duration,
    pub fault: Option<BodyFault>,
    /// When the simulator keeps a first-token log ([`SimServer::record_first_tokens`]): the
    /// call's key there and when the call arrived.
    ///
    /// [`SimServer::record_first_tokens`]: super::SimServer::record_first_tokens
    pub timed: Option<(u64, Instant)>,
}

/// A fault that strikes after the status line: the body goes wrong, not the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// The connection closes half-way through the body.
    Cut,
    /// Half-way through, the stream carries the family's in-stream error and ends.
    Midstream,
    /// Half-way through, the body stops with the connection open (for [`HOLD`]).
    Stall,
}

/// What a family hands over after validating its request.
pub struct Request<'a> {
    /// The body as received, for the request key.
    pub body: &'a Map<String, Value>,
    /// Every piece of text the request carries, to look for directives in.
    pub texts: Vec<&'a str>,
    pub conversation: Conversation,
    pub stream: bool,
}

/// Runs the shared steps of one call.
pub async fn run(state: &SimState, headers: &HeaderMap, request: Request<'_>) -> Outcome {
    let arrived = Instant::now();
    let (directives, fault_header) = match directives(&request.texts, headers) {
        Ok(found) => found,
        Err(error) => return Outcome::BadDirective(error),
    };
    // The answer is derived before any fault so that a `tool=` typo is a 400 on every call,
    // not only on the ones that get past the fail plan.
    let answer = match answer::answer(&request.conversation, &directives) {
        Ok(answer) => answer,
        Err(error) => return Outcome::BadDirective(error),
    };
    let fault = match &directives.fail {
        Some(plan) => plan.fault_for_call(state.next_call(request_key(request.body, fault_header))),
        // Random faults only hit requests that did not script their own behaviour.
        None => random_fault(state),
    };

    let latency = directives.latency.unwrap_or(state.config.latency);
    if pause(state, latency).await.is_err() {
        return Outcome::Shutdown;
    }
    let ttft = directives.ttft.unwrap_or(Duration::ZERO);
    let body_fault = match fault {
        None => None,
        Some(Fault::Timeout) => {
            state.count_hung();
            let _ = pause(state, HOLD).await;
            return Outcome::Shutdown;
        }
        Some(Fault::Cut) => Some(BodyFault::Cut),
        Some(Fault::Stall) => Some(BodyFault::Stall),
        Some(Fault::Midstream) if request.stream => Some(BodyFault::Midstream),
        Some(fault) => return Outcome::Fail(fault),
    };
    if request.stream {
        return Outcome::Answer {
            answer,
            stream: StreamPlan {
                ttft,
                itl: directives.itl.unwrap_or(Duration::ZERO),
                fault: body_fault,
                timed: state
                    .records_first_tokens()
                    .then(|| request.texts.last().map(|text| (text_key(text), arrived)))
                    .flatten(),
            },
        };
    }
    // Not streamed: the first token is the whole answer.
    if pause(state, ttft).await.is_err() {
        return Outcome::Shutdown;
    }
    Outcome::Answer {
        answer,
        stream: StreamPlan {
            fault: body_fault,
            ..StreamPlan::default()
        },
    }
}

/// The key under which the first-token log files a call: a hash of the call's last text (its
/// latest message), which a benchmark makes unique per call.
pub fn text_key(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// What a batch makes of one of its requests.
#[derive(Debug)]
pub enum Batched {
    /// Answered exactly as a realtime call of the request would be.
    Answer(Answer),
    /// `batch=error` or `batch=invalid`: the family's error for this status.
    Fail(Fault),
    /// `batch=expire`: never answered; it expires when the batch ends.
    Expire,
}

/// The fate of a batch item: its directives (from its texts; a batch has no per-item
/// headers) and the simulated model's answer.
pub fn batched(texts: &[&str], conversation: &Conversation) -> Result<Batched, DirectiveError> {
    let directives = Directives::from_texts(texts.iter().copied())?;
    // As in `run`: the answer first, so a `tool=` typo is an error whatever the fate.
    let answer = answer::answer(conversation, &directives)?;
    Ok(match directives.batch {
        None => Batched::Answer(answer),
        Some(BatchFate::Error) => Batched::Fail(Fault::Status(500)),
        Some(BatchFate::Invalid) => Batched::Fail(Fault::Status(400)),
        Some(BatchFate::Expire) => Batched::Expire,
    })
}

/// Sleeps, unless the simulator shuts down first (`Err`).
pub async fn pause(state: &SimState, duration: Duration) -> Result<(), ()> {
    if duration.is_zero() {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = state.shutting_down() => Err(()),
    }
}

/// The directives of the texts, then of the `x-sim-fault` header (which wins), and the
/// header's value (part of the request key).
fn directives<'h>(
    texts: &[&str],
    headers: &'h HeaderMap,
) -> Result<(Directives, Option<&'h str>), DirectiveError> {
    let mut directives = Directives::from_texts(texts.iter().copied())?;
    let header = match headers.get("x-sim-fault") {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| DirectiveError("x-sim-fault is not visible ASCII".into()))?;
            directives.apply_header(value)?;
            Some(value)
        }
        None => None,
    };
    Ok((directives, header))
}

/// One seeded draw decides the random fault of a call, so a run with a seed is repeatable
/// (in call order).
fn random_fault(state: &SimState) -> Option<Fault> {
    let config = &state.config;
    if config.rate_429 + config.rate_500 + config.rate_timeout <= 0.0 {
        return None;
    }
    let draw = state.draw();
    if draw < config.rate_429 {
        Some(Fault::Status(429))
    } else if draw < config.rate_429 + config.rate_500 {
        Some(Fault::Status(500))
    } else if draw < config.rate_429 + config.rate_500 + config.rate_timeout {
        Some(Fault::Timeout)
    } else {
        None
    }
}

/// Identifies "the same request" for `fail=` counting: the body without `model` and
/// `service_tier`, keys sorted, plus the fault header. Both are left out so a job that falls
/// back to another model, or from OpenAI's flex tier to the default one, is still the same
/// job (Gemini carries the model in the path, so never here).
pub fn request_key(request: &Map<String, Value>, fault_header: Option<&str>) -> u64 {
    let mut text = String::new();
    let without_model: Map<String, Value> = request
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "model" | "service_tier"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    canonical(&Value::Object(without_model), &mut text);
    text.push('\n');
    text.push_str(fault_header.unwrap_or_default());
    answer::fnv1a(text.as_bytes())
}

/// JSON with object keys sorted, so key order does not make two requests different.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&object[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_key_ignores_model_and_key_order() {
        let map = |v: Value| -> Map<String, Value> { serde_json::from_value(v).unwrap() };
        let a = map(json!({"model": "a", "messages": [], "temperature": 1}));
        let b = map(json!({"temperature": 1, "messages": [], "model": "b"}));
        let c = map(json!({"temperature": 2, "messages": [], "model": "a"}));
        assert_eq!(request_key(&a, None), request_key(&b, None));
        assert_ne!(request_key(&a, None), request_key(&c, None));
        assert_ne!(request_key(&a, None), request_key(&a, Some("429")));
    }
}
