//! Consuming one work queue (or the dead letters to settle), and settling its deliveries.
//!
//! A consumer is a subscription that outlives connections: when the connection under it dies,
//! the broker requeues everything that was delivered on it, and [`AmqpConsumer::next`]
//! subscribes again on the next connection. Deliveries from the dead connection can no longer
//! be settled (delivery tags belong to their channel); settling one fails with `Unavailable`
//! and touches nothing, so it can never ack another message that happens to reuse the tag.
//!
//! Each subscription has its own channel (prefetch is per consumer, `global = false`, the only
//! kind RabbitMQ 4.3 and quorum queues support). The channel stays open until the subscription
//! *and* every delivery from it are gone, so a worker can finish and ack what it holds after
//! dropping its consumer; a delivery dropped unsettled is requeued at once.

use super::connection::describe_error;
use super::{wait_up, Inner, NOT_BEFORE_HEADER};
use crate::job::Urgency;
use crate::queue::{Consumer, Delivery, QueueError, Settle};
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, Channel};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// What a consumer reads: the work queue of one urgency, or the dead letters Sluice settles
/// in the store (`P.jobs.dead.settle`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    Work(Urgency),
    DeadLetters,
}

/// Consumes one queue (see [`Source`]).
pub(crate) struct AmqpConsumer {
    inner: Arc<Inner>,
    source: Source,
    prefetch: u16,
    subscription: Option<Subscription>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

struct Subscription {
    generation: u64,
    stream: lapin::Consumer,
    channel: Arc<ChannelGuard>,
}

/// Closes its channel once the subscription and all its deliveries are dropped, which also
/// hands any delivery nobody settled back to the broker.
struct ChannelGuard {
    channel: Channel,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        let channel = self.channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let close = channel.close(200, "sluice: consumer done".into());
                let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
            });
        }
    }
}

impl AmqpConsumer {
    pub(crate) fn new(inner: Arc<Inner>, source: Source, prefetch: u16) -> Self {
        let shutdown = inner.shutdown.subscribe();
        AmqpConsumer {
            inner,
            source,
            // 0 means "unlimited" in AMQP, which is never what a worker pool wants.
            prefetch: prefetch.max(1),
            subscription: None,
            shutdown,
        }
    }

    async fn subscribe(&self, link: &super::Link) -> Result<Subscription, lapin::Error> {
        let channel = link.consume_conn.create_channel().await?;
        let guard = Arc::new(ChannelGuard {
            channel: channel.clone(),
        });
        channel
            .basic_qos(self.prefetch, BasicQosOptions { global: false })
            .await?;
        let tag = format!("sluice-{}-{}", self.queue(), uuid::Uuid::new_v4());
        let stream = channel
            .basic_consume(
                self.queue().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Subscription {
            generation: link.generation,
            stream,
            channel: guard,
        })
    }

    fn queue(&self) -> String {
        match self.source {
            Source::Work(urgency) => self.inner.topology.work_queue(urgency),
            Source::DeadLetters => self.inner.topology.dead_settle_queue(),
        }
    }

    /// Parks a delivery that came back before its not-before time again; true if it did.
    /// (A dead letter is never early: it is not going back to work.)
    async fn park_if_early(&self, delivery: &lapin::message::Delivery) -> bool {
        let Source::Work(urgency) = self.source else {
            return false;
        };
        let not_before = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(NOT_BEFORE_HEADER))
            .and_then(|v| match v {
                AMQPValue::LongLongInt(ms) => u64::try_from(*ms).ok(),
                AMQPValue::LongInt(ms) => u64::try_from(*ms).ok(),
                AMQPValue::Timestamp(ms) => Some(*ms),
                _ => None,
            });
        let Some(not_before) = not_before.map(Duration::from_millis) else {
            return false;
        };
        let now = super::unix_now();
        if now >= not_before {
            return false;
        }
        let remaining = not_before - now;
        match self
            .inner
            .publish_delayed(urgency, &delivery.data, remaining)
            .await
        {
            Ok(()) => {
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    debug!("could not ack a re-parked message (it will come back): {e}");
                }
            }
            Err(e) => {
                warn!("could not re-park a message that came back early ({e}); requeueing it");
                let _ = delivery.acker.nack(requeue()).await;
                // Don't spin on a message we cannot park.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        true
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        multiple: false,
        requeue: true,
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let mut state = self.inner.state.clone();
        let queue = self.queue();
        loop {
            if *self.shutdown.borrow() {
                self.subscription = None;
                return None;
            }
            let Some(subscription) = self.subscription.as_mut() else {
                let link = tokio::select! {
                    link = wait_up(&mut state, None) => link?,
                    _ = self.shutdown.changed() => continue,
                };
                // Bounded: a broker that accepts frames but never answers (overloaded, or
                // still booting) must not wedge the consumer on a link that may be replaced.
                let subscribed =
                    tokio::time::timeout(self.inner.config.connect_timeout, self.subscribe(&link))
                        .await
                        .unwrap_or_else(|_| {
                            Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(
                                std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "the broker did not answer in time",
                                ),
                            ))))
                        });
                match subscribed {
                    Ok(subscription) => {
                        debug!(queue, generation = link.generation, "subscribed");
                        self.subscription = Some(subscription);
                    }
                    Err(e) => {
                        warn!(
                            "cannot consume {queue}: {}; trying again",
                            describe_error(&e)
                        );
                        // Usually the connection is dying and the supervisor is about to
                        // replace it; give it a moment rather than hammering the old one.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            wait_up(&mut state, Some(link.generation)),
                        )
                        .await;
                    }
                }
                continue;
            };
            let item = tokio::select! {
                item = subscription.stream.next() => item,
                _ = self.shutdown.changed() => continue,
            };
            let generation = subscription.generation;
            let channel = subscription.channel.clone();
            match item {
                Some(Ok(delivery)) => {
                    if !delivery.acker.usable()
                        || self.inner.current_generation() != Some(generation)
                    {
                        // Buffered before its connection died: the broker has requeued it
                        // already, and handing it out would only buy a duplicate run.
                        debug!(queue, "skipping a delivery from a closed channel");
                        continue;
                    }
                    if self.park_if_early(&delivery).await {
                        continue;
                    }
                    let dead_reason = match self.source {
                        Source::Work(_) => None,
                        Source::DeadLetters => Some(super::dead_letters::reason(
                            &delivery.properties,
                            self.inner.config.delivery_limit,
                        )),
                    };
                    let settle = AmqpSettle {
                        inner: self.inner.clone(),
                        source: self.source,
                        generation,
                        acker: Some(delivery.acker),
                        _channel: channel,
                    };
                    let settle = Box::new(settle);
                    let traceparent = traceparent(&delivery.properties);
                    return Some(match dead_reason {
                        None => Delivery::new(delivery.data, delivery.redelivered, settle)
                            .with_traceparent(traceparent),
                        Some(reason) => Delivery::dead_letter_of(delivery.data, reason, settle),
                    });
                }
                Some(Err(e)) => {
                    warn!(
                        "consumer of {queue} lost its channel ({}); subscribing again",
                        describe_error(&e)
                    );
                    self.subscription = None;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        wait_up(&mut state, Some(generation)),
                    )
                    .await;
                }
                None => {
                    // The channel ended with its connection, or the broker cancelled us (queue
                    // deleted, or a consumer timeout on 4.3).
                    if channel.channel.status().connected() {
                        warn!("the broker cancelled the consumer of {queue}; subscribing again");
                    } else {
                        warn!("consumer of {queue} lost its channel; subscribing again");
                    }
                    self.subscription = None;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        wait_up(&mut state, Some(generation)),
                    )
                    .await;
                }
            }
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // Stop new deliveries now; the channel itself closes once the deliveries already handed
        // out are settled or dropped.
        if let Some(subscription) = self.subscription.take() {
            let channel = subscription.channel.clone();
            let tag = subscription.stream.tag();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let cancel = channel
                        .channel
                        .basic_cancel(tag, BasicCancelOptions::default());
                    let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
                });
            }
        }
    }
}

/// Settles one delivery on the channel it came from.
struct AmqpSettle {
    inner: Arc<Inner>,
    source: Source,
    generation: u64,
    /// `None` once settled, so `Drop` knows whether to requeue.
    acker: Option<Acker>,
    _channel: Arc<ChannelGuard>,
}

impl AmqpSettle {
    /// The urgency of a work queue's delivery, whose copy goes to the delay or dead queues; a
    /// dead letter is only ever acked.
    fn urgency(&self) -> Result<Urgency, QueueError> {
        match self.source {
            Source::Work(urgency) => Ok(urgency),
            Source::DeadLetters => Err(QueueError::Unavailable(
                "a dead letter is only acked; it goes back to its queue".to_string(),
            )),
        }
    }

    /// The acker, if it can still settle this delivery: same connection, channel still open.
    fn live_acker(&mut self) -> Result<Acker, QueueError> {
        let acker = self.acker.take();
        match acker {
            Some(acker)
                if acker.usable() && self.inner.current_generation() == Some(self.generation) =>
            {
                Ok(acker)
            }
            _ => Err(QueueError::Unavailable(
                "the connection this message was delivered on has closed; the broker will \
                 deliver it again"
                    .to_string(),
            )),
        }
    }

    async fn ack_with(&mut self, acker: Acker) -> Result<(), QueueError> {
        let timeout = self.inner.config.publish_timeout;
        match tokio::time::timeout(timeout, acker.ack(BasicAckOptions::default())).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(QueueError::Unavailable(
                "the channel this message was delivered on has closed; the broker will deliver \
                 it again"
                    .to_string(),
            )),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!(
                "could not ack ({}); the broker will deliver it again",
                describe_error(&e)
            ))),
            Err(_) => Err(QueueError::Unavailable(format!(
                "the ack was not sent within {}; the broker will deliver it again",
                humantime::format_duration(timeout)
            ))),
        }
    }

    /// After the copy could not be published: hand the original back now rather than leave it
    /// unacked (and holding a prefetch slot) until the channel closes.
    async fn requeue(acker: &Acker) {
        let _ = tokio::time::timeout(Duration::from_secs(5), acker.nack(requeue())).await;
    }

    /// Settles a delivery whose copy was published elsewhere (retry ladder, dead letters):
    /// acked once the copy is confirmed, requeued when it is not, so the message is never
    /// lost between the two.
    async fn ack_after_copy(
        &mut self,
        acker: Acker,
        copied: Result<(), QueueError>,
    ) -> Result<(), QueueError> {
        if let Err(e) = copied {
            Self::requeue(&acker).await;
            return Err(e);
        }
        self.ack_with(acker).await
    }
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        let acker = self.live_acker()?;
        self.ack_with(acker).await
    }

    async fn retry_after(
        mut self: Box<Self>,
        payload: Vec<u8>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        // Check first: publishing a copy of a message that is already back in its queue would
        // only make a duplicate.
        let urgency = self.urgency()?;
        let acker = self.live_acker()?;
        let copied = self.inner.publish_delayed(urgency, &payload, delay).await;
        self.ack_after_copy(acker, copied).await
    }

    async fn dead_letter(
        mut self: Box<Self>,
        payload: Vec<u8>,
        reason: &str,
    ) -> Result<(), QueueError> {
        let urgency = self.urgency()?;
        let acker = self.live_acker()?;
        let copied = self.inner.publish_dead(urgency, &payload, reason).await;
        self.ack_after_copy(acker, copied).await
    }
}

impl Drop for AmqpSettle {
    fn drop(&mut self) {
        // Dropped unsettled (a worker bug or a panic): give the message back at once instead of
        // holding it until the channel closes.
        if let Some(acker) = self.acker.take() {
            if acker.usable() {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { Self::requeue(&acker).await });
                }
            }
        }
    }
}

/// The W3C trace context a publisher put in the message's headers, if any.
fn traceparent(properties: &lapin::BasicProperties) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    super::dead_letters::text(headers, crate::traces::TRACEPARENT)
}
