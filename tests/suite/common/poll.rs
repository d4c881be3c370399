//! Waiting for a state instead of sleeping and hoping: a test that sleeps a fixed time and
//! then asserts is slow when the state comes early and flaky when it comes late. These poll a
//! probe until it says the state is there, and fail naming what was awaited (and the last
//! thing seen) when it never comes.

use std::time::Duration;
use tokio::time::Instant;

/// The first pause between two questions to a probe: a state that comes quickly is seen
/// quickly. The pause doubles up to [`SLOWEST`], so a long wait does not load what it watches
/// (a query, a request) with questions.
const QUICKEST: Duration = Duration::from_millis(10);
const SLOWEST: Duration = Duration::from_millis(100);

/// What a probe answers: the state is there (with a value), or not yet (with what it saw).
pub trait Probe {
    type Value;
    /// `Ok` when the awaited state is there; otherwise what was seen, for the failure message.
    fn ready(self) -> Result<Self::Value, Option<String>>;
}

impl Probe for bool {
    type Value = ();
    fn ready(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Err` carries what was seen instead, shown if the wait times out.
impl<T, E: std::fmt::Display> Probe for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Asks `probe` until it is ready, for at most `timeout`; `Err` with the last thing seen when it never was. For waits
/// whose running out is an answer, not a failure.
pub async fn within<P: Probe>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> P,
) -> Result<P::Value, Option<String>> {
    let deadline = Instant::now() + timeout;
    let mut pause = QUICKEST;
    loop {
        let seen = match probe().await.ready() {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            return Err(seen);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(SLOWEST);
    }
}

/// Asks `probe` until it is ready and returns its value; fails the test after `timeout`,
/// naming `what` was awaited and the last thing the probe saw.
pub async fn eventually<P: Probe>(
    what: &str,
    timeout: Duration,
    probe: impl AsyncFnMut() -> P,
) -> P::Value {
    match within(timeout, probe).await {
        Ok(value) => value,
        Err(None) => panic!("timed out after {timeout:?} waiting for {what}"),
        Err(Some(seen)) => {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
        }
    }
}
