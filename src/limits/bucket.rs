//! A key's GCRA buckets: what a provider key may be sent, checked *before* a call, so Sluice
//! never pushes a key past its quota and learns about limits from its own buckets rather than
//! from 429s.
//!
//! Each key has up to three buckets ([`governor`] direct limiters; the keys' quotas differ, so
//! one keyed limiter with a single quota would not fit, and direct limiters held beside the
//! key skip the map lookup): `requests_per_minute` (burst = the limit), `tokens_per_minute`
//! (burst = the limit, so any single request up to the whole minute's tokens can pass) and
//! `requests_per_day`. A call takes one request cell and `check_n` of its
//! [estimated](super::estimate_tokens) tokens.
//!
//! **Order of the checks.** governor consumes cells only when a check succeeds, and has no
//! refund, so when a later check fails the cells an earlier one took are wasted. The checks
//! run requests/min, then tokens/min, then requests/day: a failed tokens check wastes one
//! request cell (1/RPM of a minute), never a request's worth of tokens, and the scarcest cell
//! (a day's request) is only taken once everything else has passed. Waste makes a key's
//! pacing slightly conservative, never lets it exceed its quota.

use super::clock::{Clock, DefaultClock};
use crate::config::KeyConfig;
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

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
pub(super) struct Limit<C: Clock = DefaultClock> {
    bucket: Bucket<C>,
    burst: u32,
    /// Remaining burst capacity right after the last admission (the bucket has refilled
    /// since; governor cannot be read without consuming).
    remaining: AtomicU32,
}

impl<C: Clock + Clone> Limit<C> {
    fn new(quota: Quota, burst: NonZeroU32, clock: &C) -> Limit<C> {
        Limit {
            bucket: RateLimiter::direct_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            burst: burst.get(),
            remaining: AtomicU32::new(burst.get()),
        }
    }

    fn per_minute(n: Option<u32>, clock: &C) -> Option<Limit<C>> {
        let n = NonZeroU32::new(n?)?;
        Some(Limit::new(Quota::per_minute(n), n, clock))
    }

    fn per_day(n: Option<u32>, clock: &C) -> Option<Limit<C>> {
        let n = NonZeroU32::new(n?)?;
        let period = Duration::from_secs(86_400) / n.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(n);
        Some(Limit::new(quota, n, clock))
    }

    /// Takes `n` cells, or says how long after `now` they are there (`Err(Some)`), or that
    /// they never will be (`Err(None)`).
    fn take(&self, n: u32, now: C::Instant) -> Result<(), Option<Duration>> {
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
                Err(Some(not_until.wait_time_from(now)))
            }
            Err(_insufficient) => Err(None),
        }
    }

    /// What was left right after the last admitted call.
    fn remaining(&self) -> u32 {
        self.remaining.load(Ordering::Relaxed)
    }
}

/// One key's three buckets, checked in the documented order.
pub(super) struct KeyBuckets<C: Clock = DefaultClock> {
    requests: Option<Limit<C>>,
    tokens: Option<Limit<C>>,
    daily: Option<Limit<C>>,
}

impl<C: Clock + Clone> KeyBuckets<C> {
    /// The buckets of `quota`, reading `clock`.
    pub(super) fn new(quota: KeyQuota, clock: &C) -> KeyBuckets<C> {
        KeyBuckets {
            requests: Limit::per_minute(quota.requests_per_minute, clock),
            tokens: Limit::per_minute(quota.tokens_per_minute, clock),
            daily: Limit::per_day(quota.requests_per_day, clock),
        }
    }

    /// The whole tokens/min burst, or `None` when the key has no such limit.
    pub(super) fn tokens_burst(&self) -> Option<u32> {
        self.tokens.as_ref().map(|limit| limit.burst)
    }

    /// Takes one request and `estimate` tokens, in the documented order (requests/min,
    /// tokens/min, requests/day), or says how long until they are there (`Err(Some)`), or
    /// that they never will be (`Err(None)`); waits are counted from `now`.
    pub(super) fn take(&self, estimate: u32, now: C::Instant) -> Result<(), Option<Duration>> {
        for (limit, n) in [
            (&self.requests, 1),
            (&self.tokens, estimate),
            (&self.daily, 1),
        ] {
            if let Some(limit) = limit {
                limit.take(n, now)?;
            }
        }
        Ok(())
    }

    /// Requests/min, tokens/min and requests/day left after the last admitted call.
    pub(super) fn remaining(&self) -> [Option<u32>; 3] {
        [&self.requests, &self.tokens, &self.daily]
            .map(|limit| limit.as_ref().map(Limit::remaining))
    }
}
