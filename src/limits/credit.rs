//! Whether a provider key has money left. A key the provider says is out of money
//! (`quota_exhausted`: OpenAI's `insufficient_quota`, Anthropic's spend limit or credit
//! balance, Gemini's daily quota) rests much longer than a 429's cooldown ([`SPENT_KEY_REST`]
//! unless the provider says when), and on every deployment of the key's provider: buckets are
//! per model, as providers count requests and tokens, but money is per key.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a key the provider says is out of credit rests when the provider does not say
/// when to come back: credit returns when someone pays, not within a job's retries, and an
/// hour keeps a spent key from being tried on every job.
pub const SPENT_KEY_REST: Duration = Duration::from_secs(60 * 60);

/// Whether a provider key has credit left, shared by every deployment of the key's provider.
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
