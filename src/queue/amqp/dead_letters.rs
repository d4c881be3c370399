//! Why RabbitMQ dead-lettered a message, read from its headers.
//!
//! Every dead letter reaches `P.dead`, which fans out to the operator's `P.jobs.dead` and to
//! `P.jobs.dead.settle`, which Sluice's workers read ([`crate::queue::Queue::consume_dead_letters`])
//! to fail the job in the store with the reason: a message the broker gave up on at its
//! delivery limit (a crash loop: every delivery left unsettled) must not leave its job
//! `running` for ever. Two kinds of dead letter arrive there:
//!
//! - Sluice's own (a message that is not a job, an unknown tenant): the reason is in the
//!   [`DEAD_REASON_HEADER`] header the worker wrote.
//! - The broker's: `x-last-death-reason` (or the first `x-death` entry's `reason`) says why;
//!   `delivery_limit` is the crash loop.

use super::DEAD_REASON_HEADER;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// Dead letters a consumer holds unsettled at once: each is one short store write.
pub(super) const PREFETCH: u16 = 16;

/// Why the message with `properties` was dead-lettered, in words for the job's error.
pub(super) fn reason(properties: &BasicProperties, delivery_limit: u32) -> String {
    let headers = properties.headers().as_ref();
    if let Some(reason) = headers.and_then(|h| text(h, DEAD_REASON_HEADER)) {
        return reason;
    }
    let broker_reason = headers.and_then(|h| {
        text(h, "x-last-death-reason").or_else(|| match h.inner().get("x-death") {
            Some(AMQPValue::FieldArray(deaths)) => {
                deaths.as_slice().iter().find_map(|death| match death {
                    AMQPValue::FieldTable(death) => text(death, "reason"),
                    _ => None,
                })
            }
            _ => None,
        })
    });
    match broker_reason.as_deref() {
        Some("delivery_limit") => {
            let deliveries = headers.and_then(|h| match h.inner().get("x-delivery-count") {
                Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).ok(),
                Some(AMQPValue::LongInt(n)) => u32::try_from(*n).ok(),
                _ => None,
            });
            crate::queue::past_delivery_limit(delivery_limit, deliveries)
        }
        Some(other) => format!("the broker dead-lettered its message ({other})"),
        None => "the broker dead-lettered its message (no reason given)".to_string(),
    }
}

/// A header's text, if it is text.
pub(super) fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(text)) => Some(text.to_string()),
        Some(AMQPValue::ShortString(text)) => Some(text.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn with(headers: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert(name.into(), value);
        }
        BasicProperties::default().with_headers(table)
    }

    #[test]
    fn a_delivery_limit_names_the_limit() {
        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("delivery_limit")),
        );
        let properties = with(vec![(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        )]);
        let reason = reason(&properties, 3);
        assert!(reason.contains("delivery limit of 3"), "{reason}");
    }

    #[test]
    fn sluices_own_reason_comes_first() {
        let properties = with(vec![
            (
                DEAD_REASON_HEADER,
                AMQPValue::LongString(LongString::from("unknown tenant \"x\"")),
            ),
            (
                "x-last-death-reason",
                AMQPValue::LongString(LongString::from("rejected")),
            ),
        ]);
        assert_eq!(reason(&properties, 3), "unknown tenant \"x\"");
        let properties = with(vec![(
            "x-last-death-reason",
            AMQPValue::LongString(LongString::from("rejected")),
        )]);
        assert_eq!(
            reason(&properties, 3),
            "the broker dead-lettered its message (rejected)"
        );
    }
}
