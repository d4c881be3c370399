//! Per-key rate limits: requests/min, tokens/min and requests/day, checked *before* a call,
//! so Sluice never pushes a provider key past its quota and learns about limits from its own
//! buckets rather than from 429s.
//!
//! Each key of a deployment has up to three GCRA buckets ([`governor`] direct limiters; the
//! keys' quotas differ, so one keyed limiter with a single quota would not fit, and direct
//! limiters held beside the key skip the map lookup): `requests_per_minute` (burst = the
//! limit), `tokens_per_minute` (burst = the limit, so any single request up to the whole
//! minute's tokens can pass) and `requests_per_day`. A call takes one request cell and
//! `check_n` of its [estimated](estimate_tokens) tokens.
//!
//! **Order of the checks.** governor consumes cells only when a check succeeds, and has no
//! refund, so when a later check fails the cells an earlier one took are wasted. The checks
//! run requests/min, then tokens/min, then requests/day: a failed tokens check wastes one
//! request cell (1/RPM of a minute), never a request's worth of tokens, and the scarcest cell
//! (a day's request) is only taken once everything else has passed. Waste makes a key's
//! pacing slightly conservative, never lets it exceed its quota.
//!
//! **Balancing.** [`KeyPool::admit`] tries the keys starting at a rotating offset and takes
//! the first that admits, so no key is refused while another has room, and keys with room
//! share the load evenly.
//!
//! **Cooldowns.** A 429, or response headers saying a key's remaining requests are 0, put the
//! key in a cooldown until the provider's `retry-after` ([`KeyPool::cool_down`]); it admits
//! nothing meanwhile.
//!
//! **Spent credit.** A key the provider says is out of money (`quota_exhausted`: OpenAI's
//! `insufficient_quota`, Anthropic's spend limit or credit balance, Gemini's daily quota)
//! rests much longer ([`SPENT_KEY_REST`] unless the provider says when), in its [`Credit`],
//! which every deployment of the key's provider shares: buckets are per model, as providers
//! count requests and tokens, but money is per key. When every key that could take a call
//! is spent, the deployment says so ([`Busy::Spent`]) and the router does not wait for it.
//!
//! **Never forever.** An estimate larger than a key's whole tokens/min burst can never
//! conform there (governor's `InsufficientCapacity`): that key is skipped, and when no key of
//! the deployment could ever take it, [`Admission::Never`] says so with the limit named, so
//! the router moves on or the job fails at once instead of waiting forever.
//!
//! **Tenants.** [`TenantLimits`] applies the same buckets to what the API accepts from each
//! tenant (requests/min and estimated tokens/min), so one tenant cannot flood the queue: over
//! its limit, a job is refused with how long to wait, not parked.

use crate::config::{Config, KeyConfig};
use crate::job::ChatRequest;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde_json::Value;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Tokens assumed for the answer when neither the request (`max_tokens`,
/// `max_completion_tokens`) nor the deployment (`default_max_tokens`) bounds it.
pub const DEFAULT_COMPLETION_ESTIMATE: u32 = 1024;
/// Tokens every message costs beyond its text (role, separators), rounded up from OpenAI's
/// published 3–4.
const PER_MESSAGE_OVERHEAD: u32 = 4;
/// Tokens that prime every reply.
const PER_REQUEST_OVERHEAD: u32 = 3;
/// Tokens assumed per image or audio part: the high end of a detailed image tile set, so a
/// multimodal request is not under-counted.
const PER_MEDIA_PART: u32 = 1_000;

/// A conservative estimate of the tokens one call will use, prompt and answer together, for
/// the tokens/min buckets.
///
/// - Text (message contents, text parts, tool-call arguments, names, tool definitions):
///   one token per 4 ASCII bytes, rounded up, plus one token per non-ASCII character (CJK and
///   emoji run close to one token per character or more, so chars/4 would under-count them).
/// - 4 tokens per message and 3 per request for the chat framing; 1,000 per image/audio part.
/// - The answer: `max_completion_tokens`, else `max_tokens`, else `default_completion`
///   (the deployment's `default_max_tokens`, or [`DEFAULT_COMPLETION_ESTIMATE`]).
///
/// The estimate is never below the real count for ordinary text, which is the safe side: a
/// bucket paced on an over-estimate runs a little under its quota, never over.
pub fn estimate_tokens(request: &ChatRequest, default_completion: u32) -> u32 {
    estimate_split(request, default_completion).total()
}

/// [`estimate_tokens`] in its two parts, which providers price differently (a budget's
/// [estimate](crate::budgets::estimate) needs them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEstimate {
    /// The prompt: text, framing and media parts.
    pub prompt: u32,
    /// The answer's bound: `max_completion_tokens`, else `max_tokens`, else the default.
    pub completion: u32,
}

impl TokenEstimate {
    pub fn total(self) -> u32 {
        self.prompt.saturating_add(self.completion)
    }
}

/// The two parts of [`estimate_tokens`].
pub fn estimate_split(request: &ChatRequest, default_completion: u32) -> TokenEstimate {
    let mut prompt = TextCount::default();
    let mut framing = PER_REQUEST_OVERHEAD;
    for message in &request.messages {
        framing = framing.saturating_add(PER_MESSAGE_OVERHEAD);
        framing = framing.saturating_add(prompt.value(message));
    }
    if let Some(tools) = request.extra.get("tools") {
        prompt.json(tools);
    }
    let completion = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|name| request.extra.get(*name).and_then(Value::as_u64))
        .map_or(default_completion, |n| n.min(u64::from(u32::MAX)) as u32);
    TokenEstimate {
        prompt: prompt.tokens().saturating_add(framing),
        completion,
    }
}

/// Text seen so far, counted the way [`estimate_tokens`] documents.
#[derive(Default)]
struct TextCount {
    ascii_bytes: u64,
    other_chars: u64,
}

impl TextCount {
    fn text(&mut self, text: &str) {
        if text.is_ascii() {
            self.ascii_bytes += text.len() as u64;
        } else {
            for c in text.chars() {
                if c.is_ascii() {
                    self.ascii_bytes += 1;
                } else {
                    self.other_chars += 1;
                }
            }
        }
    }

    /// Counts a message (or part of one); returns the media tokens it carried.
    fn value(&mut self, value: &Value) -> u32 {
        match value {
            Value::String(text) => {
                self.text(text);
                0
            }
            Value::Array(items) => items
                .iter()
                .fold(0u32, |sum, item| sum.saturating_add(self.value(item))),
            Value::Object(map) => {
                let media = match map.get("type").and_then(Value::as_str) {
                    Some("image_url" | "input_audio" | "image" | "file") => PER_MEDIA_PART,
                    _ => 0,
                };
                let mut tokens = media;
                for (name, field) in map {
                    match name.as_str() {
                        // Counted as a media part above: its base64 is not text tokens.
                        "image_url" | "input_audio" | "file" => {}
                        // Framing, already in the per-message overhead.
                        "role" | "type" => {}
                        _ => tokens = tokens.saturating_add(self.value(field)),
                    }
                }
                tokens
            }
            Value::Number(_) | Value::Bool(_) | Value::Null => 0,
        }
    }

    /// Tool definitions: their JSON text, which is roughly what the provider tokenises.
    fn json(&mut self, value: &Value) {
        self.text(&value.to_string());
    }

    fn tokens(&self) -> u32 {
        let tokens = self.ascii_bytes.div_ceil(4) + self.other_chars;
        tokens.min(u64::from(u32::MAX)) as u32
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// What a key is allowed, from its configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyQuota {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub requests_per_day: Option<u32>,
}

impl From<&KeyConfig> for KeyQuota {
    fn from(key: &KeyConfig) -> Self {
        KeyQuota {
            requests_per_minute: key.requests_per_minute,
            tokens_per_minute: key.tokens_per_minute,
            requests_per_day: key.requests_per_day,
        }
    }
}

/// One limit of one key: its bucket and what it had left after the last call it admitted.
struct Limit {
    bucket: Bucket,
    burst: u32,
    /// Remaining burst capacity right after the last admission (the bucket has refilled
    /// since; governor cannot be read without consuming).
    remaining: AtomicU32,
}

impl Limit {
    fn new(quota: Quota, burst: NonZeroU32) -> Limit {
        Limit {
            bucket: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
            burst: burst.get(),
            remaining: AtomicU32::new(burst.get()),
        }
    }

    fn per_minute(n: Option<u32>) -> Option<Limit> {
        let n = NonZeroU32::new(n?)?;
        Some(Limit::new(Quota::per_minute(n), n))
    }

    fn per_day(n: Option<u32>) -> Option<Limit> {
        let n = NonZeroU32::new(n?)?;
        let period = Duration::from_secs(86_400) / n.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(n);
        Some(Limit::new(quota, n))
    }

    /// Takes `n` cells, or says how long until they are there (`Err(Some)`), or that they
    /// never will be (`Err(None)`).
    fn take(&self, n: u32, clock: &DefaultClock) -> Result<(), Option<Duration>> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.bucket.check_n(n) {
            Ok(Ok(snapshot)) => {
                self.remaining
                    .store(snapshot.remaining_burst_capacity(), Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(not_until)) => {
                self.remaining.store(0, Ordering::Relaxed);
                Err(Some(not_until.wait_time_from(clock.now())))
            }
            Err(_insufficient) => Err(None),
        }
    }
}

/// How long a key the provider says is out of credit rests when the provider does not say
/// when to come back: credit returns when someone pays, not within a job's retries, and an
/// hour keeps a spent key from being tried on every job.
pub const SPENT_KEY_REST: Duration = Duration::from_secs(60 * 60);

/// Whether a provider key has credit left, shared by every deployment of the key's provider
/// (see the module's "Spent credit").
#[derive(Debug, Default)]
pub struct Credit {
    /// Out of credit until then.
    spent_until: Mutex<Option<Instant>>,
}

impl Credit {
    /// The provider said the key is out of credit: it takes nothing for `rest`. A shorter
    /// rest never cuts a longer one short.
    pub fn spend(&self, rest: Duration) {
        let until = Instant::now() + rest;
        let mut spent = self
            .spent_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spent.is_none_or(|at| at < until) {
            *spent = Some(until);
        }
    }

    /// How long the key stays out of credit, when it is.
    pub fn spent_for(&self) -> Option<Duration> {
        let spent = self
            .spent_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        spent
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }
}

/// One key's buckets, cooldown and credit.
struct KeyLimiter {
    id: String,
    requests: Option<Limit>,
    tokens: Option<Limit>,
    daily: Option<Limit>,
    /// Admits nothing before this many milliseconds after the pool's epoch.
    cooldown_until_ms: AtomicU64,
    credit: Arc<Credit>,
}

/// Why a key (or a whole deployment) cannot take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Sluice's own buckets are full: capacity returns at a known time.
    Limits,
    /// The provider refused with a 429 (or said the key is spent): every key is cooling down.
    Cooldown,
    /// Every key that could take the call is out of credit ([`Credit`]): nothing a job can
    /// wait for.
    Spent,
}

/// The outcome of asking a deployment's keys for room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Key `index` took the call; its cells are spent.
    Admitted(usize),
    /// No key has room now; the soonest one will in `wait`.
    Wait { wait: Duration, busy: Busy },
    /// No key could ever take the call.
    Never(OverBurst),
}

/// A call whose estimate is larger than every key's whole tokens/min burst.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the request is estimated at {estimate} tokens (prompt + max_tokens), more than the \
     tokens_per_minute of every key of deployment \"{deployment}\" (largest: {largest}), so it \
     can never be sent there; lower max_tokens, shorten the prompt, or raise the key's \
     tokens_per_minute"
)]
pub struct OverBurst {
    pub deployment: String,
    pub estimate: u32,
    pub largest: u32,
}

/// What `GET /v1/providers` shows of one key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyCapacity {
    pub id: String,
    /// Remaining burst right after the last admitted call; `null` when the key has no such
    /// limit.
    pub requests_remaining: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub tokens_remaining: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub requests_today_remaining: Option<u32>,
    pub requests_per_day: Option<u32>,
    /// Milliseconds left of a 429 cooldown, when there is one.
    pub cooldown_ms: Option<u64>,
    /// Milliseconds left of the rest of a key the provider said is out of credit.
    pub spent_ms: Option<u64>,
}

/// The limiters of every key of one deployment.
pub struct KeyPool {
    deployment: String,
    keys: Vec<KeyLimiter>,
    next: AtomicUsize,
    epoch: Instant,
    clock: DefaultClock,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("deployment", &self.deployment)
            .field("keys", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl KeyPool {
    /// The buckets for `keys` (`id`, quota, the key's credit), in the deployment's key order.
    pub fn new(
        deployment: &str,
        keys: impl IntoIterator<Item = (String, KeyQuota, Arc<Credit>)>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|(id, quota, credit)| KeyLimiter {
                id,
                requests: Limit::per_minute(quota.requests_per_minute),
                tokens: Limit::per_minute(quota.tokens_per_minute),
                daily: Limit::per_day(quota.requests_per_day),
                cooldown_until_ms: AtomicU64::new(0),
                credit,
            })
            .collect();
        KeyPool {
            deployment: deployment.to_string(),
            keys,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            clock: DefaultClock::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Finds a key with room for one call of `estimate` tokens and takes the cells, starting
    /// at a rotating offset so keys with room share the load.
    pub fn admit(&self, estimate: u32) -> Admission {
        let len = self.keys.len();
        if len == 0 {
            return Admission::Wait {
                wait: Duration::from_secs(1),
                busy: Busy::Limits,
            };
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut soonest: Option<(Duration, Busy)> = None;
        let mut note = |wait: Duration, busy: Busy| {
            // A key limited by our own buckets beats one cooling down at the same wait: the
            // deployment is then only busy, not refusing.
            let better = match soonest {
                None => true,
                Some((w, b)) => wait < w || (wait == w && b == Busy::Cooldown),
            };
            if better {
                soonest = Some((wait, busy));
            }
        };
        // Spent keys are the last resort of an answer: only when no key is merely busy.
        let mut spent: Option<Duration> = None;
        let mut largest_burst = 0u32;
        for i in 0..len {
            let index = (start + i) % len;
            let key = &self.keys[index];
            if let Some(tokens) = &key.tokens {
                largest_burst = largest_burst.max(tokens.burst);
                if estimate > tokens.burst {
                    continue;
                }
            } else {
                largest_burst = u32::MAX;
            }
            if let Some(left) = key.credit.spent_for() {
                spent = Some(spent.map_or(left, |s| s.min(left)));
                continue;
            }
            let until = key.cooldown_until_ms.load(Ordering::Relaxed);
            if until > now {
                note(Duration::from_millis(until - now), Busy::Cooldown);
                continue;
            }
            match self.take(key, estimate) {
                Ok(()) => return Admission::Admitted(index),
                Err(Some(wait)) => note(wait, Busy::Limits),
                Err(None) => {}
            }
        }
        match (soonest, spent) {
            (Some((wait, busy)), _) => Admission::Wait { wait, busy },
            (None, Some(wait)) => Admission::Wait {
                wait,
                busy: Busy::Spent,
            },
            (None, None) => Admission::Never(OverBurst {
                deployment: self.deployment.clone(),
                estimate,
                largest: largest_burst,
            }),
        }
    }

    /// Runs the checks in the documented order (requests/min, tokens/min, requests/day).
    fn take(&self, key: &KeyLimiter, estimate: u32) -> Result<(), Option<Duration>> {
        for (limit, n) in [(&key.requests, 1), (&key.tokens, estimate), (&key.daily, 1)] {
            if let Some(limit) = limit {
                limit.take(n, &self.clock)?;
            }
        }
        Ok(())
    }

    /// The provider refused key `index` (429) or said it is spent: admit nothing on it for
    /// `wait`. A later, shorter cooldown never shortens a longer one.
    pub fn cool_down(&self, index: usize, wait: Duration) {
        if let Some(key) = self.keys.get(index) {
            let until = self.now_ms() + wait.as_millis() as u64;
            key.cooldown_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// The provider said key `index` is out of credit: it takes nothing for `rest`, on every
    /// deployment that shares it ([`Credit::spend`]).
    pub fn spend(&self, index: usize, rest: Duration) {
        if let Some(key) = self.keys.get(index) {
            key.credit.spend(rest);
        }
    }

    /// Each key's configured limits, what it had left after its last call, its cooldown and
    /// its rest when spent.
    pub fn capacity(&self, quotas: &[KeyQuota]) -> Vec<KeyCapacity> {
        let now = self.now_ms();
        let remaining =
            |limit: &Option<Limit>| limit.as_ref().map(|l| l.remaining.load(Ordering::Relaxed));
        self.keys
            .iter()
            .zip(quotas)
            .map(|(key, quota)| {
                let until = key.cooldown_until_ms.load(Ordering::Relaxed);
                KeyCapacity {
                    id: key.id.clone(),
                    requests_remaining: remaining(&key.requests),
                    requests_per_minute: quota.requests_per_minute,
                    tokens_remaining: remaining(&key.tokens),
                    tokens_per_minute: quota.tokens_per_minute,
                    requests_today_remaining: remaining(&key.daily),
                    requests_per_day: quota.requests_per_day,
                    cooldown_ms: (until > now).then(|| until - now),
                    spent_ms: key.credit.spent_for().map(|left| left.as_millis() as u64),
                }
            })
            .collect()
    }
}

/// Why the API refuses a tenant's jobs for now (or for good).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantLimited {
    #[error(
        "tenant \"{tenant}\" is over its limit of {limits} per minute; retry after {}",
        // Whole seconds, rounded up, as a person reads a wait (and as `retry-after` says).
        humantime::format_duration(Duration::from_secs(
            retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
        ))
    )]
    Busy {
        tenant: String,
        limits: String,
        retry_after: Duration,
    },
    #[error(
        "a job is estimated at {estimate} tokens (prompt + max_tokens), more than tenant \
         \"{tenant}\"'s whole tokens_per_minute ({limit}); lower max_tokens, shorten the prompt, \
         or raise the tenant's tokens_per_minute"
    )]
    TooLarge {
        tenant: String,
        estimate: u32,
        limit: u32,
    },
}

/// The API-side limits of every tenant that has some.
#[derive(Debug, Default)]
pub struct TenantLimits {
    tenants: std::collections::HashMap<String, (KeyPool, KeyQuota)>,
}

impl TenantLimits {
    pub fn new(config: &Config) -> Self {
        let tenants = config
            .tenants
            .iter()
            .filter(|t| t.requests_per_minute.is_some() || t.tokens_per_minute.is_some())
            .map(|t| {
                let quota = KeyQuota {
                    requests_per_minute: t.requests_per_minute,
                    tokens_per_minute: t.tokens_per_minute,
                    requests_per_day: None,
                };
                let pool = KeyPool::new(&t.name, [(t.name.clone(), quota, Arc::default())]);
                (t.name.clone(), (pool, quota))
            })
            .collect();
        TenantLimits { tenants }
    }

    /// Takes room for `requests` from `tenant`'s buckets, or says why not. Several requests
    /// are taken one by one; when a later one does not fit, the cells the earlier ones took
    /// stay spent, which errs on the side of the limit.
    pub fn admit<'a>(
        &self,
        tenant: &str,
        requests: impl IntoIterator<Item = &'a ChatRequest>,
    ) -> Result<(), TenantLimited> {
        let Some((pool, quota)) = self.tenants.get(tenant) else {
            return Ok(());
        };
        for request in requests {
            let estimate = estimate_tokens(request, DEFAULT_COMPLETION_ESTIMATE);
            match pool.admit(estimate) {
                Admission::Admitted(_) => {}
                Admission::Wait { wait, .. } => {
                    let limits: Vec<String> = [
                        quota.requests_per_minute.map(|n| format!("{n} requests")),
                        quota.tokens_per_minute.map(|n| format!("{n} tokens")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    return Err(TenantLimited::Busy {
                        tenant: tenant.to_string(),
                        limits: limits.join(" and "),
                        retry_after: wait,
                    });
                }
                Admission::Never(over) => {
                    return Err(TenantLimited::TooLarge {
                        tenant: tenant.to_string(),
                        estimate: over.estimate,
                        limit: over.largest,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    fn quota(rpm: Option<u32>, tpm: Option<u32>) -> KeyQuota {
        KeyQuota {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            requests_per_day: None,
        }
    }

    fn pool(quotas: &[KeyQuota]) -> KeyPool {
        KeyPool::new(
            "d",
            quotas
                .iter()
                .enumerate()
                .map(|(i, q)| (format!("k{i}"), *q, Arc::default())),
        )
    }

    /// A person reads "retry after 12s", not "11s 844ms 339us 696ns".
    #[test]
    fn a_tenant_is_told_whole_seconds_to_wait() {
        let busy = TenantLimited::Busy {
            tenant: "acme".into(),
            limits: "60 requests".into(),
            retry_after: Duration::from_nanos(11_844_339_696),
        };
        assert!(busy.to_string().ends_with("retry after 12s"), "{busy}");
    }

    #[test]
    fn the_estimate_counts_text_framing_and_the_answer() {
        // 40 ASCII bytes = 10 tokens, + 4 per message + 3 per request + max_tokens.
        let r = request(json!({"model": "m", "max_tokens": 100,
            "messages": [{"role": "user", "content": "a".repeat(40)}]}));
        assert_eq!(estimate_tokens(&r, 7), 10 + 4 + 3 + 100);
        // No max_tokens: the default; max_completion_tokens wins over max_tokens.
        let r = request(json!({"model": "m", "messages": [{"role": "user", "content": "abc"}]}));
        assert_eq!(estimate_tokens(&r, 50), 1 + 4 + 3 + 50);
        let r = request(
            json!({"model": "m", "max_tokens": 9, "max_completion_tokens": 20,
            "messages": [{"role": "user", "content": "abc"}]}),
        );
        assert_eq!(estimate_tokens(&r, 50), 1 + 4 + 3 + 20);
    }

    #[test]
    fn the_estimate_is_conservative_for_non_ascii_and_media() {
        let r = request(json!({"model": "m", "max_tokens": 0,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "日本語"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(10_000))}}
        ]}]}));
        assert_eq!(estimate_tokens(&r, 0), 3 + PER_MEDIA_PART + 4 + 3);
    }

    #[test]
    fn the_estimate_covers_tools_and_tool_calls() {
        let plain = request(json!({"model": "m", "max_tokens": 0,
            "messages": [{"role": "user", "content": "hi"}]}));
        let with_tools = request(json!({"model": "m", "max_tokens": 0,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}]}));
        assert!(estimate_tokens(&with_tools, 0) > estimate_tokens(&plain, 0) + 20);
    }

    #[test]
    fn requests_per_minute_admit_the_burst_then_wait() {
        let p = pool(&[quota(Some(3), None)]);
        for _ in 0..3 {
            assert_eq!(p.admit(10), Admission::Admitted(0));
        }
        match p.admit(10) {
            Admission::Wait { wait, busy } => {
                assert_eq!(busy, Busy::Limits);
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_secs(20),
                    "{wait:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tokens_per_minute_take_the_estimate() {
        let p = pool(&[quota(None, Some(1000))]);
        assert_eq!(p.admit(600), Admission::Admitted(0));
        assert!(matches!(p.admit(600), Admission::Wait { .. }));
        assert_eq!(p.admit(400), Admission::Admitted(0));
    }

    #[test]
    fn an_estimate_over_every_burst_is_never_admitted_and_says_why() {
        let p = pool(&[quota(None, Some(1000)), quota(None, Some(2000))]);
        match p.admit(5000) {
            Admission::Never(e) => {
                assert_eq!(e.largest, 2000);
                let text = e.to_string();
                assert!(
                    text.contains("5000 tokens") && text.contains("tokens_per_minute"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Over one key's burst only: the other key takes it.
        assert_eq!(p.admit(1500), Admission::Admitted(1));
    }

    #[test]
    fn keys_share_the_load_and_none_is_refused_while_another_has_room() {
        let p = pool(&[quota(Some(5), None); 3]);
        let mut used = [0; 3];
        for _ in 0..15 {
            match p.admit(1) {
                Admission::Admitted(i) => used[i] += 1,
                other => panic!("refused with room left: {other:?} after {used:?}"),
            }
        }
        assert_eq!(used, [5, 5, 5]);
        assert!(matches!(p.admit(1), Admission::Wait { .. }));
    }

    #[test]
    fn a_cooldown_skips_the_key_until_it_ends() {
        let p = pool(&[quota(None, None), quota(None, None)]);
        p.cool_down(0, Duration::from_secs(30));
        for _ in 0..4 {
            assert_eq!(p.admit(1), Admission::Admitted(1));
        }
        p.cool_down(1, Duration::from_secs(10));
        match p.admit(1) {
            Admission::Wait { wait, busy } => {
                assert_eq!(busy, Busy::Cooldown);
                assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9));
            }
            other => panic!("{other:?}"),
        }
        // A shorter cooldown does not cut a longer one short.
        p.cool_down(0, Duration::from_millis(1));
        assert!(
            p.capacity(&[KeyQuota::default(); 2])[0]
                .cooldown_ms
                .unwrap()
                > 20_000
        );
    }

    /// A spent key is skipped without a wait while another has credit; when all are spent
    /// the pool says so rather than offer a wait, and a pool sharing the credit sees it too.
    #[test]
    fn a_spent_key_is_skipped_and_a_pool_of_spent_keys_says_so() {
        let credits: Vec<Arc<Credit>> = (0..2).map(|_| Arc::default()).collect();
        let pool_of = |name: &str| {
            KeyPool::new(
                name,
                credits
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("k{i}"), quota(Some(100), None), c.clone())),
            )
        };
        let (a, b) = (pool_of("a"), pool_of("b"));
        a.spend(0, SPENT_KEY_REST);
        for _ in 0..3 {
            assert_eq!(a.admit(1), Admission::Admitted(1));
            assert_eq!(b.admit(1), Admission::Admitted(1), "the credit is shared");
        }
        // Rate-limit trouble on a key with credit is still a wait worth taking.
        let busy = pool_of("c");
        busy.cool_down(1, Duration::from_secs(1));
        match busy.admit(1) {
            Admission::Wait { busy, .. } => assert_eq!(busy, Busy::Cooldown),
            other => panic!("{other:?}"),
        }
        b.spend(1, Duration::from_secs(5));
        for pool in [&a, &b] {
            match pool.admit(1) {
                Admission::Wait { wait, busy } => {
                    assert_eq!(busy, Busy::Spent);
                    assert!(wait <= Duration::from_secs(5), "the sooner of the rests");
                }
                other => panic!("{other:?}"),
            }
        }
        let view = a.capacity(&[KeyQuota::default(); 2]);
        assert!(view[0].spent_ms.unwrap() > 3_500_000, "{view:?}");
    }

    #[test]
    fn capacity_reports_what_is_left() {
        let q = [KeyQuota {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(1000),
            requests_per_day: Some(100),
        }];
        let p = pool(&q);
        p.admit(250);
        let c = &p.capacity(&q)[0];
        assert_eq!(c.requests_remaining, Some(9));
        assert_eq!(c.tokens_remaining, Some(750));
        assert_eq!(c.requests_today_remaining, Some(99));
        assert_eq!(c.cooldown_ms, None);
    }

    #[test]
    fn a_tenant_over_its_requests_per_minute_is_told_when_to_come_back() {
        let mut config = Config::builtin();
        config.tenants[0].requests_per_minute = Some(2);
        config.tenants[0].tokens_per_minute = Some(100_000);
        let name = config.tenants[0].name.clone();
        let limits = TenantLimits::new(&config);
        let request = ChatRequest::single_user_message("fast", "hi");
        assert!(limits.admit(&name, [&request, &request]).is_ok());
        match limits.admit(&name, [&request]) {
            Err(TenantLimited::Busy {
                retry_after,
                limits,
                ..
            }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(30));
                assert_eq!(limits, "2 requests and 100000 tokens");
            }
            other => panic!("{other:?}"),
        }
        // Tenants without limits, and unknown names, are never limited here.
        assert!(limits.admit("someone-else", [&request]).is_ok());

        let mut big = request.clone();
        big.extra.insert("max_tokens".into(), 200_000.into());
        let error = limits.admit(&name, [&big]).unwrap_err();
        assert!(
            matches!(error, TenantLimited::TooLarge { limit: 100_000, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("tokens_per_minute"));
    }
}
