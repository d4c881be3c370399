//! Rate limits, on provider keys and on tenants: what may be sent now, and what must wait.
//!
//! - [`estimate`](estimate_tokens): the tokens a call is counted for before it is sent.
//! - `bucket`: a key's GCRA buckets (requests/min, tokens/min, requests/day) and the order
//!   they are checked in.
//! - `cooldown`: a key at rest after a 429 or a `remaining: 0` header.
//! - `credit`: a key out of money, shared by every deployment of its provider.
//! - `admission`: what asking for room answers ([`Admission`]).
//! - `pool`: every key of one deployment, balanced ([`KeyPool`]).
//! - [`shared`]: a key whose capacity a cluster shares, leased in blocks from the store.
//! - `tenant`: the same buckets on what the API accepts from each tenant ([`TenantLimits`]).
//! - [`clock`]: the time all of them (and the router's circuit breakers) read, which a test
//!   moves instead of waiting.

mod admission;
mod bucket;
pub mod clock;
mod cooldown;
mod credit;
mod estimate;
mod pool;
pub mod shared;
mod tenant;

pub use admission::{Admission, Busy, OverBurst};
pub use bucket::KeyQuota;
pub use credit::{Credit, SPENT_KEY_REST};
pub use estimate::{estimate_split, estimate_tokens, TokenEstimate, DEFAULT_COMPLETION_ESTIMATE};
pub use pool::{KeyCapacity, KeyPool};
pub use shared::SharedKey;
pub use tenant::{TenantLimited, TenantLimits};
