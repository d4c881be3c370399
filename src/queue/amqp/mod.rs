//! RabbitMQ backend (lapin): the production queue, and the way to scale out across machines.
//!
//! - [`topology`]: every exchange and queue name under a prefix, and how each is declared.
//! - `connection`: the supervisor task that owns the connections and reconnects.
//! - `consumer`: consumers that re-subscribe after a reconnect, and settling deliveries.
//! - `dead_letters`: why the broker dead-lettered a message, read from its headers.
//! - `replies`: this process's reply queue, for [reply inboxes](crate::queue::replies).
//!
//! [`AmqpQueue::start`] never fails and never blocks on the broker: a broker that is down is a
//! state to wait out (publishing waits up to the publish timeout, consumers wait indefinitely),
//! not an error at start-up. Publishing uses pipelined publisher confirms over a bounded
//! in-flight window, since waiting for each confirm in turn costs a disk sync per message.

mod connection;
mod consumer;
mod dead_letters;
mod depths;
mod replies;
pub mod topology;

use crate::config::redact_url;
pub use topology::{Rung, Topology, RUNGS};

use crate::job::Urgency;
use crate::queue::replies::{Inbox, InboxHub};
use crate::queue::{Alarm, Consumer, Queue, QueueError, Unready};
use async_trait::async_trait;
use connection::{describe_error, Link, LinkState, SupervisorConfig};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// Header carrying why a message was dead-lettered by Sluice (not by the broker).
pub const DEAD_REASON_HEADER: &str = "x-sluice-dead-reason";
/// Header carrying when (Unix seconds, AMQP timestamp) a message was dead-lettered by Sluice.
pub const DEAD_AT_HEADER: &str = "x-sluice-dead-at";
/// Header carrying the urgency queue a dead-lettered message came from.
pub const DEAD_URGENCY_HEADER: &str = "x-sluice-urgency";
/// Header on a retry that no single rung serves closely (see [`topology::choose_rung`]): Unix
/// milliseconds before which the message must not be handed to a worker; a consumer that sees
/// it early parks it again for the rest.
pub const NOT_BEFORE_HEADER: &str = "x-sluice-not-before";

/// How to reach RabbitMQ and what to call things there.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:5672/%2f` (`amqps://` for TLS). The password never appears in
    /// logs or errors.
    pub url: String,
    /// Prefix of every exchange and queue name (default `sluice`).
    pub prefix: String,
    /// Shown in the broker's connection list, suffixed with ` publish` / ` consume`.
    /// Default: `sluice/<prefix>/<pid>`.
    pub connection_name: Option<String>,
    /// How long a publish (or a retry, or a dead-letter) waits for a connection, for the broker
    /// to lift a memory/disk alarm, or for a confirm, before giving up.
    pub publish_timeout: Duration,
    /// Most messages published but not yet confirmed, per `publish` call.
    pub confirm_window: usize,
    /// Failed deliveries (crash, lost connection, requeue) before the broker dead-letters a
    /// message to `P.jobs.dead`.
    pub delivery_limit: u32,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// Longest wait for the TCP connect and AMQP handshake (and for declaring the topology).
    pub connect_timeout: Duration,
}

impl AmqpConfig {
    pub fn new(url: impl Into<String>) -> Self {
        AmqpConfig {
            url: url.into(),
            ..AmqpConfig::default()
        }
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: "amqp://127.0.0.1:5672/%2f".to_string(),
            prefix: "sluice".to_string(),
            connection_name: None,
            publish_timeout: Duration::from_secs(30),
            confirm_window: 1000,
            delivery_limit: 10,
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// The RabbitMQ queue backend. Cheap to clone; the connections stay up while any clone, any
/// consumer or any unsettled delivery is alive, and are closed when the last one goes.
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: AmqpConfig,
    topology: Topology,
    redacted_url: String,
    state: watch::Receiver<LinkState>,
    shutdown: watch::Sender<bool>,
    inboxes: Arc<InboxHub>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

impl AmqpQueue {
    /// Starts the connection supervisor and returns at once, whatever the broker's state.
    /// Must be called from within a Tokio runtime.
    pub fn start(config: AmqpConfig) -> AmqpQueue {
        let topology = Topology::new(config.prefix.clone(), config.delivery_limit);
        let redacted_url = redact_url(&config.url);
        let (state_tx, state) = watch::channel(LinkState::Down { last_error: None });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inboxes = InboxHub::new();
        let supervisor = SupervisorConfig {
            url: config.url.clone(),
            redacted_url: redacted_url.clone(),
            connection_name: config
                .connection_name
                .clone()
                .unwrap_or_else(|| format!("sluice/{}/{}", config.prefix, std::process::id())),
            topology: topology.clone(),
            connect_timeout: config.connect_timeout,
            max_backoff: config.max_backoff,
            inboxes: inboxes.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(connection::supervise(
                    supervisor,
                    Arc::new(state_tx),
                    shutdown_rx,
                ));
            }
            Err(_) => {
                // A programming error, but not worth a panic: every call explains it instead.
                tracing::error!("AmqpQueue::start was called outside a Tokio runtime");
                state_tx.send_replace(LinkState::Down {
                    last_error: Some(
                        "AmqpQueue::start was called outside a Tokio runtime, so nothing \
                         connects"
                            .to_string(),
                    ),
                });
            }
        }
        AmqpQueue {
            inner: Arc::new(Inner {
                config,
                topology,
                redacted_url,
                state,
                shutdown,
                inboxes,
            }),
        }
    }

    /// The names this queue uses on the broker.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Waits until connected with the topology declared, or fails with `Unavailable` naming the
    /// broker and the last connection error.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), QueueError> {
        self.inner
            .wait_link(Instant::now() + timeout, "connect")
            .await
            .map(|_| ())
    }

    /// True while connected (with the topology declared).
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.state.borrow(), LinkState::Up(_))
    }

    /// Stops the supervisor and closes the connections. Consumers then return `None`, and
    /// unsettled deliveries go back to the queue.
    pub fn close(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn publish(&self, urgency: Urgency, messages: Vec<Vec<u8>>) -> Result<(), QueueError> {
        let mut properties = job_properties();
        // The publishing span's context, where OpenTelemetry's messaging conventions put it
        // (the envelope carries it too, for the embedded queue and the delay ladder).
        if let Some(traceparent) = crate::traces::traceparent(&tracing::Span::current()) {
            let mut headers = FieldTable::default();
            headers.insert(
                crate::traces::TRACEPARENT.into(),
                AMQPValue::LongString(traceparent.into()),
            );
            properties = properties.with_headers(headers);
        }
        self.inner
            .publish_confirmed(
                &self.inner.topology.exchange(),
                urgency.as_str(),
                messages.iter().map(|m| {
                    // A message id lets anyone tracing the broker tell a duplicate publish
                    // (after a lost confirm) from a second job with the same body.
                    let id = uuid::Uuid::now_v7().to_string();
                    (m.as_slice(), properties.clone().with_message_id(id.into()))
                }),
                WhenBlocked::Refuse,
            )
            .await
    }

    async fn consume(
        &self,
        urgency: Urgency,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(consumer::AmqpConsumer::new(
            self.inner.clone(),
            consumer::Source::Work(urgency),
            prefetch,
        )))
    }

    async fn consume_dead_letters(&self) -> Result<Option<Box<dyn Consumer>>, QueueError> {
        Ok(Some(Box::new(consumer::AmqpConsumer::new(
            self.inner.clone(),
            consumer::Source::DeadLetters,
            dead_letters::PREFETCH,
        ))))
    }

    async fn open_inbox(&self, job: Uuid) -> Result<Inbox, QueueError> {
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        let link = self.inner.wait_link(deadline, "open a reply inbox").await?;
        Ok(self.inner.inboxes.open(job, link.reply_queue.clone()))
    }

    async fn reply(&self, address: &str, job: Uuid, reply: Vec<u8>) -> Result<(), QueueError> {
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        let link = self.inner.wait_link(deadline, "send a reply").await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(1)
            .with_correlation_id(job.to_string().into());
        let publish = link.reply_channel.basic_publish(
            ShortString::from(""),
            ShortString::from(address),
            BasicPublishOptions::default(),
            &reply,
            properties,
        );
        match tokio::time::timeout_at(deadline, publish).await {
            Ok(Ok(_not_confirmed)) => Ok(()),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!(
                "lost the connection to RabbitMQ at {} while replying: {}",
                self.inner.redacted_url,
                describe_error(&e)
            ))),
            Err(_) => Err(QueueError::Unavailable(format!(
                "RabbitMQ at {} did not take a reply within {}",
                self.inner.redacted_url,
                humantime::format_duration(self.inner.config.publish_timeout)
            ))),
        }
    }

    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn unready(&self) -> Option<Unready> {
        match &*self.inner.state.borrow() {
            LinkState::Up(link) => link
                .blocked
                .borrow()
                .as_deref()
                .map(|reason| Unready::Blocked(Alarm::from_reason(reason))),
            LinkState::Down { last_error } => Some(Unready::Unreachable(last_error.clone())),
            LinkState::Closed => Some(Unready::Unreachable(Some(
                "the queue has been closed".to_string(),
            ))),
        }
    }

    async fn probe(&self) -> Result<(), Unready> {
        self.inner.probe().await
    }

    async fn depths(&self) -> Result<crate::queue::Depths, QueueError> {
        self.inner.depths().await
    }
}

/// How long [`Queue::probe`] waits for the broker to confirm its probe message.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a publish does while the broker blocks publishing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhenBlocked {
    /// New jobs: fail at once, so that the producer hears a 503 now rather than after the
    /// publish timeout (the submitter refuses whatever it recorded).
    Refuse,
    /// A worker settling a delivery (a retry, a dead letter): wait up to the publish timeout,
    /// since giving up would send the message round again and count a delivery against it.
    Wait,
}

/// Properties of every job message: persistent (delivery mode 2) so it survives a broker
/// restart, JSON since the payload is the job envelope.
fn job_properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_app_id("sluice".into())
        .with_timestamp(unix_now().as_secs())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

impl Inner {
    /// The live link, waiting for one until `deadline`.
    async fn wait_link(&self, deadline: Instant, doing: &str) -> Result<Arc<Link>, QueueError> {
        let mut state = self.state.clone();
        match tokio::time::timeout_at(deadline, wait_up(&mut state, None)).await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(QueueError::Unavailable(format!(
                "cannot {doing}: the RabbitMQ queue ({}) has been closed",
                self.redacted_url
            ))),
            Err(_) => {
                let why = match &*state.borrow() {
                    LinkState::Down {
                        last_error: Some(e),
                    } => format!(": {e}"),
                    _ => String::new(),
                };
                Err(QueueError::Unavailable(format!(
                    "cannot {doing}: RabbitMQ at {} is not reachable{why}",
                    self.redacted_url
                )))
            }
        }
    }

    /// Publishes every message with confirms, pipelined: up to `confirm_window` in flight, then
    /// waits for the oldest. Returns once all are confirmed; on any failure, the caller must
    /// assume none were (some may have been: duplicates are expected downstream).
    async fn publish_confirmed<'a>(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: impl ExactSizeIterator<Item = (&'a [u8], BasicProperties)>,
        when_blocked: WhenBlocked,
    ) -> Result<(), QueueError> {
        let total = messages.len();
        if total == 0 {
            return Ok(());
        }
        let timeout = self.config.publish_timeout;
        let deadline = Instant::now() + timeout;
        let mut link = self.wait_link(deadline, "publish").await?;
        if !link.can_publish() {
            // A connection that died a moment ago: nothing is sent yet, so waiting for its
            // replacement costs no duplicate.
            let mut state = self.state.clone();
            link =
                match tokio::time::timeout_at(deadline, wait_up(&mut state, Some(link.generation)))
                    .await
                {
                    Ok(Some(link)) => link,
                    _ => self.wait_link(Instant::now(), "publish").await?,
                };
        }
        let window = self.config.confirm_window.max(1);
        let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window.min(total));
        let result = async {
            let mut blocked = link.blocked.clone();
            for (sent, (payload, properties)) in messages.enumerate() {
                if let Some(reason) = blocked.borrow().clone() {
                    if when_blocked == WhenBlocked::Refuse {
                        return Err(self.blocked_error(&reason));
                    }
                }
                if blocked.borrow().is_some() {
                    self.wait_unblocked(&mut blocked, timeout, total - sent)
                        .await?;
                }
                if pending.len() >= window {
                    if let Some(oldest) = pending.pop_front() {
                        self.await_confirm_unless_blocked(
                            oldest,
                            exchange,
                            routing_key,
                            &mut blocked,
                            when_blocked,
                        )
                        .await?;
                    }
                }
                let publish = link.publish_channel.basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    // Mandatory: a message no queue takes comes back to us instead of vanishing.
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    payload,
                    properties,
                );
                match tokio::time::timeout(timeout, publish).await {
                    Ok(Ok(confirm)) => pending.push_back(confirm),
                    Ok(Err(e)) => {
                        return Err(QueueError::Unavailable(format!(
                            "lost the connection to RabbitMQ at {} while publishing ({}); \
                             {} of {total} messages are not confirmed",
                            self.redacted_url,
                            describe_error(&e),
                            total - sent + pending.len(),
                        )))
                    }
                    Err(_) => {
                        return Err(QueueError::Unavailable(format!(
                            "RabbitMQ at {} did not take a message within {}",
                            self.redacted_url,
                            humantime::format_duration(timeout)
                        )))
                    }
                }
            }
            while let Some(confirm) = pending.pop_front() {
                self.await_confirm_unless_blocked(
                    confirm,
                    exchange,
                    routing_key,
                    &mut blocked,
                    when_blocked,
                )
                .await?;
            }
            Ok(())
        }
        .await;
        if !pending.is_empty() {
            // Settle the leftovers in the background rather than dropping them: lapin keeps
            // dropped confirms around until someone waits for them.
            tokio::spawn(async move {
                for confirm in pending {
                    let _ = tokio::time::timeout(timeout, confirm).await;
                }
            });
        }
        result
    }

    /// [`Inner::await_confirm`], giving up as soon as the broker blocks publishing when
    /// `when_blocked` says to refuse. A publish the broker blocks is the one that tells it: it
    /// sends `connection.blocked` once a blocked connection publishes.
    async fn await_confirm_unless_blocked(
        &self,
        confirm: PublisherConfirm,
        exchange: &str,
        routing_key: &str,
        blocked: &mut watch::Receiver<Option<String>>,
        when_blocked: WhenBlocked,
    ) -> Result<(), QueueError> {
        if when_blocked == WhenBlocked::Wait {
            return self.await_confirm(confirm, exchange, routing_key).await;
        }
        let confirmed = self.await_confirm(confirm, exchange, routing_key);
        tokio::pin!(confirmed);
        tokio::select! {
            result = &mut confirmed => result,
            Ok(reason) = async { blocked.wait_for(Option::is_some).await.map(|r| r.clone()) } => {
                Err(self.blocked_error(&reason.unwrap_or_default()))
            }
        }
    }

    fn blocked_error(&self, reason: &str) -> QueueError {
        QueueError::Blocked(Alarm::from_reason(reason))
    }

    /// Asks the broker whether it takes a message now: a transient, empty message to a queue
    /// name nothing declares (the default exchange drops it, and confirms it), which must be
    /// confirmed within [`PROBE_TIMEOUT`]. A connection the broker blocks learns it from this
    /// very publish (`connection.blocked`), which the wait then reports.
    async fn probe(&self) -> Result<(), Unready> {
        let link = match &*self.state.borrow() {
            LinkState::Up(link) => link.clone(),
            LinkState::Down { last_error } => return Err(Unready::Unreachable(last_error.clone())),
            LinkState::Closed => {
                return Err(Unready::Unreachable(Some(
                    "the queue has been closed".to_string(),
                )))
            }
        };
        let blocked = link.blocked.clone();
        if let Some(reason) = blocked.borrow().as_deref() {
            return Err(Unready::Blocked(Alarm::from_reason(reason)));
        }
        let probe_queue = format!("{}.readiness-probe", self.topology.prefix());
        let confirmed = async {
            let confirm = link
                .publish_channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(probe_queue.as_str()),
                    BasicPublishOptions::default(),
                    &[],
                    BasicProperties::default().with_delivery_mode(1),
                )
                .await
                .map_err(|e| describe_error(&e))?;
            match confirm.await.map_err(|e| describe_error(&e))? {
                Confirmation::Ack(_) => Ok(()),
                Confirmation::Nack(_) => Err("a negative confirm".to_string()),
                Confirmation::NotRequested => {
                    Err("the publishing channel is not in confirm mode".to_string())
                }
            }
        };
        let mut news = blocked.clone();
        let blocked_news = async move { news.wait_for(Option::is_some).await.map(|r| r.clone()) };
        tokio::select! {
            result = tokio::time::timeout(PROBE_TIMEOUT, confirmed) => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(Unready::Unconfirmed(why)),
                Err(_) => match blocked.borrow().as_deref() {
                    Some(reason) => Err(Unready::Blocked(Alarm::from_reason(reason))),
                    None => Err(Unready::Unconfirmed(format!(
                        "no confirm within {}",
                        humantime::format_duration(PROBE_TIMEOUT)
                    ))),
                },
            },
            Ok(reason) = blocked_news => {
                Err(Unready::Blocked(Alarm::from_reason(reason.as_deref().unwrap_or_default())))
            }
        }
    }

    async fn await_confirm(
        &self,
        confirm: PublisherConfirm,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), QueueError> {
        let timeout = self.config.publish_timeout;
        match tokio::time::timeout(timeout, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(QueueError::NotConfirmed(format!(
                "no queue takes messages sent to exchange \"{exchange}\" with routing key \
                 \"{routing_key}\" (the broker returned it: {}); is the topology declared?",
                returned.reply_text
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(QueueError::NotConfirmed(format!(
                "RabbitMQ at {} refused a message (negative confirm)",
                self.redacted_url
            ))),
            Ok(Ok(Confirmation::NotRequested)) => Err(QueueError::NotConfirmed(
                "the publishing channel is not in confirm mode".to_string(),
            )),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!(
                "lost the connection to RabbitMQ at {} before it confirmed a message ({})",
                self.redacted_url,
                describe_error(&e)
            ))),
            Err(_) => Err(QueueError::NotConfirmed(format!(
                "RabbitMQ at {} did not confirm a message within {}",
                self.redacted_url,
                humantime::format_duration(timeout)
            ))),
        }
    }

    async fn wait_unblocked(
        &self,
        blocked: &mut watch::Receiver<Option<String>>,
        timeout: Duration,
        unsent: usize,
    ) -> Result<(), QueueError> {
        let reason = blocked.borrow().clone().unwrap_or_default();
        tracing::info!(
            "RabbitMQ at {} blocks publishing ({reason}); waiting up to {}",
            self.redacted_url,
            humantime::format_duration(timeout)
        );
        match tokio::time::timeout(timeout, blocked.wait_for(|b| b.is_none())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(QueueError::Unavailable(format!(
                "lost the connection to RabbitMQ at {} while it blocked publishing; \
                 {unsent} messages not sent",
                self.redacted_url
            ))),
            Err(_) => Err(QueueError::Unavailable(format!(
                "RabbitMQ at {} has blocked publishing for more than {} ({reason}: a memory or \
                 disk alarm); {unsent} messages not sent",
                self.redacted_url,
                humantime::format_duration(timeout)
            ))),
        }
    }

    /// Publishes a copy of `payload` to the delay queue that returns it to `urgency`'s work
    /// queue after at least `delay`.
    async fn publish_delayed(
        &self,
        urgency: Urgency,
        payload: &[u8],
        delay: Duration,
    ) -> Result<(), QueueError> {
        let rung = topology::choose_rung(delay);
        let mut properties = job_properties();
        if rung.ttl < delay {
            let not_before = unix_now().saturating_add(delay);
            let mut headers = FieldTable::default();
            headers.insert(
                NOT_BEFORE_HEADER.into(),
                AMQPValue::LongLongInt(i64::try_from(not_before.as_millis()).unwrap_or(i64::MAX)),
            );
            properties = properties.with_headers(headers);
        }
        let queue = self.topology.delay_queue(urgency, rung);
        // The default exchange routes by queue name, so delay queues need no bindings.
        self.publish_confirmed(
            "",
            &queue,
            std::iter::once((payload, properties)),
            WhenBlocked::Wait,
        )
        .await
    }

    async fn publish_dead(
        &self,
        urgency: Urgency,
        payload: &[u8],
        reason: &str,
    ) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert(
            DEAD_REASON_HEADER.into(),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            DEAD_AT_HEADER.into(),
            AMQPValue::Timestamp(unix_now().as_secs()),
        );
        headers.insert(
            DEAD_URGENCY_HEADER.into(),
            AMQPValue::LongString(urgency.as_str().into()),
        );
        let properties = job_properties().with_headers(headers);
        self.publish_confirmed(
            &self.topology.dead_exchange(),
            urgency.as_str(),
            std::iter::once((payload, properties)),
            WhenBlocked::Wait,
        )
        .await
    }

    /// The current link's generation, if connected.
    fn current_generation(&self) -> Option<u64> {
        match &*self.state.borrow() {
            LinkState::Up(link) => Some(link.generation),
            _ => None,
        }
    }
}

/// Waits for a live link (other than generation `not`, when given); `None` once closed for good.
pub(crate) async fn wait_up(
    state: &mut watch::Receiver<LinkState>,
    not: Option<u64>,
) -> Option<Arc<Link>> {
    loop {
        match &*state.borrow_and_update() {
            LinkState::Up(link) if Some(link.generation) != not => return Some(link.clone()),
            LinkState::Closed => return None,
            _ => {}
        }
        if state.changed().await.is_err() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Inner` that is not connected; keep the sender alive, or it reads as closed.
    fn inner() -> (Inner, watch::Sender<LinkState>) {
        let (state_tx, state) = watch::channel(LinkState::Down {
            last_error: Some("connection refused".to_string()),
        });
        let inner = Inner {
            config: AmqpConfig::default(),
            topology: Topology::new("t", 10),
            redacted_url: redact_url("amqp://u:secret@h:5672/%2f"),
            state,
            shutdown: watch::channel(false).0,
            inboxes: InboxHub::new(),
        };
        (inner, state_tx)
    }

    #[tokio::test]
    async fn a_blocked_broker_holds_publishing_then_gives_up_clearly() {
        let (inner, _state) = inner();
        let (tx, mut blocked) = watch::channel(Some("memory alarm".to_string()));
        let err = inner
            .wait_unblocked(&mut blocked, Duration::from_millis(100), 7)
            .await
            .expect_err("still blocked");
        let QueueError::Unavailable(msg) = err else {
            panic!("{err:?}");
        };
        assert!(msg.contains("blocked publishing"), "{msg}");
        assert!(msg.contains("memory alarm"), "{msg}");
        assert!(msg.contains("7 messages not sent"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");

        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send_replace(None);
            // Keep the sender alive: a dropped sender means a lost connection.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        inner
            .wait_unblocked(&mut blocked, Duration::from_secs(5), 7)
            .await
            .expect("unblocked");
    }

    #[tokio::test]
    async fn waiting_for_a_down_broker_names_it_and_the_cause() {
        let (inner, _state) = inner();
        let started = Instant::now();
        let err = inner
            .wait_link(Instant::now() + Duration::from_millis(100), "publish")
            .await
            .err()
            .expect("down");
        assert!(started.elapsed() >= Duration::from_millis(100));
        let msg = err.to_string();
        assert!(
            msg.contains("amqp://u:***@h:5672/%2f is not reachable: connection refused"),
            "{msg}"
        );
    }
}
