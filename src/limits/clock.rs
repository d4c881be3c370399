//! The time that rate limits and circuit breakers read. It is governor's [`Clock`], so the
//! buckets, cooldowns, spent credit and circuits all read one time, and a test moves that time
//! with one [`FakeRelativeClock`] instead of waiting for it.
//!
//! Production uses governor's [`DefaultClock`] (quanta: a counter read, no system call). It is
//! the default of every clock parameter, so production code names no clock, and each call is
//! static: admission makes no dynamic call.

use governor::nanos::Nanos;
use std::time::Duration;

pub use governor::clock::{Clock, DefaultClock, FakeRelativeClock, Reference};

/// The furthest a reading is moved: governor's instants count nanoseconds in a `u64` (584
/// years), and a wait comes from a provider's header or the configuration.
const FURTHEST: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The instant `wait` after `at`.
pub fn after<I: Reference>(at: I, wait: Duration) -> I {
    at + Nanos::from(wait.min(FURTHEST))
}

/// The time from `earlier` to `later`; zero when `later` is not later.
pub fn between<I: Reference>(earlier: I, later: I) -> Duration {
    later.duration_since(earlier).into()
}
