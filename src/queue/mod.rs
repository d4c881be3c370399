//! The job queue: one trait, two backends with the same semantics.
//!
//! - [`amqp`]: RabbitMQ through lapin, for production and for scaling out across machines.
//! - [`embedded`]: a table in the SQLite store, the default when no broker URL is configured.
//!
//! Semantics both keep: one queue per [`Urgency`]; at-least-once delivery with manual
//! acknowledgement (a message is settled only after its outcome is durably stored); delayed
//! redelivery for retries (a worker never sleeps through a back-off); a dead-letter place for
//! messages that are not jobs and for messages delivered more often than the delivery limit
//! without being settled (a crash loop), whose jobs are then failed in the store; and transient [`replies`] from a worker to the API process
//! waiting on a job (a streamed answer). Messages are opaque bytes here: the envelope format belongs to
//! [`crate::job`].

pub mod amqp;
pub mod embedded;
pub mod replies;

pub use replies::Inbox;

use crate::job::{Envelope, Urgency};
use crate::store::{InsertOutcome, StoreError};
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

/// What can go wrong talking to a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker cannot be reached (yet), lost the connection mid-operation, or blocked
    /// publishing (a memory or disk alarm) for longer than the publish timeout. Also: a delivery
    /// from a connection that has since closed can no longer be settled (the broker redelivers
    /// it). Publishing may be retried; consumers reconnect.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The broker took a message but refused it (negative confirm), could not route it, or
    /// did not confirm it within the publish timeout. Retrying may duplicate it.
    #[error("the broker did not confirm the message: {0}")]
    NotConfirmed(String),
    /// The broker blocks publishing (a resource alarm): a message sent now would wait in the
    /// socket until the alarm clears. Returned at once to a producer of new jobs, rather than
    /// after the publish timeout; nothing of theirs should be taken as accepted.
    #[error("{0}: the broker takes no message until it clears")]
    Blocked(Alarm),
    /// The store behind the embedded queue failed.
    #[error("queue storage failed: {0}")]
    Storage(String),
}

/// A broker's resource alarm, read from the reason of RabbitMQ's `connection.blocked`
/// ("low on memory", "low on disk"). While one is on, the broker reads no message from any
/// publishing connection; consumers go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    Memory,
    Disk,
    MemoryAndDisk,
    /// A reason this version does not know, as the broker gave it.
    Other(String),
}

impl Alarm {
    pub fn from_reason(reason: &str) -> Alarm {
        let reason_lower = reason.to_ascii_lowercase();
        match (
            reason_lower.contains("memory"),
            reason_lower.contains("disk"),
        ) {
            (true, true) => Alarm::MemoryAndDisk,
            (true, false) => Alarm::Memory,
            (false, true) => Alarm::Disk,
            (false, false) => Alarm::Other(reason.to_string()),
        }
    }
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alarm::Memory => write!(f, "broker blocked: memory alarm"),
            Alarm::Disk => write!(f, "broker blocked: disk alarm"),
            Alarm::MemoryAndDisk => write!(f, "broker blocked: memory and disk alarms"),
            Alarm::Other(reason) => write!(f, "broker blocked: {reason:?}"),
        }
    }
}

/// Why a queue cannot take a job now ([`Queue::unready`], [`Queue::probe`]); `GET /readyz`
/// names it, after "the queue (NAME) ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unready {
    /// Not connected; the backend reconnects by itself. The last connection error, if any.
    #[error("is unreachable{}; the server reconnects by itself", .0.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Unreachable(Option<String>),
    /// A resource alarm blocks publishing.
    #[error("cannot take jobs: {0}; nothing can be accepted until it clears")]
    Blocked(Alarm),
    /// Connected and not known to be blocked, yet a probe message was not confirmed.
    #[error("cannot take jobs: the broker did not confirm a probe message ({0})")]
    Unconfirmed(String),
}

/// Why a job failed whose message the queue gave up on at its delivery limit (`deliveries`
/// made, when known): the same words on both backends.
pub fn past_delivery_limit(delivery_limit: u32, deliveries: Option<u32>) -> String {
    let made = deliveries.map_or(String::new(), |n| format!(" ({n} deliveries)"));
    format!(
        "the queue gave up on its message at the delivery limit of {delivery_limit}{made}: \
         every delivery was left unsettled, its worker crashing, killed or cut off from the \
         queue mid-job"
    )
}

/// A job queue backend.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Publishes messages durably onto the queue of `urgency`, returning only once the backend
    /// has confirmed every one of them (RabbitMQ: publisher confirms, pipelined). New jobs come
    /// this way: while the broker blocks publishing it fails at once ([`QueueError::Blocked`]),
    /// also when the block arrives while confirms are awaited.
    async fn publish(&self, urgency: Urgency, messages: Vec<Vec<u8>>) -> Result<(), QueueError>;

    /// Starts consuming the queue of `urgency`, with at most `prefetch` unsettled deliveries.
    async fn consume(
        &self,
        urgency: Urgency,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer>, QueueError>;

    /// The messages this backend dead-lettered, to fail their jobs in the store with the
    /// reason ([`Delivery::dead_reason`]) and ack: RabbitMQ's dead letters (its delivery limit
    /// reached, or dead-lettered by a worker), read from a copy of the operator's dead queue.
    /// `None` for a backend that fails the job itself as it dead-letters the message (the
    /// embedded queue, in the same transaction).
    async fn consume_dead_letters(&self) -> Result<Option<Box<dyn Consumer>>, QueueError> {
        Ok(None)
    }

    /// Opens this process's inbox for replies about `job` (see [`replies`]); its `address`
    /// goes into the job's envelope as `reply_to`.
    async fn open_inbox(&self, job: Uuid) -> Result<Inbox, QueueError>;

    /// Sends one reply about `job` to the inbox at `address`. Transient and best effort: a
    /// reply nobody waits for any more is dropped (see [`replies`]).
    async fn reply(&self, address: &str, job: Uuid, reply: Vec<u8>) -> Result<(), QueueError>;

    /// Short name for logs and benchmarks: `rabbitmq` or `embedded`.
    fn name(&self) -> &'static str;

    /// Why the backend cannot take a job now, as far as it knows without asking the broker:
    /// unreachable (it reconnects by itself meanwhile), or blocked by a resource alarm.
    fn unready(&self) -> Option<Unready> {
        None
    }

    /// Whether the backend can take a job now, asking the broker: [`Queue::unready`], then a
    /// message published and confirmed within a few seconds (RabbitMQ tells a connection it
    /// is blocked only once it publishes). `GET /readyz` reports it.
    async fn probe(&self) -> Result<(), Unready> {
        self.unready().map_or(Ok(()), Err)
    }

    /// [`Queue::unready`] as a flag, for `GET /healthz`.
    fn is_available(&self) -> bool {
        self.unready().is_none()
    }

    /// What waits in the queue now, for the metrics: each urgency's messages ready for a
    /// worker and parked on the delay ladder, and the dead letters held. Counted by the
    /// backend itself (the broker's counts; an index range of the embedded table), never by
    /// reading the jobs.
    async fn depths(&self) -> Result<Depths, QueueError>;

    /// Records new jobs and queues their messages in one store transaction, for a backend
    /// kept in the store (the embedded queue: [`embedded::EmbeddedQueue::record_and_enqueue`]),
    /// returning each job's outcome once committed. `None` for a broker, which cannot take
    /// part in the store's transaction: the submitter then records the jobs, publishes them
    /// with confirms and marks them published, in that order.
    async fn insert_and_publish(
        &self,
        _envelopes: &[Envelope],
    ) -> Option<Result<Vec<InsertOutcome>, StoreError>> {
        None
    }
}

/// What waits in a queue (see [`Queue::depths`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depths {
    pub urgencies: Vec<UrgencyDepth>,
    /// Messages held in the dead letters (the operator's dead queue on RabbitMQ).
    pub dead: u64,
}

/// One urgency's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrgencyDepth {
    pub urgency: Urgency,
    /// Ready for a worker (not taken, or taken by a worker whose lease ran out).
    pub ready: u64,
    /// Parked on the delay ladder (a retry's back-off, a job waiting for capacity).
    pub delayed: u64,
}

/// A stream of deliveries from one queue.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery. Waits while the queue is empty or the backend reconnects; `None`
    /// only when the consumer is shut down for good.
    async fn next(&mut self) -> Option<Delivery>;
}

/// One delivered message, to be settled exactly once.
pub struct Delivery {
    pub payload: Vec<u8>,
    /// True when the backend has delivered this message before (a crash, a lost connection,
    /// an expired lease). The worker checks the store rather than trusting this flag.
    pub redelivered: bool,
    /// For a dead letter ([`Queue::consume_dead_letters`]): why it was dead-lettered.
    pub dead_reason: Option<String>,
    /// The W3C trace context the message's headers carried (RabbitMQ), for a job whose
    /// envelope carries none (a foreign producer's).
    pub traceparent: Option<String>,
    settle: Box<dyn Settle>,
}

impl Delivery {
    pub fn new(payload: Vec<u8>, redelivered: bool, settle: Box<dyn Settle>) -> Self {
        Delivery {
            payload,
            redelivered,
            dead_reason: None,
            traceparent: None,
            settle,
        }
    }

    /// This delivery, with the trace context its message's headers carried.
    pub fn with_traceparent(self, traceparent: Option<String>) -> Self {
        Delivery {
            traceparent,
            ..self
        }
    }

    /// A dead letter, dead-lettered for `reason`.
    pub fn dead_letter_of(payload: Vec<u8>, reason: String, settle: Box<dyn Settle>) -> Self {
        Delivery {
            payload,
            redelivered: false,
            dead_reason: Some(reason),
            traceparent: None,
            settle,
        }
    }

    /// Done with: remove the message from the queue.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle.ack().await
    }

    /// Deliver this message again after at least `delay` (the retry ladder), and remove the
    /// current delivery. The new copy is durable before the current one is settled.
    pub async fn retry_after(self, delay: Duration) -> Result<(), QueueError> {
        self.settle.retry_after(self.payload, delay).await
    }

    /// Not a job: move the message to the dead-letter queue with the reason.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        self.settle.dead_letter(self.payload, reason).await
    }
}

/// How a backend settles one delivery. Implemented by each backend; used through [`Delivery`].
#[async_trait]
pub trait Settle: Send {
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    async fn retry_after(
        self: Box<Self>,
        payload: Vec<u8>,
        delay: Duration,
    ) -> Result<(), QueueError>;
    async fn dead_letter(self: Box<Self>, payload: Vec<u8>, reason: &str)
        -> Result<(), QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_reason_names_its_alarm() {
        assert_eq!(Alarm::from_reason("low on memory"), Alarm::Memory);
        assert_eq!(Alarm::from_reason("low on disk"), Alarm::Disk);
        assert_eq!(
            Alarm::from_reason("low on memory & disk"),
            Alarm::MemoryAndDisk
        );
        assert_eq!(
            Alarm::from_reason("maintenance"),
            Alarm::Other("maintenance".into())
        );
        let problem = Unready::Blocked(Alarm::Memory).to_string();
        assert!(
            problem.starts_with("cannot take jobs: broker blocked: memory alarm"),
            "{problem}"
        );
        assert_eq!(
            Unready::Unreachable(Some("connection refused".into())).to_string(),
            "is unreachable (connection refused); the server reconnects by itself"
        );
    }
}
