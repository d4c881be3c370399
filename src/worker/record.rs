//! The record stage: an attempt's outcome turned into how the run ends — the answer and its
//! cost, the attempt recorded and the job retried later, or the job failed.
//!
//! Pure apart from the back-off's jitter and the clock: the settle step writes what it
//! decides.

use super::attempt::{Called, Plan};
use super::backoff;
use super::route::deadline_of;
use super::settle::Ending;
use crate::config::RetryConfig;
use crate::finish::{charge, Failure, Tier};
use crate::job::Envelope;
use crate::providers::{ErrorKind, ProviderError};
use crate::router::Route;
use crate::store::{now_ms, AttemptOutcome, AttemptRecord};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// How attempt `number` of `envelope`'s job on `route`, as `plan` made it, ends the run.
pub(super) fn ending(
    retry: &RetryConfig,
    max_attempts: u32,
    envelope: &Envelope,
    route: &Route,
    plan: &Plan,
    number: u32,
    called: Called,
) -> Ending {
    let deployment = &plan.pick.deployment;
    let attempt = |outcome: AttemptOutcome,
                   status: Option<u16>,
                   error: Option<String>,
                   retry_after: Option<Duration>| AttemptRecord {
        number,
        deployment: deployment.name.clone(),
        provider: deployment.provider_name.clone(),
        model: deployment.model.clone(),
        key_id: deployment.key(plan.pick.key).id.clone(),
        tier: plan.tier,
        outcome,
        http_status: status,
        error,
        retry_after_ms: retry_after.map(|d| d.as_millis() as i64),
        started_at: plan.started_at,
        finished_at: now_ms(),
        chosen_because: plan.chosen_because.clone(),
        first_token_ms: called.first_token.map(|d| d.as_millis() as i64),
    };
    let error = match called.result {
        Ok(completion) => {
            return Ending::Succeed {
                cost: charge(completion.usage, deployment, route, plan.tier),
                attempt: attempt(AttemptOutcome::Ok, Some(completion.status), None, None),
                response: completion.response,
            }
        }
        Err(error) => error,
    };
    let record = attempt(
        AttemptOutcome::Failed(error.kind.into()),
        error.status,
        Some(error.message.clone()),
        error.retry_after,
    );
    let id = envelope.id;
    if plan.tier == Tier::Flex && error.kind == ErrorKind::RateLimited {
        // Flex capacity is short: the next attempt takes the default tier at once.
        tracing::info!(job = %id, attempt = number, "flex tier unavailable; retrying on the default tier");
        return Ending::Retry {
            attempt: record,
            delay: Duration::ZERO,
        };
    }
    let failed = FailedAttempt {
        number,
        max_attempts,
        has_fallback: route.chain.len() > 1,
        deadline: deadline_of(envelope, route),
    };
    match failed.next(retry, &error, Utc::now()) {
        AfterFailure::Retry(delay) => {
            tracing::info!(job = %id, attempt = number, deployment = %record.deployment, error = %error, ?delay, "retrying later");
            Ending::Retry {
                attempt: record,
                delay,
            }
        }
        AfterFailure::Fail(message) => {
            tracing::info!(job = %id, attempt = number, %message, "job failed");
            Ending::Fail(Some(record), Failure::provider(&error, message))
        }
    }
}

/// A failed attempt, with what deciding its job's next step needs.
struct FailedAttempt {
    number: u32,
    max_attempts: u32,
    /// Whether the route has another deployment to move along to.
    has_fallback: bool,
    deadline: Option<DateTime<Utc>>,
}

/// What follows a failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum AfterFailure {
    /// Retry after this long.
    Retry(Duration),
    /// Fail the job with this message.
    Fail(String),
}

impl FailedAttempt {
    /// What follows `error` at `now`.
    ///
    /// A spent quota, a refused key or a model the provider does not know will fail the same
    /// way there again, but the next attempt moves along the chain to another deployment. A
    /// spent key rests, so another key of this deployment may take the call; when none can,
    /// the router refuses the next attempt at once.
    fn next(&self, retry: &RetryConfig, error: &ProviderError, now: DateTime<Utc>) -> AfterFailure {
        let number = self.number;
        let retryable = error.is_retryable()
            || (error.kind.is_deployment_fault() && self.has_fallback)
            || error.kind == ErrorKind::QuotaExhausted;
        if retryable && number < self.max_attempts {
            // With another deployment (or, for a spent key, another key) to go to, the next
            // attempt need not wait out this one's `retry-after`: the key is cooling down,
            // and the router skips it.
            let hint = if self.has_fallback || error.kind == ErrorKind::QuotaExhausted {
                None
            } else {
                error.retry_after
            };
            let delay = backoff::delay(retry, number, hint);
            let past_deadline = self.deadline.is_some_and(|d| now + delay > d);
            if !past_deadline {
                return AfterFailure::Retry(delay);
            }
        }
        AfterFailure::Fail(if retryable && number >= self.max_attempts {
            format!("gave up after {number} attempts; last error: {error}")
        } else {
            error.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }

    fn failed(number: u32) -> FailedAttempt {
        FailedAttempt {
            number,
            max_attempts: 3,
            has_fallback: false,
            deadline: None,
        }
    }

    fn error(kind: ErrorKind) -> ProviderError {
        ProviderError::new("openai", kind, Some(500), "upstream trouble")
    }

    #[test]
    fn a_retryable_error_retries_until_max_attempts_then_gives_up() {
        let now = Utc::now();
        let server = error(ErrorKind::ServerError);
        assert!(matches!(
            failed(2).next(&retry(), &server, now),
            AfterFailure::Retry(_)
        ));
        let AfterFailure::Fail(message) = failed(3).next(&retry(), &server, now) else {
            panic!("the last attempt fails the job");
        };
        assert!(message.starts_with("gave up after 3 attempts"), "{message}");
    }

    #[test]
    fn a_client_error_fails_at_once_with_the_providers_words() {
        let bad = error(ErrorKind::BadRequest);
        assert_eq!(
            failed(1).next(&retry(), &bad, Utc::now()),
            AfterFailure::Fail(bad.to_string())
        );
    }

    #[test]
    fn a_retry_that_would_pass_the_deadline_fails_instead() {
        let now = Utc::now();
        let mut attempt = failed(1);
        attempt.deadline = Some(now + chrono::Duration::milliseconds(10));
        let mut late = error(ErrorKind::RateLimited);
        late.retry_after = Some(Duration::from_secs(30));
        assert_eq!(
            attempt.next(&retry(), &late, now),
            AfterFailure::Fail(late.to_string())
        );
    }

    #[test]
    fn with_a_fallback_the_retry_does_not_wait_out_retry_after_and_a_refused_key_moves_on() {
        let now = Utc::now();
        let mut attempt = failed(1);
        attempt.has_fallback = true;
        let mut limited = error(ErrorKind::RateLimited);
        limited.retry_after = Some(Duration::from_secs(600));
        let AfterFailure::Retry(delay) = attempt.next(&retry(), &limited, now) else {
            panic!("a 429 with a fallback is retried");
        };
        assert!(delay <= Duration::from_secs(1), "{delay:?}");
        assert!(matches!(
            attempt.next(&retry(), &error(ErrorKind::Unauthorized), now),
            AfterFailure::Retry(_)
        ));
        attempt.has_fallback = false;
        assert!(matches!(
            attempt.next(&retry(), &error(ErrorKind::Unauthorized), now),
            AfterFailure::Fail(_)
        ));
    }
}
