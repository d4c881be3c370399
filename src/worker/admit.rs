//! The admission stage: a healthy deployment and a key with room for the attempt, found
//! *before* the attempt is counted.
//!
//! Waiting for capacity is pacing, not failure: a job that finds no room now is parked on
//! the queue's delay ladder, still `queued`, with no attempt recorded and no worker slot
//! held, so it never uses up `max_attempts`. A realtime job waits in its slot for a moment
//! instead (its route's `realtime_max_wait`, shorter than the ladder's shortest rung); so
//! does any job while its process fetches capacity from the cluster (a brief wait, up to
//! [`BRIEF_WAIT_LIMIT`] in all), since those cells come to this process. A wait that would
//! pass the job's deadline fails the job now.

use crate::failure::JobFailure;
use crate::finish::Failure;
use crate::job::{Envelope, Urgency};
use crate::router::{Choice, Pick, Route};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The longest a job waits in its slot, in all, for capacity its process is fetching.
const BRIEF_WAIT_LIMIT: Duration = Duration::from_secs(1);

/// Whether the attempt may go.
#[derive(Debug)]
pub(super) enum Admission {
    /// Call this deployment with this key (its bucket cells are taken).
    Go(Pick),
    /// No room now: park the job for about this long. Not an attempt.
    Wait(Duration),
    /// No deployment can take the job, now or by waiting within its deadline: fail it.
    Fail(Failure),
}

/// Asks `route` for a deployment and a key for attempt `attempt`, waiting in the slot while
/// a realtime job may.
pub(super) async fn admit(
    route: &Route,
    envelope: &Envelope,
    attempt: u32,
    deadline: Option<DateTime<Utc>>,
) -> Admission {
    let urgency = envelope.spec.urgency;
    let mut waited = Duration::ZERO;
    loop {
        match route.choose(attempt, &envelope.spec.request, urgency) {
            Choice::Go(pick) => return Admission::Go(pick),
            Choice::Refuse { reason, message } => {
                tracing::info!(job = %envelope.id, %message, "no deployment can take this job");
                return Admission::Fail(Failure::new(reason.failure(), message));
            }
            Choice::Wait { wait, why, brief } => {
                let waiting = Waiting {
                    urgency,
                    waited,
                    wait,
                    brief,
                    realtime_max_wait: route.realtime_max_wait,
                    deadline,
                };
                match waiting.decide(Utc::now()) {
                    OnWait::Sleep => {
                        tokio::time::sleep(wait).await;
                        waited += wait;
                    }
                    OnWait::Park => {
                        tracing::debug!(job = %envelope.id, %why, ?wait, "paced: parked until capacity returns, not an attempt");
                        return Admission::Wait(wait);
                    }
                    OnWait::PastDeadline(deadline) => {
                        let message =
                            format!("{why}; waiting would pass the job's deadline {deadline}");
                        return Admission::Fail(Failure::new(
                            JobFailure::DeadlineExceeded,
                            message,
                        ));
                    }
                }
            }
        }
    }
}

/// A wait the router asked for, and what the job has waited already.
struct Waiting {
    urgency: Urgency,
    /// How long the job has waited in its slot for this attempt so far.
    waited: Duration,
    /// How long the router says to wait now.
    wait: Duration,
    /// The wait is for capacity this process is fetching.
    brief: bool,
    realtime_max_wait: Duration,
    deadline: Option<DateTime<Utc>>,
}

/// What to do about a wait.
#[derive(Debug, PartialEq, Eq)]
enum OnWait {
    /// Wait in the slot, then ask again.
    Sleep,
    /// Park the job on the delay ladder.
    Park,
    /// Waiting would pass this deadline: fail the job.
    PastDeadline(DateTime<Utc>),
}

impl Waiting {
    /// Pure: what a job does about the wait at `now`.
    fn decide(&self, now: DateTime<Utc>) -> OnWait {
        if let Some(deadline) = self.deadline {
            if now + self.wait > deadline {
                return OnWait::PastDeadline(deadline);
            }
        }
        let total = self.waited + self.wait;
        if (self.brief && total <= BRIEF_WAIT_LIMIT)
            || (self.urgency == Urgency::Realtime && total <= self.realtime_max_wait)
        {
            OnWait::Sleep
        } else {
            OnWait::Park
        }
    }
}

/// A paced job's delay: the limiter's wait plus a little jitter, so jobs parked together do
/// not all come back in the same millisecond to find room for only some of them.
pub(super) fn pace_delay(wait: Duration) -> Duration {
    let jitter = (wait / 10).max(Duration::from_millis(20));
    wait + jitter.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn waiting(urgency: Urgency, waited: Duration, wait: Duration) -> Waiting {
        Waiting {
            urgency,
            waited,
            wait,
            brief: false,
            realtime_max_wait: 500 * MS,
            deadline: None,
        }
    }

    #[test]
    fn a_realtime_job_waits_in_its_slot_up_to_its_routes_limit_then_parks() {
        assert_eq!(
            waiting(Urgency::Realtime, 300 * MS, 200 * MS).decide(Utc::now()),
            OnWait::Sleep
        );
        assert_eq!(
            waiting(Urgency::Realtime, 400 * MS, 200 * MS).decide(Utc::now()),
            OnWait::Park
        );
    }

    #[test]
    fn other_urgencies_park_at_once() {
        for urgency in [Urgency::Standard, Urgency::Batch] {
            assert_eq!(
                waiting(urgency, Duration::ZERO, MS).decide(Utc::now()),
                OnWait::Park
            );
        }
    }

    #[test]
    fn any_job_waits_in_its_slot_while_its_process_fetches_capacity_up_to_a_limit() {
        let mut w = waiting(Urgency::Batch, Duration::ZERO, 25 * MS);
        w.brief = true;
        assert_eq!(w.decide(Utc::now()), OnWait::Sleep);
        w.waited = BRIEF_WAIT_LIMIT;
        assert_eq!(w.decide(Utc::now()), OnWait::Park);
    }

    #[test]
    fn a_wait_past_the_deadline_fails_even_a_short_one() {
        let now = Utc::now();
        let deadline = now + chrono::Duration::milliseconds(100);
        let mut w = waiting(Urgency::Realtime, Duration::ZERO, 200 * MS);
        w.deadline = Some(deadline);
        assert_eq!(w.decide(now), OnWait::PastDeadline(deadline));
        w.wait = 50 * MS;
        assert_eq!(w.decide(now), OnWait::Sleep);
    }

    #[test]
    fn the_pace_delay_is_the_wait_plus_at_most_a_tenth_or_20ms() {
        for _ in 0..50 {
            let d = pace_delay(Duration::from_secs(1));
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_millis(1100),
                "{d:?}"
            );
            let d = pace_delay(10 * MS);
            assert!(d >= 10 * MS && d <= 30 * MS, "{d:?}");
        }
    }
}
