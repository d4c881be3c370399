//! The RabbitMQ topology Sluice owns: every exchange and queue name under one prefix, the
//! arguments each queue is declared with, and the retry ladder.
//!
//! Names live here, in one place, so the backend, the tests and the docs can never disagree
//! about them, and so any number of deployments (or tests) can share one broker by choosing
//! different prefixes.
//!
//! Choices, and why:
//! - Quorum queues everywhere: durable and replicated, with poison-message handling
//!   (`x-delivery-limit`) and at-least-once dead-lettering, which classic queues lack.
//! - Every work queue dead-letters to `P.dead` with an explicit delivery limit, because
//!   RabbitMQ 4 silently drops a quorum-queue message after 20 failed deliveries when no
//!   dead-letter exchange is set. `P.dead` fans out to two queues: `P.jobs.dead`, the
//!   operator's, and `P.jobs.dead.settle`, which Sluice reads to fail each dead-lettered job
//!   in the store.
//! - Retries wait in one delay queue per urgency and rung, with a queue-level TTL: every message
//!   in a queue then expires in arrival order. A per-message TTL would let a long delay at the
//!   head of a shared queue hold back the short ones behind it.
//! - `x-dead-letter-strategy=at-least-once` (with the `x-overflow=reject-publish` it requires)
//!   on every queue that dead-letters: the default strategy republishes without confirms and
//!   can lose a message in transit. It exists since RabbitMQ 3.10 (needs the `stream_queue`
//!   feature flag, enabled by default on fresh 3.10 nodes and mandatory in 4.x). None of the
//!   queues has a length limit, so `reject-publish` never rejects anything by itself.

use crate::job::Urgency;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// One rung of the retry ladder: a delay queue whose messages all wait `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub ttl: Duration,
    /// Suffix of the queue name, e.g. `5s` in `sluice.delay.standard.5s`.
    pub label: &'static str,
}

/// The retry ladder, shortest first. A delay is served by one rung when one fits it closely,
/// and otherwise by several hops (see [`choose_rung`]), so the rungs only bound the number of
/// hops, never how late a message comes back.
pub const RUNGS: [Rung; 6] = [
    Rung {
        ttl: Duration::from_secs(1),
        label: "1s",
    },
    Rung {
        ttl: Duration::from_secs(5),
        label: "5s",
    },
    Rung {
        ttl: Duration::from_secs(30),
        label: "30s",
    },
    Rung {
        ttl: Duration::from_secs(120),
        label: "2m",
    },
    Rung {
        ttl: Duration::from_secs(600),
        label: "10m",
    },
    Rung {
        ttl: Duration::from_secs(3600),
        label: "1h",
    },
];

/// How late a retry may come back to save a hop: a tenth of its delay, and at least the
/// shortest rung (a shorter wait has no queue of its own).
fn lateness_allowed(delay: Duration) -> Duration {
    (delay / 10).max(RUNGS[0].ttl)
}

/// The rung a message waiting `delay` is parked on next. A rung that ends within
/// [`lateness_allowed`] after the delay serves it in one hop; otherwise the longest rung that
/// ends before it, and the message carries a "not before" time and is parked again for the
/// rest when it comes back (as a delay above the top rung always is). So a retry never comes
/// back earlier than asked, and at most a tenth (or the shortest rung) later: a 60 s wait is
/// two 30 s hops, not the 2 min rung; 1.6 s is 1 s and 1 s, not 5 s.
pub fn choose_rung(delay: Duration) -> Rung {
    let close = RUNGS
        .iter()
        .find(|rung| rung.ttl >= delay && rung.ttl <= delay + lateness_allowed(delay));
    let shorter = || RUNGS.iter().rev().find(|rung| rung.ttl <= delay);
    *close.or_else(shorter).unwrap_or(&RUNGS[0])
}

/// Names of everything under one prefix. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
}

impl Topology {
    /// `delivery_limit`: how many failed deliveries (crash, lost connection, requeue) a message
    /// gets before it is dead-lettered to [`Topology::dead_queue`].
    pub fn new(prefix: impl Into<String>, delivery_limit: u32) -> Self {
        Topology {
            prefix: prefix.into(),
            delivery_limit,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The durable direct exchange jobs are published to; routing key = urgency name.
    pub fn exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The durable fanout exchange that work queues dead-letter to.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The work queue of one urgency.
    pub fn work_queue(&self, urgency: Urgency) -> String {
        format!("{}.jobs.{}", self.prefix, urgency.as_str())
    }

    /// Where poison messages and explicit dead letters end up, for the operator.
    pub fn dead_queue(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }

    /// A second copy of every dead letter, which Sluice reads to fail the job in the store
    /// with the reason (see `dead_letters`), so a message the broker gave up on (its delivery
    /// limit) never leaves its job `running`; [`Topology::dead_queue`] keeps the operator's.
    pub fn dead_settle_queue(&self) -> String {
        format!("{}.jobs.dead.settle", self.prefix)
    }

    /// The delay queue of one urgency and rung; expired messages go back to
    /// [`Topology::work_queue`] of the same urgency.
    pub fn delay_queue(&self, urgency: Urgency, rung: Rung) -> String {
        format!("{}.delay.{}.{}", self.prefix, urgency.as_str(), rung.label)
    }

    /// Every queue, for declaration and for clean-up.
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = Urgency::ALL.iter().map(|u| self.work_queue(*u)).collect();
        queues.push(self.dead_queue());
        queues.push(self.dead_settle_queue());
        for urgency in Urgency::ALL {
            for rung in RUNGS {
                queues.push(self.delay_queue(urgency, rung));
            }
        }
        queues
    }

    /// Every exchange, for declaration and for clean-up.
    pub fn all_exchanges(&self) -> Vec<String> {
        vec![self.exchange(), self.dead_exchange()]
    }

    fn work_queue_args(&self) -> FieldTable {
        let mut args = quorum_args();
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(self.dead_exchange()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        at_least_once_dead_lettering(&mut args);
        args
    }

    fn delay_queue_args(&self, urgency: Urgency, rung: Rung) -> FieldTable {
        let mut args = quorum_args();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(rung.ttl.as_millis()).unwrap_or(i64::MAX)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(self.exchange()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(urgency.as_str().to_string()),
        );
        at_least_once_dead_lettering(&mut args);
        args
    }

    /// Declares everything (idempotent). Run after every (re)connect: a broker that lost its
    /// definitions, or a prefix never used before, gets them back before anything is published.
    /// Fails with the broker's message when a name exists with other arguments, which closes
    /// `channel`.
    /// Deletes every queue and exchange of this topology, messages included: for tests and
    /// benchmarks that borrow a broker under a throwaway prefix. Never used on a live prefix.
    ///
    /// Best effort: a failure closes its channel, so each deletion gets a channel of its own
    /// and all are tried; the first failure is returned.
    pub async fn delete(&self, connection: &lapin::Connection) -> lapin::Result<()> {
        let mut first_error = None;
        for queue in self.all_queues() {
            let result = async {
                let channel = connection.create_channel().await?;
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
                channel.close(200, "deleted".into()).await
            }
            .await;
            first_error = first_error.or(result.err());
        }
        for exchange in self.all_exchanges() {
            let result = async {
                let channel = connection.create_channel().await?;
                channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
                channel.close(200, "deleted".into()).await
            }
            .await;
            first_error = first_error.or(result.err());
        }
        first_error.map_or(Ok(()), Err)
    }

    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;

        // The dead queues are the end of the line: no dead-letter exchange of their own.
        for dead in [self.dead_queue(), self.dead_settle_queue()] {
            channel
                .queue_declare(
                    dead.as_str().into(),
                    QueueDeclareOptions::durable(),
                    quorum_args(),
                )
                .await?;
            channel
                .queue_bind(
                    dead.as_str().into(),
                    self.dead_exchange().into(),
                    ShortString::from(""),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }

        for urgency in Urgency::ALL {
            channel
                .queue_declare(
                    self.work_queue(urgency).into(),
                    QueueDeclareOptions::durable(),
                    self.work_queue_args(),
                )
                .await?;
            channel
                .queue_bind(
                    self.work_queue(urgency).into(),
                    self.exchange().into(),
                    urgency.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            // Delay queues are published to through the default exchange (routing key = queue
            // name), so they need no binding.
            for rung in RUNGS {
                channel
                    .queue_declare(
                        self.delay_queue(urgency, rung).into(),
                        QueueDeclareOptions::durable(),
                        self.delay_queue_args(urgency, rung),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

fn long_string(s: String) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum".to_string()));
    args
}

fn at_least_once_dead_lettering(args: &mut FieldTable) {
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once".to_string()),
    );
    args.insert(
        "x-overflow".into(),
        long_string("reject-publish".to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `delay` the way the consumer does: hop after hop, each parked on the chosen
    /// rung, until the message is no longer early. Returns the hops and the total wait.
    fn served(delay: Duration) -> (Vec<&'static str>, Duration) {
        let mut waited = Duration::ZERO;
        let mut hops = Vec::new();
        while waited < delay {
            let rung = choose_rung(delay - waited);
            hops.push(rung.label);
            waited += rung.ttl;
        }
        (hops, waited)
    }

    #[test]
    fn a_delay_is_never_rounded_up_to_a_far_rung() {
        let secs = Duration::from_secs;
        assert_eq!(choose_rung(Duration::ZERO).label, "1s");
        assert_eq!(choose_rung(Duration::from_millis(1)).label, "1s");
        assert_eq!(choose_rung(secs(1)).label, "1s");
        assert_eq!(choose_rung(secs(5)).label, "5s");
        // Close enough to a rung: one hop, a little late.
        assert_eq!(choose_rung(secs(29)).label, "30s");
        assert_eq!(choose_rung(Duration::from_millis(4500)).label, "5s");
        // Far from the next rung: the shorter one, and the rest later.
        assert_eq!(choose_rung(Duration::from_millis(1600)).label, "1s");
        assert_eq!(choose_rung(secs(60)).label, "30s");
        assert_eq!(choose_rung(secs(31)).label, "30s");
        assert_eq!(choose_rung(secs(86_400)).label, "1h");
        // The cases that were served late: a 60 s cool-down (was 2 min), 1.6 s (was 5 s).
        assert_eq!(served(secs(60)), (vec!["30s", "30s"], secs(60)));
        assert_eq!(
            served(Duration::from_millis(1600)),
            (vec!["1s", "1s"], secs(2))
        );
    }

    #[test]
    fn every_delay_is_served_never_early_and_at_most_a_tenth_late() {
        for ms in (0..8_000_000u64).step_by(997) {
            let delay = Duration::from_millis(ms);
            let (hops, waited) = served(delay);
            assert!(waited >= delay, "{delay:?} served in {waited:?}");
            assert!(
                waited <= delay + lateness_allowed(delay),
                "{delay:?} served in {waited:?} by {hops:?}"
            );
            // Each hop but the last waits a whole rung: a few per rung of the delay.
            assert!(hops.len() <= 20, "{delay:?} took {hops:?}");
        }
    }

    #[test]
    fn ladder_is_sorted() {
        assert!(RUNGS.windows(2).all(|w| w[0].ttl < w[1].ttl));
    }

    #[test]
    fn names_carry_the_prefix() {
        let t = Topology::new("p", 10);
        assert_eq!(t.exchange(), "p.jobs");
        assert_eq!(t.dead_exchange(), "p.dead");
        assert_eq!(t.work_queue(Urgency::Realtime), "p.jobs.realtime");
        assert_eq!(t.dead_queue(), "p.jobs.dead");
        assert_eq!(
            t.delay_queue(Urgency::Standard, RUNGS[1]),
            "p.delay.standard.5s"
        );
        assert_eq!(t.dead_settle_queue(), "p.jobs.dead.settle");
        assert_eq!(t.all_queues().len(), 3 + 2 + 3 * RUNGS.len());
        assert!(t.all_queues().iter().all(|q| q.starts_with("p.")));
    }
}
