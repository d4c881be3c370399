//! The worker's spans of a job (see [`crate::traces`]): `job`, one per delivery, under the
//! submitter's span that the message names; in it `attempt`, with the provider call's
//! `chat {model}` span inside ([`crate::traces::genai`]), and `settle`. Sluice's own
//! attributes are `sluice.*`: the job, tenant, urgency, route, deployment, key id (never the
//! key), tier, attempt number, outcome and cost in pico-USD.
//!
//! Every span is disabled when no traces are exported, and then nothing here computes a
//! field.

use super::attempt::Plan;
use super::settle::{Ending, Settlement};
use crate::job::{Envelope, Urgency};
use crate::traces::{self, genai, TARGET};
use tracing::field::Empty;

/// The span of one delivery of `envelope`'s job, a child of the span the message names
/// (`traceparent` of the envelope, else of the message's headers).
pub(super) fn job(
    envelope: &Envelope,
    urgency: Urgency,
    header_traceparent: Option<&str>,
    redelivered: bool,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "job",
        otel.kind = "consumer",
        sluice.job.id = %envelope.id,
        sluice.tenant = envelope.tenant.as_str(),
        sluice.urgency = urgency.as_str(),
        sluice.redelivered = redelivered,
        sluice.route = Empty,
        sluice.outcome = Empty,
        sluice.cost.pico_usd = Empty,
    );
    traces::adopt(&span, traceparent(envelope, header_traceparent));
    span
}

/// Which `traceparent` a delivery's spans join: the envelope's, else the message headers'.
pub(super) fn traceparent<'a>(
    envelope: &'a Envelope,
    header_traceparent: Option<&'a str>,
) -> Option<&'a str> {
    envelope.traceparent.as_deref().or(header_traceparent)
}

/// The span of attempt `number`, as `plan` makes it.
pub(super) fn attempt(plan: &Plan, number: u32) -> tracing::Span {
    let deployment = &plan.pick.deployment;
    tracing::info_span!(
        target: TARGET,
        "attempt",
        sluice.attempt = i64::from(number),
        sluice.deployment = deployment.name.as_str(),
        sluice.provider = deployment.provider_name.as_str(),
        gen_ai.provider.name = genai::provider_name(deployment.kind),
        sluice.model = deployment.model.as_str(),
        sluice.key.id = deployment.key(plan.pick.key).id.as_str(),
        sluice.tier = plan.tier.as_str(),
        sluice.outcome = Empty,
        sluice.cost.pico_usd = Empty,
    )
}

/// Records on `span` (a job's, or an attempt's) how the run ends: its outcome, the cost of
/// an answer, the failure's kind.
pub(super) fn record_ending(span: &tracing::Span, ending: &Ending) {
    if span.is_disabled() {
        return;
    }
    match ending {
        Ending::Succeed { cost, .. } => {
            span.record("sluice.outcome", "succeeded");
            span.record("sluice.cost.pico_usd", cost.amount.0);
        }
        Ending::Retry { .. } => {
            span.record("sluice.outcome", "retry");
        }
        Ending::Fail(_, failure) => {
            span.record("sluice.outcome", "failed");
            traces::record_error(span, failure.kind.as_str());
        }
        Ending::Settle(settlement) => {
            span.record("sluice.outcome", settlement_name(settlement));
        }
    }
}

/// The span of writing a run's ending and settling its message, in `job`'s span.
pub(super) fn settle(job: &tracing::Span) -> tracing::Span {
    tracing::info_span!(target: TARGET, parent: job, "settle", sluice.settlement = Empty)
}

/// Records on `span` how the message was settled.
pub(super) fn record_settlement(span: &tracing::Span, settlement: &Settlement) {
    span.record("sluice.settlement", settlement_name(settlement));
}

fn settlement_name(settlement: &Settlement) -> &'static str {
    match settlement {
        Settlement::Ack => "ack",
        Settlement::RetryAfter(_) => "retry_after",
        Settlement::DeadLetter(_) => "dead_letter",
    }
}
