//! The tier choice: whether a job's attempt goes to a provider batch or runs real-time.
//!
//! Pure logic, so every rule is unit-tested here. A provider batch costs about half, but
//! the provider only promises an answer within 24 hours; so a job goes to the batch tier
//! only when it can afford the wait:
//!
//! - its deployment has a batch tier;
//! - it is its first attempt (a job whose batch attempt failed, expired or was given up
//!   runs real-time from then on);
//! - its urgency is `batch`, or `standard` with a deadline (opting in);
//! - its deadline, if it has one, is at least the deployment's typical `turnaround` plus
//!   the configured safety margin away.
//!
//! Otherwise it runs real-time, and when the batch tier was possible but refused, the reason
//! is recorded on the attempt (`chosen_because`). A real-time call of a deployment with
//! OpenAI's flex service tier uses it under similar rules ([`flex`]).

use crate::job::Urgency;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The tier a call was made on: where the worker and the tracker charge answers, so it lives
/// with [`crate::finish::charge`].
pub use crate::finish::Tier;

/// The tier of one attempt, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierChoice {
    /// Send the job to a provider batch.
    Batch { because: String },
    /// Call the real-time endpoint. `because` is set when the batch tier was an option the
    /// job could not take (the attempt records it); `None` when it never was.
    Realtime { because: Option<String> },
}

/// What the choice looks at.
#[derive(Debug, Clone, Copy)]
pub struct TierQuestion {
    pub urgency: Urgency,
    /// The attempt about to be made, 1-based.
    pub attempt: u32,
    /// The job's effective deadline (its own or its route's).
    pub deadline: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// How long the tier takes: the deployment's batch turnaround (for [`choose`]) or its
    /// flex timeout (for [`flex`]); `None` when the deployment has no such tier.
    pub wait: Option<Duration>,
    pub safety_margin: Duration,
}

/// Chooses the tier of an attempt (see the module docs for the rules).
pub fn choose(q: TierQuestion) -> TierChoice {
    let Some(turnaround) = q.wait else {
        return TierChoice::Realtime { because: None };
    };
    let eligible = match q.urgency {
        Urgency::Realtime => false,
        Urgency::Standard => q.deadline.is_some(),
        Urgency::Batch => true,
    };
    if !eligible {
        return TierChoice::Realtime { because: None };
    }
    if q.attempt > 1 {
        return TierChoice::Realtime {
            because: Some(format!(
                "realtime tier: attempt {} (only a first attempt may use the batch tier)",
                q.attempt
            )),
        };
    }
    let needed = turnaround + q.safety_margin;
    let needed_text = format!(
        "{} turnaround + {} margin",
        humantime::format_duration(turnaround),
        humantime::format_duration(q.safety_margin)
    );
    match q.deadline {
        None => TierChoice::Batch {
            because: "batch tier: no deadline".into(),
        },
        Some(deadline) => {
            let left = (deadline - q.now).to_std().unwrap_or(Duration::ZERO);
            let left_text = humantime::format_duration(Duration::from_secs(left.as_secs()));
            if left >= needed {
                TierChoice::Batch {
                    because: format!(
                        "batch tier: the deadline is {left_text} away, room for {needed_text}"
                    ),
                }
            } else {
                TierChoice::Realtime {
                    because: Some(format!(
                        "realtime tier: the deadline is {left_text} away, too close for the batch tier ({needed_text})"
                    )),
                }
            }
        }
    }
}

/// Whether an attempt of a deployment with a flex tier (whole-call `timeout`) uses it, and
/// why: `standard` and `batch` jobs, on their first attempt (a flex 429 "resource
/// unavailable" sends the next attempt to the default tier), when their deadline, if any,
/// leaves the flex timeout plus the safety margin. `None`: the default tier.
pub fn flex(q: TierQuestion) -> Option<String> {
    let timeout = q.wait?;
    if q.urgency == Urgency::Realtime || q.attempt > 1 {
        return None;
    }
    match q.deadline {
        None => Some("flex tier: no deadline".into()),
        Some(deadline) => {
            let left = (deadline - q.now).to_std().unwrap_or(Duration::ZERO);
            (left >= timeout + q.safety_margin).then(|| {
                format!(
                    "flex tier: the deadline is {} away, room for a {} flex call + {} margin",
                    humantime::format_duration(Duration::from_secs(left.as_secs())),
                    humantime::format_duration(timeout),
                    humantime::format_duration(q.safety_margin)
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn question(urgency: Urgency, deadline_in: Option<Duration>) -> TierQuestion {
        let now = Utc::now();
        TierQuestion {
            urgency,
            attempt: 1,
            deadline: deadline_in.map(|d| now + chrono::Duration::from_std(d).unwrap()),
            now,
            wait: Some(2 * HOUR),
            safety_margin: HOUR,
        }
    }

    #[test]
    fn a_batch_job_without_deadline_goes_to_the_batch_tier() {
        assert!(matches!(
            choose(question(Urgency::Batch, None)),
            TierChoice::Batch { .. }
        ));
    }

    #[test]
    fn a_deadline_with_room_for_turnaround_and_margin_goes_to_the_batch_tier() {
        assert!(matches!(
            choose(question(
                Urgency::Batch,
                Some(3 * HOUR + Duration::from_secs(5))
            )),
            TierChoice::Batch { .. }
        ));
    }

    #[test]
    fn a_tight_deadline_runs_realtime_and_says_why() {
        let TierChoice::Realtime { because: Some(why) } = choose(question(
            Urgency::Batch,
            Some(2 * HOUR + Duration::from_secs(30)),
        )) else {
            panic!("a deadline inside turnaround + margin must run real-time");
        };
        assert!(why.contains("too close for the batch tier"), "{why}");
        assert!(why.contains("2h turnaround + 1h margin"), "{why}");
    }

    #[test]
    fn standard_jobs_opt_in_with_a_deadline_only() {
        assert_eq!(
            choose(question(Urgency::Standard, None)),
            TierChoice::Realtime { because: None }
        );
        assert!(matches!(
            choose(question(Urgency::Standard, Some(10 * HOUR))),
            TierChoice::Batch { .. }
        ));
    }

    #[test]
    fn realtime_jobs_and_deployments_without_a_batch_tier_never_batch() {
        assert_eq!(
            choose(question(Urgency::Realtime, Some(100 * HOUR))),
            TierChoice::Realtime { because: None }
        );
        let mut q = question(Urgency::Batch, None);
        q.wait = None;
        assert_eq!(choose(q), TierChoice::Realtime { because: None });
    }

    #[test]
    fn flex_takes_standard_and_batch_first_attempts_whose_deadline_allows() {
        let mut q = question(Urgency::Standard, Some(4 * HOUR));
        q.wait = Some(HOUR / 4);
        assert!(flex(q).is_some_and(|why| why.starts_with("flex tier")));
        q.deadline = Some(q.now + chrono::Duration::minutes(20));
        assert_eq!(flex(q), None, "15m + 1h margin do not fit in 20m");
        let mut q = question(Urgency::Batch, None);
        q.wait = Some(HOUR / 4);
        assert!(flex(q).is_some());
        q.attempt = 2;
        assert_eq!(
            flex(q),
            None,
            "a retry after a flex 429 uses the default tier"
        );
        let mut q = question(Urgency::Realtime, None);
        q.wait = Some(HOUR / 4);
        assert_eq!(flex(q), None);
    }

    #[test]
    fn a_later_attempt_runs_realtime() {
        let mut q = question(Urgency::Batch, None);
        q.attempt = 2;
        let TierChoice::Realtime { because: Some(why) } = choose(q) else {
            panic!("attempt 2 must run real-time");
        };
        assert!(why.contains("attempt 2"), "{why}");
    }
}
