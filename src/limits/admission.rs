//! What asking a deployment's keys for room answers: admitted on a key, wait (and why), or
//! never. The router acts on the answer; keeping it a value lets it tell a busy deployment
//! (pace) from one refusing (move on) from one that never could take the call (fail now).
//!
//! **Never forever.** An estimate larger than a key's whole tokens/min burst can never
//! conform there (governor's `InsufficientCapacity`): that key is skipped, and when no key of
//! the deployment could ever take it, [`Admission::Never`] says so with the limit named, so
//! the router moves on or the job fails at once instead of waiting forever.

use std::time::Duration;

/// Why a key (or a whole deployment) cannot take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Sluice's own buckets are full: capacity returns at a known time.
    Limits,
    /// The provider refused with a 429 (or said the key is spent): every key is cooling down.
    Cooldown,
    /// Every key that could take the call is out of credit ([`Credit`](super::Credit)): nothing a job can
    /// wait for.
    Spent,
    /// In a cluster: this process holds no cells of the key and is fetching some from the
    /// store's bucket, which may have them ([`super::shared`]); a moment's wait, best spent
    /// in place, since the cells come to this process.
    Leasing,
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
