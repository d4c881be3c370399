//! Whether a provider key has money left. A key the provider says is out of money
//! (`quota_exhausted`: OpenAI's `insufficient_quota`, Anthropic's spend limit or credit
//! balance, Gemini's daily quota) rests much longer than a 429's cooldown ([`SPENT_KEY_REST`]
//! unless the provider says when), and on every deployment of the key's provider: buckets are
//! per model, as providers count requests and tokens, but money is per key.

use super::clock::{after, between, Clock, DefaultClock};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long a key the provider says is out of credit rests when the provider does not say
/// when to come back: credit returns when someone pays, not within a job's retries, and an
/// hour keeps a spent key from being tried on every job.
pub const SPENT_KEY_REST: Duration = Duration::from_secs(60 * 60);

/// Whether a provider key has credit left, shared by every deployment of the key's provider,
/// read on the clock `C` of their pools.
pub struct Credit<C: Clock = DefaultClock> {
    /// Out of credit until then.
    spent_until: Mutex<Option<C::Instant>>,
}

impl<C: Clock> Default for Credit<C> {
    fn default() -> Self {
        Credit {
            spent_until: Mutex::new(None),
        }
    }
}

impl<C: Clock> std::fmt::Debug for Credit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credit")
            .field("spent_until", &self.spent_until)
            .finish()
    }
}

impl<C: Clock> Credit<C> {
    /// The provider said at `now` that the key is out of credit: it takes nothing for `rest`.
    /// A shorter rest never cuts a longer one short.
    pub fn spend(&self, now: C::Instant, rest: Duration) {
        let until = after(now, rest);
        let mut spent = self
            .spent_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spent.is_none_or(|at| at < until) {
            *spent = Some(until);
        }
    }

    /// How long after `now` the key stays out of credit, when it does.
    pub fn spent_for(&self, now: C::Instant) -> Option<Duration> {
        let spent = self
            .spent_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        spent
            .map(|until| between(now, until))
            .filter(|left| !left.is_zero())
    }
}
