//! The attempt stage: the attempt counted in the store as it starts, the call made, and what
//! the call says about the deployment's health and the key fed back before the next call.
//!
//! The attempt is recorded `running` as it starts ([`Store::start_attempt`]), so a crash
//! during the call leaves it visible (and `interrupted` once the job is picked up again);
//! attempts are counted in the store, across crashes, up to `max_attempts`.

use super::call::call_deployment;
use super::watcher::Watcher;
use super::WorkerContext;
use crate::finish::Tier;
use crate::job::Envelope;
use crate::providers::{Call, Completion, ErrorKind, ProviderError};
use crate::router::health::Verdict;
use crate::router::{FlexTier, Pick, Route};
use crate::store::{now_ms, AttemptStart, StartOutcome, Store, StoreError};
use crate::traces::genai;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// How long a key rests after a 429 that did not say how long.
const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);
/// How long a key rests after the provider refused it: long enough that the deployment's
/// other keys (or the next deployment) carry the traffic, short enough that a key put right
/// is back within a minute. (A key out of credit rests longer: `limits::SPENT_KEY_REST`.)
const KEY_FAULT_COOLDOWN: Duration = Duration::from_secs(60);

/// An admitted, funded attempt about to be made: where it goes, on which tier, and why.
#[derive(Debug)]
pub(super) struct Plan {
    pub pick: Pick,
    pub tier: Tier,
    /// OpenAI's flex service tier, when the call uses it.
    flex: Option<FlexTier>,
    /// Why the attempt goes where it does: the tier's reasons, then the router's.
    pub chosen_because: Option<String>,
    /// Unix ms.
    pub started_at: i64,
}

impl Plan {
    /// Plans attempt `attempt` with `pick`; `tier_note` says why it is not on the batch tier,
    /// when it could have been.
    pub(super) fn new(
        context: &WorkerContext,
        envelope: &Envelope,
        pick: Pick,
        attempt: u32,
        deadline: Option<DateTime<Utc>>,
        tier_note: Option<String>,
    ) -> Plan {
        let safety_margin = context.config.batch.safety_margin;
        let (flex, flex_note) =
            match super::tier::flex(&pick.deployment, envelope, attempt, deadline, safety_margin) {
                Some((flex, why)) => (Some(flex), Some(why)),
                None => (None, None),
            };
        let tier = if flex.is_some() {
            Tier::Flex
        } else {
            Tier::Realtime
        };
        let chosen_because = Some(
            tier_note
                .into_iter()
                .chain(flex_note)
                .chain([pick.chosen_because.clone()])
                .collect::<Vec<_>>()
                .join("; "),
        );
        Plan {
            pick,
            tier,
            flex,
            chosen_because,
            started_at: now_ms(),
        }
    }

    /// Gives the pick up without calling.
    pub(super) fn abandon(self) {
        self.pick.abandon();
    }
}

/// Whether the attempt started.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Started {
    /// Recorded `running` as attempt number `n`: make the call.
    Number(u32),
    /// Not to be made: the job is final (finished, cancelled, or failed now for having had
    /// its `max_attempts`). Give the pick up and ack.
    NotRunnable,
}

/// Counts the attempt and records it `running` (one store transaction).
pub(super) async fn start(
    store: &Store,
    id: Uuid,
    max_attempts: u32,
    plan: &Plan,
) -> Result<Started, StoreError> {
    let deployment = &plan.pick.deployment;
    let start = AttemptStart {
        deployment: deployment.name.clone(),
        provider: deployment.provider_name.clone(),
        model: deployment.model.clone(),
        key_id: deployment.key(plan.pick.key).id.clone(),
        tier: plan.tier,
        started_at: plan.started_at,
        chosen_because: plan.chosen_because.clone(),
    };
    Ok(match store.start_attempt(id, max_attempts, start).await? {
        StartOutcome::Started(n) => Started::Number(n),
        StartOutcome::Exhausted { attempts } => {
            tracing::warn!(job = %id, attempts, "max_attempts used up, the last attempt cut short; the job is failed");
            Started::NotRunnable
        }
        other => {
            // Finished or cancelled since we looked: the cells taken are simply not used.
            tracing::debug!(job = %id, ?other, "no longer runnable");
            Started::NotRunnable
        }
    })
}

/// What a call came back with.
#[derive(Debug)]
pub(super) struct Called {
    pub result: Result<Completion, ProviderError>,
    /// Time to the first token, when there was one.
    pub first_token: Option<Duration>,
}

/// Makes the planned call for `envelope`'s job on `route`, then feeds its outcome to the
/// deployment's health and its key's cooldowns.
pub(super) async fn call(
    route: &Route,
    envelope: &Envelope,
    plan: &Plan,
    watcher: Option<&Watcher>,
) -> Called {
    let deployment = &plan.pick.deployment;
    let mut request = deployment.overrides.apply(&envelope.spec.request);
    if plan.flex.is_some() {
        request
            .to_mut()
            .extra
            .insert("service_tier".into(), "flex".into());
    }
    let call = Call {
        model: &deployment.model,
        api_key: deployment.key(plan.pick.key).secret(),
        request: &request,
        timeout: match plan.flex {
            Some(flex) => flex.timeout,
            None => route.attempt_timeout.unwrap_or(deployment.timeout),
        },
        stream_idle_timeout: route.stream_idle_timeout,
        options: deployment.options,
    };
    let span = genai::chat_span(deployment.kind, &deployment.model, &request);
    let clock = std::time::Instant::now();
    let (result, first_token) =
        call_deployment(deployment, call, watcher, route.first_token_timeout)
            .instrument(span.clone())
            .await;
    match &result {
        Ok(completion) => genai::record_answer(&span, completion),
        Err(error) => genai::record_failure(&span, error),
    }
    deployment.health.record(
        Verdict::of(result.as_ref().map(|_| ()).map_err(|e| e.kind)),
        clock.elapsed(),
        first_token,
    );
    // What the provider says about the key cools it down before the next call finds out.
    match key_care(&result, plan.tier) {
        KeyCare::Keep => {}
        KeyCare::CoolDown(wait) => deployment.limits.cool_down(plan.pick.key, wait),
        KeyCare::Spend(rest) => deployment.limits.spend(plan.pick.key, rest),
    }
    Called {
        result,
        first_token,
    }
}

/// What a call's outcome means for the key it used.
#[derive(Debug, PartialEq, Eq)]
enum KeyCare {
    Keep,
    /// Rest it this long (a 429, a refused key, an answer saying it has nothing left).
    CoolDown(Duration),
    /// Out of credit: it rests this long on every deployment of its provider.
    Spend(Duration),
}

/// Pure: how `result`, on `tier`, treats its key. A flex 429 says flex capacity is short,
/// not that the key is spent.
fn key_care(result: &Result<Completion, ProviderError>, tier: Tier) -> KeyCare {
    let error = match result {
        Ok(completion) => {
            return completion
                .key_spent_for
                .map_or(KeyCare::Keep, KeyCare::CoolDown)
        }
        Err(error) => error,
    };
    match error.kind {
        ErrorKind::RateLimited if tier == Tier::Flex => KeyCare::Keep,
        ErrorKind::RateLimited => {
            KeyCare::CoolDown(error.retry_after.unwrap_or(DEFAULT_RATE_LIMIT_COOLDOWN))
        }
        ErrorKind::Unauthorized => {
            KeyCare::CoolDown(error.retry_after.unwrap_or(KEY_FAULT_COOLDOWN))
        }
        ErrorKind::QuotaExhausted => {
            KeyCare::Spend(error.retry_after.unwrap_or(crate::limits::SPENT_KEY_REST))
        }
        _ => KeyCare::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: ErrorKind, retry_after: Option<Duration>) -> Result<Completion, ProviderError> {
        let mut error = ProviderError::new("openai", kind, Some(429), "no");
        error.retry_after = retry_after;
        Err(error)
    }

    #[test]
    fn a_429_cools_the_key_for_what_the_provider_said_or_a_second() {
        let said = Some(Duration::from_secs(7));
        assert_eq!(
            key_care(&error(ErrorKind::RateLimited, said), Tier::Realtime),
            KeyCare::CoolDown(Duration::from_secs(7))
        );
        assert_eq!(
            key_care(&error(ErrorKind::RateLimited, None), Tier::Realtime),
            KeyCare::CoolDown(DEFAULT_RATE_LIMIT_COOLDOWN)
        );
    }

    #[test]
    fn a_flex_429_leaves_the_key_alone() {
        assert_eq!(
            key_care(&error(ErrorKind::RateLimited, None), Tier::Flex),
            KeyCare::Keep
        );
    }

    #[test]
    fn a_refused_key_rests_a_minute_and_a_spent_one_an_hour() {
        assert_eq!(
            key_care(&error(ErrorKind::Unauthorized, None), Tier::Realtime),
            KeyCare::CoolDown(KEY_FAULT_COOLDOWN)
        );
        assert_eq!(
            key_care(&error(ErrorKind::QuotaExhausted, None), Tier::Realtime),
            KeyCare::Spend(crate::limits::SPENT_KEY_REST)
        );
        assert_eq!(
            key_care(&error(ErrorKind::ServerError, None), Tier::Realtime),
            KeyCare::Keep
        );
    }

    #[test]
    fn an_answer_saying_the_key_has_nothing_left_cools_it() {
        let answer = |key_spent_for| {
            Ok(Completion {
                response: serde_json::json!({}),
                usage: Default::default(),
                status: 200,
                key_spent_for,
            })
        };
        let wait = Duration::from_secs(3);
        assert_eq!(
            key_care(&answer(Some(wait)), Tier::Realtime),
            KeyCare::CoolDown(wait)
        );
        assert_eq!(key_care(&answer(None), Tier::Realtime), KeyCare::Keep);
    }
}
