//! The route stage: the job's model resolved to its route, and the job's deadline.
//!
//! A pure decision, taken before any capacity is looked for: a job whose model no route
//! serves, or whose deadline has passed, is failed without touching a key.

use crate::config::Config;
use crate::failure::JobFailure;
use crate::finish::Failure;
use crate::job::Envelope;
use crate::router::{Route, Router};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Where the job goes, or why it goes nowhere.
#[derive(Debug)]
pub(super) enum Routed {
    /// On `route`, to finish by `deadline` (its own or its route's, the earlier).
    Go {
        route: Arc<Route>,
        deadline: Option<DateTime<Utc>>,
    },
    /// Fail the job: its model is unknown, or its deadline has passed.
    Fail(Failure),
}

/// Resolves the route and deadline of `envelope`'s job at `now`.
pub(super) fn resolve(
    router: &Router,
    config: &Config,
    envelope: &Envelope,
    now: DateTime<Utc>,
) -> Routed {
    let model = &envelope.spec.request.model;
    let Some(route) = router.route(model).cloned() else {
        return Routed::Fail(Failure::new(
            JobFailure::UnknownModel,
            config.unknown_model(model),
        ));
    };
    let deadline = deadline_of(envelope, &route);
    match deadline {
        Some(deadline) if deadline < now => Routed::Fail(Failure::new(
            JobFailure::DeadlineExceeded,
            format!("the job's deadline {deadline} passed before it could run"),
        )),
        _ => Routed::Go { route, deadline },
    }
}

/// The earlier of the job's own deadline and its route's deadline for its urgency, counted
/// from submission (the time in the job's UUIDv7).
pub(super) fn deadline_of(envelope: &Envelope, route: &Route) -> Option<DateTime<Utc>> {
    let by_route = route
        .deadlines
        .get(envelope.spec.urgency)
        .and_then(|limit| {
            let (secs, nanos) = envelope.id.get_timestamp()?.to_unix();
            let submitted = DateTime::from_timestamp(secs as i64, nanos)?;
            Some(submitted + chrono::Duration::from_std(limit).ok()?)
        });
    match (envelope.spec.deadline, by_route) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ChatRequest, JobSpec, Urgency};

    fn envelope(model: &str, deadline: Option<DateTime<Utc>>) -> Envelope {
        let request: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": model, "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        let mut spec = JobSpec::new(Urgency::Standard, request);
        spec.deadline = deadline;
        Envelope::new("default", spec)
    }

    fn router(config: &Config) -> Router {
        Router::new(
            &config.clone().resolve().unwrap(),
            reqwest::Client::new(),
            None,
        )
    }

    #[test]
    fn an_unknown_model_fails_the_job_naming_the_known_ones() {
        let config = Config::builtin();
        let Routed::Fail(failure) = resolve(
            &router(&config),
            &config,
            &envelope("no-such-model", None),
            Utc::now(),
        ) else {
            panic!("an unknown model has no route");
        };
        assert_eq!(failure.kind, JobFailure::UnknownModel);
        assert!(
            failure.message.contains("no-such-model"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_passed_deadline_fails_the_job_and_a_later_one_goes() {
        let config = Config::builtin();
        let router = router(&config);
        let now = Utc::now();
        let deadline = now + chrono::Duration::minutes(5);
        let job = envelope("fast", Some(deadline));
        let Routed::Go {
            route,
            deadline: by,
        } = resolve(&router, &config, &job, now)
        else {
            panic!("a job before its deadline goes");
        };
        assert_eq!(route.name, "fast");
        assert!(by.is_some_and(|by| by <= deadline));
        let later = deadline + chrono::Duration::seconds(1);
        let Routed::Fail(failure) = resolve(&router, &config, &job, later) else {
            panic!("a job past its deadline fails");
        };
        assert_eq!(failure.kind, JobFailure::DeadlineExceeded);
    }
}
