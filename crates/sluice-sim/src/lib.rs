//! The provider simulator: a local server that speaks the providers' real wire formats.
//!
//! No machine Sluice is developed or demonstrated on reaches a real provider, so the
//! simulator stands in for them. It is a product feature: it powers `sluice sim`,
//! `sluice demo`, the integration tests and the benchmarks. Two promises make it useful:
//!
//! - **Faithful format.** It answers exactly as each provider documents, so the official
//!   OpenAI, Anthropic and Gemini SDKs accept it (`tests/suite/sdk.rs` runs them against it) and
//!   Sluice's adapters, written against the documentation, are exercised for real.
//! - **Deterministic behaviour.** The same request always gets the same answer (derived from
//!   the last user turn), the same tool call and the same token counts ([`tokens`]), on
//!   every endpoint, streamed or not, so tests can assert on content and cost.
//!
//! Served (one module per wire format, all on one port):
//!
//! | family | endpoint | base URL for the SDK |
//! | --- | --- | --- |
//! | OpenAI ([`openai`]) | `POST /v1/chat/completions` (`stream: true`: SSE chunks, `data: [DONE]`) | [`SimServer::openai_base_url`] `http://ADDR/v1` |
//! | Anthropic ([`anthropic`]) | `POST /v1/messages` (`stream: true`: named events, `message_stop`) | [`SimServer::anthropic_base_url`] `http://ADDR` |
//! | Gemini ([`gemini`]) | `POST /v1beta/models/{model}:generateContent`, `…:streamGenerateContent?alt=sse` (also under `/v1`) | [`SimServer::gemini_base_url`] `http://ADDR/v1beta`; the `google-genai` SDK takes `base_url=http://ADDR`, `api_version="v1beta"` |
//! | OpenAI batches (`batches::openai`) | `POST /v1/files`, `GET /v1/files/{id}`, `…/content`; `POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel` | as OpenAI |
//! | Anthropic batches (`batches::anthropic`) | `POST /v1/messages/batches`, `GET /v1/messages/batches`, `GET …/{id}`, `POST …/{id}/cancel`, `GET …/{id}/results` | as Anthropic |
//! | Gemini batches (`batches::gemini`) | `POST /v1beta/models/{model}:batchGenerateContent` (inline requests), `GET /v1beta/batches`, `GET /v1beta/batches/{id}`, `POST /v1beta/batches/{id}:cancel` (also under `/v1`) | as Gemini |
//!
//! A batch's items are answered by the same model as the realtime endpoints; it ends
//! `batch_turnaround` after creation, or expires at `batch_window` ([`SimConfig`]). See
//! `batches` for the lifecycle.
//!
//! Each family only reads and writes its format (a `WireFormat`: its request, answer,
//! stream events, errors and headers); what they share lives in one place each: the request
//! pipeline every endpoint and batch item goes through (`pipeline`), directives and fail
//! plans ([`faults`]), the steps of a call (`call`), the simulated model ([`answer`], with [`schema`] for tool
//! arguments and JSON answers), streaming and broken bodies (`stream`), token counts
//! ([`tokens`]), and the stats (also per API key) and the rate-limit window (here).
//!
//! # Tools and JSON mode
//!
//! A request that offers tools is answered with a call of one when its tool choice forces
//! it (OpenAI `required` or a named function, Anthropic `any` or `tool`, Gemini `ANY`) or
//! when it carries `[sim tool=NAME]`; the arguments are an example of the tool's JSON Schema
//! (every required property, a value of its type). A conversation that ends with tool
//! results is answered in text that quotes them, unless the tool choice forces another
//! call (as the providers do). JSON mode (OpenAI `response_format`, Anthropic
//! `output_config.format`, Gemini `responseMimeType: application/json`) answers JSON that
//! conforms to the schema when one is given, `{"answer": "…"}` otherwise. `max_tokens`
//! (any family's name for it) cuts the text with `length` / `max_tokens` / `MAX_TOKENS`;
//! stop sequences end it before the sequence.
//!
//! # Fault injection
//!
//! Faults come from two places.
//!
//! **Random faults** for the whole server ([`SimConfig`]): `rate_429`, `rate_500` and
//! `rate_timeout` are probabilities per call, drawn from one RNG seeded with `seed`.
//!
//! **Directives** for one request: write `[sim KEY=VALUE …]` anywhere in the text of any
//! message (a string `content`, a `text` part or block, a Gemini `text` part, a system
//! prompt), or send the header `x-sim-fault: LIST` (or `x-sim-fault: KEY=VALUE …`). They
//! mean the same on every endpoint; each family answers in its own words (OpenAI's error
//! body, Anthropic's `error.type`, Google's RPC `status`). Keys:
//!
//! | directive | effect |
//! | --- | --- |
//! | `fail=429` | the 1st call of this request answers 429 with `retry-after` (OpenAI `rate_limit_exceeded` + `retry-after-ms`; Anthropic `rate_limit_error`; Gemini `RESOURCE_EXHAUSTED` with a `RetryInfo` `retryDelay`, no header); later calls succeed |
//! | `fail=429,500` | 1st call 429, 2nd call 500 (OpenAI `server_error`, Anthropic `api_error`, Gemini `INTERNAL`), then success |
//! | `fail=500*` | `*` repeats the last step forever: always 500 |
//! | `fail=529` | Anthropic's `overloaded_error`; OpenAI and Gemini answer status 529 with their overload message |
//! | `fail=503`, `fail=504`, … | any status 400–599 with the family's error body and type (Anthropic 504 `timeout_error`, Gemini 503 `UNAVAILABLE`, 504 `DEADLINE_EXCEEDED`) |
//! | `fail=400` | 400 with a message; client errors (4xx except 408, 409, 429) are properties of the request, so they answer *every* call |
//! | `fail=quota` | spent credit, every call: OpenAI 429 `insufficient_quota`; Anthropic 429 `rate_limit_error` "reached your specified API usage limits" with `details.error_code: enforced_spend_limit_reached` and no `retry-after`; Gemini 429 `RESOURCE_EXHAUSTED` with a per-day `QuotaFailure` and no `RetryInfo` |
//! | `fail=timeout` | the 1st call never answers (the server holds it for 10 minutes, or until shutdown) |
//! | `fail=cut` | the connection closes half-way through the body: a stream after half its content chunks, without its terminator (`[DONE]`, `message_stop`, the final Gemini chunk); a plain answer after half its JSON (the `content-length` promised all of it) |
//! | `fail=stall` | the body stops half-way and the connection stays open, silent, for 10 minutes (or until shutdown), then closes: a stream after half its content chunks (as `cut`, but nothing more arrives), a plain answer after half its JSON; for testing a client's idle limit (Sluice's `stream_idle_timeout`) |
//! | `fail=midstream` | a stream starts well, then carries the family's in-stream error after half its content and ends: OpenAI a `data:` line with an `error` object (no `[DONE]`), Anthropic `event: error` `overloaded_error` (no `message_stop`), Gemini a `data:` chunk `{"error": {… "status": "UNAVAILABLE"}}`; not streamed, the call gets that overload error as its status (503, 529, 503) |
//! | `latency=200ms` | wait this long before answering (any humantime duration) instead of the configured `latency` |
//! | `ttft=500ms` | a slow first token: a stream sends its headers and opening event at once and its first content chunk after this long; a plain answer comes this much later (after `latency`) |
//! | `itl=20ms` | a stream's pace: each content chunk after the first comes this long after the one before (a provider's inter-token latency; 50 tokens a second here); a plain answer is not affected |
//! | `cached=512` | report this many prompt tokens as cached (capped at the prompt): OpenAI `cached_tokens` (inside `prompt_tokens`), Anthropic `cache_read_input_tokens` (taken out of `input_tokens`), Gemini `cachedContentTokenCount` (inside `promptTokenCount`) |
//! | `tool=get_weather` | answer with a call of this offered tool; an answer to its result is text. A tool the request does not offer is a 400 naming the offered ones |
//! | `batch=error` | in a batch, this item fails with a server error, worth retrying (OpenAI a `response` with `status_code` 500 in the error file, Anthropic an `errored` result with `api_error`, Gemini an `error` with status `INTERNAL`); a realtime call ignores it |
//! | `batch=invalid` | in a batch, this item fails with an invalid-request error, not worth retrying (OpenAI status 400 `invalid_request_error`, Anthropic `invalid_request_error`, Gemini `INVALID_ARGUMENT`); a realtime call ignores it |
//! | `batch=expire` | in a batch, this item is never answered and expires when the batch ends, even if the batch completes (OpenAI `batch_expired`, Anthropic `expired`, Gemini `DEADLINE_EXCEEDED`); a realtime call ignores it |
//!
//! In a batch, only `batch=`, `tool=` and `cached=` act: a batch item is not a call a client
//! waits on, so fail plans, random faults, `latency` and `ttft` do not apply to it.
//!
//! Several keys go in one directive separated by spaces: `[sim fail=429 latency=50ms]`.
//! `fail=` steps mix: `fail=cut,midstream,500`. The header wins over the messages. A
//! directive the simulator cannot parse is answered with a 400 that names the problem, so a
//! typo never silently runs the happy path.
//!
//! "The Nth call of a request" counts calls whose bodies are equal apart from `model` and
//! `service_tier` (JSON compared with sorted keys) and carry the same `x-sim-fault` header. `model` is left
//! out so a job that falls back to another model on the same simulator is still the same
//! job: `[sim fail=429]` then fails its first attempt only, wherever it goes.
//!
//! Directives are stripped from the text an answer is derived from, but count as prompt
//! tokens like any other text, because they were sent.

pub mod answer;
pub mod anthropic;
pub(crate) mod batches;
pub(crate) mod call;
mod config;
pub mod faults;
pub mod gemini;
pub mod net;
pub mod openai;
pub(crate) mod pipeline;
pub mod schema;
pub(crate) mod stream;
pub mod tokens;
pub use call::text_key;
pub use net::no_delay;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Router;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::config::{SimConfig, SimConfigError};

/// The API families the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Anthropic,
    Gemini,
}

/// Counters of what the simulator has served, for tests ("the finished job was not called
/// again") and benchmarks (tokens per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Every chat call received (OpenAI chat completions, Anthropic messages, Gemini
    /// generateContent, streamed or not), whatever its outcome.
    pub chat_requests: u64,
    /// `chat_requests` of each family.
    pub openai_requests: u64,
    pub anthropic_requests: u64,
    pub gemini_requests: u64,
    /// Those answered with a whole completion (streamed or not).
    pub completions: u64,
    /// Of `completions`, those streamed.
    pub streams: u64,
    /// Those answered with an error status, or whose body was broken on purpose (`cut`,
    /// `midstream`).
    pub errors: u64,
    /// Those held without an answer (`timeout` faults).
    pub hung: u64,
    /// Sums over `completions`, as reported in their usage.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Requests received inside batches (every family's batch API), counted when their batch
    /// is created. They are not chat calls: `chat_requests` and the counts above are the
    /// realtime tier's.
    pub batch_items: u64,
}

/// How many request bodies [`SimServer::requests`] keeps: enough for any test, bounded for
/// benchmarks.
const REQUEST_LOG_CAPACITY: usize = 256;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    chat_requests: AtomicU64,
    family_requests: [AtomicU64; 3],
    completions: AtomicU64,
    streams: AtomicU64,
    errors: AtomicU64,
    hung: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Chat calls per API key (the key's text as sent), so tests can check that no key was
    /// pushed past its quota. Keys are few, so the map stays small.
    per_key: Mutex<HashMap<String, u64>>,
    /// Calls so far per request key, only for requests that carry a `fail=` plan (so the map
    /// does not grow with a benchmark's millions of plain requests).
    calls: Mutex<HashMap<u64, u64>>,
    rng: Mutex<rand::rngs::StdRng>,
    requests: Mutex<VecDeque<serde_json::Value>>,
    /// Each streamed call's time to its first content event, by [`call::text_key`]; `None`
    /// until [`SimServer::record_first_tokens`] turns it on (it grows with every stream).
    first_tokens: Mutex<Option<HashMap<u64, FirstToken>>>,
    /// The rate-limit window the `x-ratelimit-*` headers describe.
    window: Mutex<Window>,
    /// Flips to `true` on shutdown, releasing held (`timeout`) requests. `None` when embedded
    /// through [`router`], which has no shutdown of its own.
    shutdown: Option<watch::Receiver<bool>>,
    /// The batch APIs' batches and files.
    pub(crate) batches: batches::Batches,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    requests: u64,
    tokens: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimState {
    fn new(config: SimConfig, shutdown: Option<watch::Receiver<bool>>) -> Self {
        use rand::SeedableRng;
        SimState {
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(config.seed)),
            config,
            chat_requests: AtomicU64::new(0),
            family_requests: Default::default(),
            completions: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            calls: Mutex::new(HashMap::new()),
            per_key: Mutex::new(HashMap::new()),
            requests: Mutex::new(VecDeque::new()),
            first_tokens: Mutex::new(None),
            window: Mutex::new(Window {
                started: Instant::now(),
                requests: 0,
                tokens: 0,
            }),
            shutdown,
            batches: batches::Batches::default(),
        }
    }

    pub(crate) fn records_first_tokens(&self) -> bool {
        lock(&self.first_tokens).is_some()
    }

    /// A streamed call (`key`, arrived at `arrived`) is sending its first content event now.
    pub(crate) fn note_first_token(&self, key: u64, arrived: Instant) {
        if let Some(log) = lock(&self.first_tokens).as_mut() {
            let took = arrived.elapsed();
            log.insert(key, FirstToken { arrived, took });
        }
    }

    /// How long batches take, as configured.
    pub(crate) fn batch_timing(&self) -> batches::Timing {
        batches::Timing {
            turnaround: self.config.batch_turnaround,
            window: self.config.batch_window,
        }
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            chat_requests: self.chat_requests.load(Ordering::Relaxed),
            openai_requests: self.family_requests[0].load(Ordering::Relaxed),
            anthropic_requests: self.family_requests[1].load(Ordering::Relaxed),
            gemini_requests: self.family_requests[2].load(Ordering::Relaxed),
            completions: self.completions.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
            batch_items: self.batches.items(),
        }
    }

    /// Counts a chat call of `family` made with `headers` (and, for Gemini, `?key=`).
    pub(crate) fn count_request(
        &self,
        family: Family,
        headers: &HeaderMap,
        query_key: Option<&str>,
    ) {
        self.chat_requests.fetch_add(1, Ordering::Relaxed);
        self.family_requests[family as usize].fetch_add(1, Ordering::Relaxed);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        // Whichever way the family carries its key: bearer (OpenAI, Anthropic OAuth),
        // x-api-key (Anthropic), x-goog-api-key or ?key= (Gemini).
        let key = header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| header("x-api-key"))
            .or_else(|| header("x-goog-api-key"))
            .or(query_key)
            .unwrap_or("");
        *lock(&self.per_key).entry(key.to_string()).or_insert(0) += 1;
    }

    pub(crate) fn count_completion(
        &self,
        prompt_tokens: u64,
        completion_tokens: u64,
        streamed: bool,
    ) {
        self.completions.fetch_add(1, Ordering::Relaxed);
        if streamed {
            self.streams.fetch_add(1, Ordering::Relaxed);
        }
        self.prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion_tokens, Ordering::Relaxed);
    }

    pub(crate) fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_hung(&self) {
        self.hung.fetch_add(1, Ordering::Relaxed);
    }

    /// Records this call of the request `key` and returns its 1-based number.
    pub(crate) fn next_call(&self, key: u64) -> u64 {
        let mut calls = lock(&self.calls);
        let n = calls.entry(key).or_insert(0);
        *n += 1;
        *n
    }

    /// A uniform draw in `[0, 1)` from the seeded RNG.
    pub(crate) fn draw(&self) -> f64 {
        use rand::Rng;
        lock(&self.rng).random::<f64>()
    }

    pub(crate) fn log_request(&self, body: serde_json::Value) {
        let mut log = lock(&self.requests);
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(body);
    }

    /// Counts a call against the one-minute window and returns (requests used, tokens used,
    /// time until the window resets).
    pub(crate) fn window_use(&self, tokens: u64) -> (u64, u64, Duration) {
        const WINDOW: Duration = Duration::from_secs(60);
        let mut window = lock(&self.window);
        let now = Instant::now();
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                requests: 0,
                tokens: 0,
            };
        }
        window.requests += 1;
        window.tokens += tokens;
        let reset = WINDOW.saturating_sub(now.duration_since(window.started));
        (window.requests, window.tokens, reset)
    }

    /// Resolves when the simulator shuts down.
    pub(crate) async fn shutting_down(&self) {
        match self.shutdown.clone() {
            Some(mut shutdown) => {
                // An error means the server (and its sender) is gone: a shutdown too.
                let _ = shutdown.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// A family's announced rate limits. Reported in headers, not enforced: limits are simulated
/// with faults, which tests can aim.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub requests: u64,
    pub tokens: u64,
}

/// The rate-limit state one response reports, in whichever family's headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateHeaders {
    pub limits: Limits,
    pub remaining_requests: u64,
    pub remaining_tokens: u64,
    pub reset_requests: Duration,
    pub reset_tokens: Duration,
}

impl RateHeaders {
    /// Counts this call in the current window.
    pub(crate) fn counted(state: &SimState, limits: Limits, tokens: u64) -> Self {
        let limits = Limits {
            requests: state
                .config
                .announced_requests_per_minute
                .unwrap_or(limits.requests),
            ..limits
        };
        let (requests, used_tokens, reset) = state.window_use(tokens);
        // Whole milliseconds, like the providers' own values (`12ms`, `6m0s`), not
        // `50.652274288s`.
        let reset = Duration::from_millis(reset.as_millis() as u64);
        RateHeaders {
            limits,
            remaining_requests: limits.requests.saturating_sub(requests),
            remaining_tokens: limits.tokens.saturating_sub(used_tokens),
            reset_requests: reset,
            reset_tokens: reset,
        }
    }

    /// A rate-limited call: the request budget is spent until `retry_after`.
    pub(crate) fn exhausted(limits: Limits, retry_after: Duration) -> Self {
        RateHeaders {
            limits,
            remaining_requests: 0,
            remaining_tokens: limits.tokens,
            reset_requests: retry_after,
            reset_tokens: Duration::ZERO,
        }
    }
}

/// The simulator's routes, for embedding in another server. Held (`timeout`) requests are
/// released only by their 10-minute cap here; [`spawn`] also releases them on shutdown.
pub fn router(config: SimConfig) -> Router {
    build_router(Arc::new(SimState::new(config, None)))
}

/// Requests carry whole documents and base64 images; axum's 2 MB default is too small.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

fn build_router(state: Arc<SimState>) -> Router {
    openai::routes()
        .merge(anthropic::routes())
        .merge(gemini::routes())
        .merge(batches::routes())
        .fallback(unknown_route)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Any other path or method: the 404 of the family the request looks like it is for, so an
/// SDK pointed at a wrong path gets an error it can parse.
async fn unknown_route(
    state: axum::extract::State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if path.starts_with("/v1beta/") || path.starts_with("/v1/models/") {
        gemini::unknown_route(state, method, uri).await
    } else if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        anthropic::unknown_route(state, method, uri).await
    } else {
        openai::unknown_route(state, method, uri).await
    }
}

/// One streamed call in the first-token log (see [`SimServer::record_first_tokens`]).
#[derive(Debug, Clone, Copy)]
pub struct FirstToken {
    /// When the call arrived (its body read).
    pub arrived: Instant,
    /// From then to its first content event leaving for the socket.
    pub took: Duration,
}

/// A running simulator. Stops when [`shutdown`](SimServer::shutdown) is called or when
/// dropped.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Binds `addr` (port 0 picks a free port) and serves the simulator in the background.
pub async fn spawn(addr: SocketAddr, config: SimConfig) -> std::io::Result<SimServer> {
    spawn_on(tokio::net::TcpListener::bind(addr).await?, config).await
}

/// Serves the simulator in the background on a listener already bound (so a caller that must
/// know the port first never releases it for someone else to take).
pub async fn spawn_on(
    listener: tokio::net::TcpListener,
    config: SimConfig,
) -> std::io::Result<SimServer> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let addr = listener.local_addr()?;
    let (stop, shutdown) = watch::channel(false);
    let state = Arc::new(SimState::new(config, Some(shutdown.clone())));
    let app = build_router(state.clone());
    let mut signal = shutdown;
    let task = tokio::spawn(async move {
        axum::serve(no_delay(listener), app)
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(%addr, "provider simulator listening");
    Ok(SimServer {
        addr,
        state,
        stop,
        task: Some(task),
    })
}

impl SimServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give an OpenAI client: `http://ADDR/v1` (the SDK appends
    /// `/chat/completions`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base URL to give an Anthropic client: `http://ADDR` (the SDK appends
    /// `/v1/messages`, as it does to `https://api.anthropic.com`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Gemini API root with its version: `http://ADDR/v1beta`, to which a REST client
    /// appends `/models/{model}:generateContent`. The `google-genai` SDK takes the version
    /// apart: give it `http_options={"base_url": "http://ADDR", "api_version": "v1beta"}`
    /// (the simulator serves `v1` too, the SDK's default).
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// The base URL of `family`, as its clients expect it (see the three above).
    pub fn base_url(&self, family: Family) -> String {
        match family {
            Family::OpenAi => self.openai_base_url(),
            Family::Anthropic => self.anthropic_base_url(),
            Family::Gemini => self.gemini_base_url(),
        }
    }

    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Batches created so far on `family`'s batch API (those refused with a 400 not
    /// counted; an OpenAI batch whose input file fails validation counted).
    pub fn batches_created(&self, family: Family) -> u64 {
        self.state.batches.created(family)
    }

    /// Chat calls received per API key (as sent; `""` for calls without one), every family.
    pub fn requests_per_key(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.state.per_key)
            .iter()
            .map(|(key, n)| (key.clone(), *n))
            .collect()
    }

    /// The bodies of the most recent chat requests of every family (up to 256), oldest
    /// first, as received.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        lock(&self.state.requests).iter().cloned().collect()
    }

    /// Starts keeping, for every streamed call from now on, the simulator's own time to its
    /// first content event: from the call's arrival (its body read) to that event leaving for
    /// the socket. So a benchmark can subtract what the provider took, as measured, from what
    /// its client saw, where a nominal `ttft=` would count a late timer or a busy machine
    /// against the caller.
    pub fn record_first_tokens(&self) {
        lock(&self.state.first_tokens).get_or_insert_with(HashMap::new);
    }

    /// The first-token log so far: the time to first content event of each streamed call,
    /// keyed by [`text_key`] of the call's last text (see [`SimServer::record_first_tokens`]).
    pub fn first_tokens(&self) -> HashMap<u64, FirstToken> {
        lock(&self.state.first_tokens).clone().unwrap_or_default()
    }

    /// Stops accepting, releases held requests, and waits for in-flight answers to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "provider simulator stopped with an error")
                }
                Err(e) => tracing::warn!(error = %e, "provider simulator task failed"),
            }
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        // The serving task sees this and finishes on its own; nothing to wait for here.
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawn_refuses_an_invalid_config() {
        let config = SimConfig {
            rate_timeout: -0.1,
            ..SimConfig::default()
        };
        let err = spawn("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
