//! The embedded queue: a table in the SQLite store, so one binary runs the whole system with
//! no broker.
//!
//! Same semantics as RabbitMQ, by leases instead of channels: taking a message makes it
//! invisible for the visibility timeout and stamps it with a fresh lease; acking deletes it
//! only if the lease is still ours. A worker that dies simply never acks, and the message
//! becomes visible again when its lease runs out (at-least-once). A retry moves
//! `visible_at` into the future on the same row, atomically, so it can never be lost between
//! two steps. Dead letters move to their own table with the reason.
//!
//! Deliveries are counted, as RabbitMQ counts them against `x-delivery-limit`: a message
//! whose leases ran out more often than the delivery limit (its workers crashed, were killed
//! or stopped each time) is not handed out again but dead-lettered, and its job failed with
//! the reason in the same transaction, so a crash loop ends and no job is left `running`. A
//! retry starts the count again, as a retry's new copy does on RabbitMQ.
//!
//! Consumers are woken in-process by their urgency's [`Notify`] when something is published
//! to it, and otherwise poll, which also covers publishers in other processes and retries
//! coming due.
//!
//! A job submitted to this process while one of its consumers waits idle is leased to that
//! consumer in the very transaction that queues it, and handed over in memory (the lane's
//! `handed`): the consumer skips the write that would take it, and the job reaches a worker
//! one commit sooner, which is most of what a realtime request waits for before its provider
//! is called. The lease is the same as a taken message's, so a handed message that no
//! consumer picks up (the process stops) becomes visible again when it runs out.

use super::replies::{Inbox, InboxHub};
use super::{Consumer, Delivery, Depths, Queue, QueueError, Settle, UrgencyDepth};
use crate::job::{Envelope, Urgency};
use crate::store::jobs::insert_alone;
use crate::store::Conn;
use crate::store::{newly_created, now_ms, InsertOutcome, Store, StoreError, Undo, WriteFuture};
use async_trait::async_trait;
use sqlx::Row;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

/// How often an idle consumer looks for messages published by other processes or coming due.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct EmbeddedQueue {
    store: Store,
    visibility_timeout: Duration,
    /// Deliveries a message may leave unsettled before it is dead-lettered.
    delivery_limit: u32,
    /// [`POLL_INTERVAL`], except in tests that must show a consumer does not wait for it.
    poll_interval: Duration,
    /// One per urgency, indexed by it.
    lanes: Arc<[Lane; 3]>,
    /// Workers and API share the process, so replies go straight to the hub.
    inboxes: Arc<InboxHub>,
}

/// What this process's consumers of one urgency share.
#[derive(Default)]
struct Lane {
    /// Woken by a publish to this urgency only: every wake-up costs the consumer a write.
    published: Notify,
    /// Counts commits that queued visible messages of this urgency, so a consumer knows
    /// whether a look (a write) can find anything it has not seen.
    visible_commits: AtomicU64,
    /// Consumers waiting idle, each with room for one delivery now.
    idle: AtomicUsize,
    /// Messages leased to this lane's consumers by the transaction that queued them.
    handed: Mutex<VecDeque<Leased>>,
}

impl Lane {
    fn handed(&self) -> std::sync::MutexGuard<'_, VecDeque<Leased>> {
        // The deque is consistent after every push and pop, so a panic elsewhere leaves it
        // usable.
        self.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A message leased to a consumer: its row, its payload, the lease, and whether an earlier
/// delivery of it ran out.
struct Leased {
    id: i64,
    payload: Vec<u8>,
    lease: i64,
    redelivered: bool,
}

/// The reply address of the embedded queue: this process.
const IN_PROCESS: &str = "in-process";

impl EmbeddedQueue {
    pub fn new(store: Store, visibility_timeout: Duration, delivery_limit: u32) -> Self {
        EmbeddedQueue {
            store,
            visibility_timeout,
            delivery_limit,
            poll_interval: POLL_INTERVAL,
            lanes: Arc::default(),
            inboxes: InboxHub::new(),
        }
    }

    /// Records jobs and enqueues the new ones in one transaction, the queue being a table of
    /// the same store: there is no moment, and so no crash, at which a job is recorded but
    /// not queued, and one commit instead of three (record, publish, mark published) stands
    /// between a request and its worker. Jobs for which a consumer waits idle are leased to
    /// it in the same transaction (see the module's doc).
    pub async fn record_and_enqueue(
        &self,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let (lanes, timeout) = (self.lanes.clone(), self.visibility_timeout);
        let (outcomes, enqueued) = self
            .store
            .write(move |conn| {
                Box::pin(async move {
                    let conn = conn.into_sqlite("the embedded queue")?;
                    // Already published: the message is queued in this very transaction.
                    let mut store_conn = Conn::Sqlite(&mut *conn);
                    let outcomes = match insert_alone(&mut store_conn, &envelopes, true).await? {
                        Ok(outcomes) => outcomes,
                        Err(reused) => return Ok(Err(reused)),
                    };
                    // A job that already existed is not queued again.
                    let messages = newly_created(&envelopes, &outcomes)
                        .map(|envelope| (envelope.spec.urgency, envelope.to_bytes()))
                        .collect();
                    let enqueued = enqueue_handing_over(conn, messages, &lanes, timeout).await?;
                    Ok(Ok((outcomes, enqueued)))
                })
            })
            .await?
            .map_err(StoreError::CustomIdReused)?;
        for (urgency, leased) in enqueued.handed {
            self.lane(urgency).handed().push_back(leased);
            self.lane(urgency).published.notify_waiters();
        }
        for urgency in enqueued.visible {
            self.announce_visible(urgency);
        }
        Ok(outcomes)
    }

    fn lane(&self, urgency: Urgency) -> &Lane {
        &self.lanes[urgency as usize]
    }

    /// Tells this process's consumers of `urgency` that a commit queued visible messages.
    fn announce_visible(&self, urgency: Urgency) {
        let lane = self.lane(urgency);
        lane.visible_commits.fetch_add(1, Ordering::AcqRel);
        lane.published.notify_waiters();
    }
}

/// Appends `messages` to their urgencies' queues, visible at once.
async fn enqueue(
    conn: &mut sqlx::SqliteConnection,
    messages: Vec<(Urgency, Vec<u8>)>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    for (urgency, payload) in messages {
        sqlx::query("INSERT INTO queue_messages (urgency, payload, visible_at) VALUES (?, ?, ?)")
            .bind(urgency.as_str())
            .bind(payload)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What [`enqueue_handing_over`] queued: the messages leased to idle consumers, to hand over
/// once committed, and the urgencies that got visible ones, to announce.
struct Enqueued {
    handed: Vec<(Urgency, Leased)>,
    visible: Vec<Urgency>,
}

/// [`enqueue`], except that as many messages of an urgency as its lane has idle consumers
/// are queued already leased (as [`EmbeddedConsumer::take`] would lease them).
async fn enqueue_handing_over(
    conn: &mut sqlx::SqliteConnection,
    messages: Vec<(Urgency, Vec<u8>)>,
    lanes: &[Lane; 3],
    visibility_timeout: Duration,
) -> Result<Enqueued, sqlx::Error> {
    let mut room = lanes
        .each_ref()
        .map(|lane| lane.idle.load(Ordering::Acquire));
    let now = now_ms();
    let mut visible = Vec::new();
    let mut handed = Vec::new();
    for (urgency, payload) in messages {
        let room = &mut room[urgency as usize];
        if *room == 0 {
            visible.push((urgency, payload));
            continue;
        }
        *room -= 1;
        let lease = new_lease();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO queue_messages (urgency, payload, visible_at, lease, deliveries) \
             VALUES (?, ?, ?, ?, 1) RETURNING id",
        )
        .bind(urgency.as_str())
        .bind(&payload)
        .bind(now + visibility_timeout.as_millis() as i64)
        .bind(lease)
        .fetch_one(&mut *conn)
        .await?;
        let leased = Leased {
            id,
            payload,
            lease,
            redelivered: false,
        };
        handed.push((urgency, leased));
    }
    let visible_urgencies = Urgency::ALL
        .into_iter()
        .filter(|urgency| visible.iter().any(|(u, _)| u == urgency))
        .collect();
    enqueue(conn, visible).await?;
    Ok(Enqueued {
        handed,
        visible: visible_urgencies,
    })
}

/// A fresh lease: which delivery of a message may settle it.
fn new_lease() -> i64 {
    rand::random::<i64>() & i64::MAX
}

fn storage(e: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(e.to_string())
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn publish(&self, urgency: Urgency, messages: Vec<Vec<u8>>) -> Result<(), QueueError> {
        let messages = messages.into_iter().map(|m| (urgency, m)).collect();
        self.store
            .write(move |conn| {
                Box::pin(async move {
                    let conn = conn.into_sqlite("the embedded queue")?;
                    enqueue(conn, messages).await
                })
            })
            .await
            .map_err(storage)?;
        self.announce_visible(urgency);
        Ok(())
    }

    async fn insert_and_publish(
        &self,
        envelopes: &[Envelope],
    ) -> Option<Result<Vec<InsertOutcome>, StoreError>> {
        Some(self.record_and_enqueue(envelopes.to_vec()).await)
    }

    async fn consume(
        &self,
        urgency: Urgency,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(EmbeddedConsumer {
            queue: self.clone(),
            urgency,
            prefetch: prefetch.max(1),
            buffered: VecDeque::new(),
            seen_commits: 0,
            looked_at: None,
        }))
    }

    async fn open_inbox(&self, job: Uuid) -> Result<Inbox, QueueError> {
        Ok(self.inboxes.open(job, IN_PROCESS.to_string()))
    }

    async fn reply(&self, _address: &str, job: Uuid, reply: Vec<u8>) -> Result<(), QueueError> {
        // Best effort by design: no open inbox means nobody is waiting any more.
        self.inboxes.deliver(job, reply);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn depths(&self) -> Result<Depths, QueueError> {
        let pool = self
            .store
            .sqlite_reader()
            .ok_or_else(|| QueueError::Storage("the embedded queue needs a SQLite store".into()))?;
        let now = now_ms();
        let mut depths = Depths::default();
        for urgency in Urgency::ALL {
            // Each an index range of `queue_messages_ready (urgency, visible_at)`; a message
            // after `now` is parked unless a worker holds it (a lease), which is in flight.
            let (ready, delayed): (i64, i64) = sqlx::query_as(
                "SELECT \
                   (SELECT COUNT(*) FROM queue_messages WHERE urgency = ?1 AND visible_at <= ?2), \
                   (SELECT COUNT(*) FROM queue_messages \
                     WHERE urgency = ?1 AND visible_at > ?2 AND lease IS NULL)",
            )
            .bind(urgency.as_str())
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(storage)?;
            depths.urgencies.push(UrgencyDepth {
                urgency,
                ready: ready.max(0) as u64,
                delayed: delayed.max(0) as u64,
            });
        }
        let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(pool)
            .await
            .map_err(storage)?;
        depths.dead = dead.max(0) as u64;
        Ok(depths)
    }
}

struct EmbeddedConsumer {
    queue: EmbeddedQueue,
    urgency: Urgency,
    prefetch: u16,
    buffered: VecDeque<Leased>,
    /// The lane's `visible_commits` at the last look, and when that look found nothing
    /// (`None`: look at once).
    seen_commits: u64,
    looked_at: Option<Instant>,
}

impl EmbeddedConsumer {
    /// Leases up to `prefetch` visible messages in one write, after dead-lettering those
    /// past the delivery limit.
    async fn take(&self) -> Result<Vec<Leased>, QueueError> {
        let urgency = self.urgency;
        let limit = i64::from(self.prefetch);
        let delivery_limit = self.queue.delivery_limit;
        let timeout_ms = self.queue.visibility_timeout.as_millis() as i64;
        self.queue
            .store
            .write(move |conn| {
                Box::pin(async move {
 let conn = conn.into_sqlite("the embedded queue")?;
                    let now = now_ms();
                    dead_letter_undelivered(conn, urgency, now, delivery_limit).await?;
                    let lease = new_lease();
                    let rows = sqlx::query(
                        "UPDATE queue_messages SET visible_at = ?, lease = ?, deliveries = deliveries + 1 \
                         WHERE id IN (SELECT id FROM queue_messages WHERE urgency = ? AND visible_at <= ? \
                                      ORDER BY visible_at, id LIMIT ?) \
                         RETURNING id, payload, deliveries, lease",
                    )
                    .bind(now + timeout_ms)
                    .bind(lease)
                    .bind(urgency.as_str())
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|r| Leased {
                            id: r.get(0),
                            payload: r.get(1),
                            redelivered: r.get::<i64, _>(2) > 1,
                            lease: r.get(3),
                        })
                        .collect())
                })
            })
            .await
            .map_err(storage)
    }

    fn delivery(&self, leased: Leased) -> Delivery {
        let settle = EmbeddedSettle {
            queue: self.queue.clone(),
            urgency: self.urgency,
            id: leased.id,
            lease: leased.lease,
        };
        Delivery::new(leased.payload, leased.redelivered, Box::new(settle))
    }
}

/// Counts a consumer as idle, with room for one delivery, for as long as it lives (the
/// consumer's `next` may be dropped while waiting, on shutdown).
struct IdleMark<'a>(&'a AtomicUsize);

impl<'a> IdleMark<'a> {
    fn new(idle: &'a AtomicUsize) -> Self {
        idle.fetch_add(1, Ordering::AcqRel);
        IdleMark(idle)
    }
}

impl Drop for IdleMark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let queue = self.queue.clone();
        let lane = queue.lane(self.urgency);
        loop {
            let leased = self
                .buffered
                .pop_front()
                .or_else(|| lane.handed().pop_front());
            if let Some(leased) = leased {
                return Some(self.delivery(leased));
            }
            // Register interest before looking, so a publish between the look and the wait
            // is not missed; and count as idle from before the look, so a job submitted
            // meanwhile is handed over rather than left for the next look.
            let notified = lane.published.notified();
            let _idle = IdleMark::new(&lane.idle);
            // Look (a write) unless the last look found nothing and since then this process
            // has queued nothing visible and no poll (for other processes' messages and
            // retries coming due) is due.
            let commits = lane.visible_commits.load(Ordering::Acquire);
            let poll_due = self
                .looked_at
                .is_none_or(|at| at.elapsed() >= queue.poll_interval);
            if commits != self.seen_commits || poll_due {
                self.seen_commits = commits;
                self.looked_at = Some(Instant::now());
                match self.take().await {
                    Ok(taken) if !taken.is_empty() => {
                        // There may be more than `prefetch` took: only a look that found
                        // nothing lets the next one wait.
                        self.looked_at = None;
                        self.buffered.extend(taken);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "embedded queue: cannot take messages; retrying");
                    }
                }
            }
            let until_poll = self.looked_at.map_or(queue.poll_interval, |at| {
                queue.poll_interval.saturating_sub(at.elapsed())
            });
            let _ = tokio::time::timeout(until_poll, notified).await;
        }
    }
}

struct EmbeddedSettle {
    queue: EmbeddedQueue,
    urgency: Urgency,
    id: i64,
    lease: i64,
}

impl EmbeddedSettle {
    /// Runs a settling write that touches the message only while our lease holds (it returns
    /// the rows it changed). Zero rows means the lease ran out and someone else holds the
    /// message now: settling is theirs to do. `undo` says whether the write is one statement
    /// (see [`Store::write_as`]).
    async fn while_leased<F>(&self, undo: Undo, op: F) -> Result<(), QueueError>
    where
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> WriteFuture<'c, u64> + Send + 'static,
    {
        let changed = self
            .queue
            .store
            .write_as(undo, |conn| {
                Box::pin(async move { op(conn.into_sqlite("the embedded queue")?).await })
            })
            .await
            .map_err(storage)?;
        if changed == 1 {
            Ok(())
        } else {
            Err(QueueError::Storage(format!(
                "embedded queue message {} was leased again after the visibility timeout; left to its new holder",
                self.id
            )))
        }
    }
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        let (id, lease) = (self.id, self.lease);
        self.while_leased(Undo::ByStatement, move |conn| {
            Box::pin(async move { delete_leased(conn, id, lease).await })
        })
        .await
    }

    async fn retry_after(
        self: Box<Self>,
        _payload: Vec<u8>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let (id, lease) = (self.id, self.lease);
        let visible_at = now_ms() + delay.as_millis() as i64;
        self.while_leased(Undo::ByStatement, move |conn| {
            Box::pin(async move {
                let r = sqlx::query(
                    // A retry is a new message as far as the delivery limit goes.
                    "UPDATE queue_messages SET visible_at = ?, lease = NULL, deliveries = 0 \
                         WHERE id = ? AND lease = ?",
                )
                .bind(visible_at)
                .bind(id)
                .bind(lease)
                .execute(&mut *conn)
                .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    async fn dead_letter(
        self: Box<Self>,
        payload: Vec<u8>,
        reason: &str,
    ) -> Result<(), QueueError> {
        let (id, lease, urgency, reason) = (self.id, self.lease, self.urgency, reason.to_string());
        self.while_leased(Undo::Savepoint, move |conn| {
                Box::pin(async move {
                    let deleted = delete_leased(conn, id, lease).await?;
                    if deleted == 1 {
                        sqlx::query(
                            "INSERT INTO dead_letters (urgency, payload, reason, created_at) VALUES (?, ?, ?, ?)",
                        )
                        .bind(urgency.as_str())
                        .bind(payload)
                        .bind(reason)
                        .bind(now_ms())
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(deleted)
                })
            })
        .await
    }
}

/// Moves the messages of `urgency` whose lease ran out (a delivery left unsettled) more often
/// than `delivery_limit` to the dead letters, and fails their jobs with the reason (a job
/// already final stays as it is), in the caller's transaction.
async fn dead_letter_undelivered(
    conn: &mut sqlx::SqliteConnection,
    urgency: Urgency,
    now: i64,
    delivery_limit: u32,
) -> Result<(), sqlx::Error> {
    let given_up: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT id, payload, deliveries FROM queue_messages WHERE urgency = ? AND visible_at <= ? \
         AND lease IS NOT NULL AND deliveries > ?",
    )
    .bind(urgency.as_str())
    .bind(now)
    .bind(i64::from(delivery_limit))
    .fetch_all(&mut *conn)
    .await?;
    for (id, payload, deliveries) in given_up {
        let reason = super::past_delivery_limit(delivery_limit, Some(deliveries as u32));
        tracing::warn!(
            message = id,
            deliveries,
            "dead-lettering a message past the delivery limit"
        );
        if let Ok(envelope) = Envelope::from_bytes(&payload) {
            crate::store::jobs::fail_job(
                &mut Conn::Sqlite(&mut *conn),
                envelope.id,
                None,
                crate::store::jobs::INTERRUPTED,
                &reason,
                None,
            )
            .await?;
        }
        sqlx::query("DELETE FROM queue_messages WHERE id = ?")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO dead_letters (urgency, payload, reason, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(urgency.as_str())
        .bind(payload)
        .bind(reason)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Removes a message if our lease on it still holds; returns the rows removed (0 or 1).
async fn delete_leased(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
    lease: i64,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM queue_messages WHERE id = ? AND lease = ?")
        .bind(id)
        .bind(lease)
        .execute(&mut *conn)
        .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ChatRequest, JobSpec};
    use crate::queue::Queue;

    fn envelope(custom_id: &str) -> Envelope {
        let request: ChatRequest = serde_json::from_value(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        let mut spec = JobSpec::new(Urgency::Realtime, request);
        spec.custom_id = Some(custom_id.to_string());
        Envelope::new("t", spec)
    }

    /// One commit records a job as published and queues its message; a job whose
    /// `custom_id` is already held is answered with the first job and queued no second time.
    #[tokio::test]
    async fn a_job_is_recorded_published_and_queued_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let queue = EmbeddedQueue::new(store.clone(), Duration::from_secs(30), 10);
        let first = envelope("same");
        let outcomes = queue
            .insert_and_publish(&[first.clone(), envelope("other")])
            .await
            .expect("the embedded queue lives in the store")
            .unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, InsertOutcome::Created)));
        let again = queue
            .record_and_enqueue(vec![envelope("same")])
            .await
            .unwrap();
        assert_eq!(again, vec![InsertOutcome::Existing(first.id)]);

        let unpublished: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE published = 0")
            .fetch_one(store.sqlite_reader().unwrap())
            .await
            .unwrap();
        assert_eq!(unpublished, 0);
        let mut consumer = queue.consume(Urgency::Realtime, 10).await.unwrap();
        let mut delivered = Vec::new();
        for _ in 0..2 {
            let delivery = consumer.next().await.unwrap();
            delivered.push(
                Envelope::from_bytes(&delivery.payload)
                    .unwrap()
                    .spec
                    .custom_id,
            );
            delivery.ack().await.unwrap();
        }
        delivered.sort();
        assert_eq!(delivered, [Some("other".into()), Some("same".into())]);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_messages")
            .fetch_one(store.sqlite_reader().unwrap())
            .await
            .unwrap();
        assert_eq!(left, 0, "no second message for the duplicate");
    }

    /// A job submitted while a consumer waits idle is leased to it by the transaction that
    /// queues it: the row is leased when the submission returns, and the consumer, woken,
    /// delivers it as a first delivery.
    #[tokio::test]
    async fn a_job_submitted_to_an_idle_consumer_is_handed_over_already_leased() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let queue = EmbeddedQueue::new(store.clone(), Duration::from_secs(30), 10);
        let mut consumer = queue.consume(Urgency::Realtime, 10).await.unwrap();
        let waiting = tokio::spawn(async move { consumer.next().await.unwrap() });
        while queue.lane(Urgency::Realtime).idle.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        let submitted = now_ms();
        queue
            .record_and_enqueue(vec![envelope("handed")])
            .await
            .unwrap();
        // A message a consumer took would have been visible first; this one never was.
        let (visible_at, leased, deliveries): (i64, bool, i64) =
            sqlx::query_as("SELECT visible_at, lease IS NOT NULL, deliveries FROM queue_messages")
                .fetch_one(store.sqlite_reader().unwrap())
                .await
                .unwrap();
        assert!(
            visible_at >= submitted + 29_000,
            "{visible_at} vs {submitted}"
        );
        assert!(leased);
        assert_eq!(deliveries, 1);

        let delivery = waiting.await.unwrap();
        assert!(!delivery.redelivered);
        let custom_id = Envelope::from_bytes(&delivery.payload)
            .unwrap()
            .spec
            .custom_id;
        assert_eq!(custom_id.as_deref(), Some("handed"));
        delivery.ack().await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_messages")
            .fetch_one(store.sqlite_reader().unwrap())
            .await
            .unwrap();
        assert_eq!(left, 0, "acked under the lease it was handed with");
    }

    /// A handed-over message that no consumer picked up (its process stopped) is lost to
    /// nobody: once its lease runs out, any consumer takes it, as a redelivery.
    #[tokio::test]
    async fn a_handed_over_message_left_unconsumed_comes_back_when_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let stopping = EmbeddedQueue::new(store.clone(), Duration::from_millis(300), 10);
        {
            // A consumer counted idle, which never comes back for what it was handed.
            let _idle = IdleMark::new(&stopping.lane(Urgency::Realtime).idle);
            stopping
                .record_and_enqueue(vec![envelope("orphan")])
                .await
                .unwrap();
        }
        assert_eq!(stopping.lane(Urgency::Realtime).handed().len(), 1);
        drop(stopping);

        let other_process = EmbeddedQueue::new(store.clone(), Duration::from_secs(30), 10);
        let mut consumer = other_process.consume(Urgency::Realtime, 10).await.unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("the message comes back after its lease")
            .unwrap();
        assert!(delivery.redelivered);
        let custom_id = Envelope::from_bytes(&delivery.payload)
            .unwrap()
            .spec
            .custom_id;
        assert_eq!(custom_id.as_deref(), Some("orphan"));
    }

    /// A message whose deliveries all end unsettled (its workers die) is delivered up to the
    /// delivery limit's count again, then dead-lettered with its job failed, in one
    /// transaction: a crash loop ends, and the job does not stay `running`.
    #[tokio::test]
    async fn a_message_past_the_delivery_limit_is_dead_lettered_and_its_job_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let queue = EmbeddedQueue::new(store.clone(), Duration::from_millis(200), 1);
        let job = envelope("looping");
        queue.record_and_enqueue(vec![job.clone()]).await.unwrap();
        let mut consumer = queue.consume(Urgency::Realtime, 1).await.unwrap();
        for delivery in 1..=2 {
            let taken = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await
                .expect("delivered again once the lease runs out")
                .unwrap();
            assert_eq!(taken.redelivered, delivery > 1);
            // Dropped unsettled, as by a worker that died.
        }
        let count = |sql: &'static str| {
            let store = store.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(store.sqlite_reader().unwrap())
                    .await
                    .unwrap()
            }
        };
        let started = Instant::now();
        while count("SELECT COUNT(*) FROM dead_letters").await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never dead-lettered"
            );
            let third = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
            assert!(third.is_err(), "delivered past the delivery limit");
        }
        assert_eq!(count("SELECT COUNT(*) FROM queue_messages").await, 0);
        let (status, kind, error): (String, String, String) =
            sqlx::query_as("SELECT status, error_kind, error FROM jobs WHERE id = ?")
                .bind(job.id.to_string())
                .fetch_one(store.sqlite_reader().unwrap())
                .await
                .unwrap();
        assert_eq!((status.as_str(), kind.as_str()), ("failed", "interrupted"));
        assert!(
            error.contains("delivery limit of 1 (2 deliveries)"),
            "{error}"
        );
    }

    /// A backlog deeper than the prefetch is taken look after look, without waiting for a
    /// poll: a full look says nothing about what is left. (Polls are an hour apart here; a
    /// consumer that waited for one would not finish.)
    #[tokio::test]
    async fn a_backlog_deeper_than_the_prefetch_is_taken_without_waiting_for_a_poll() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let mut queue = EmbeddedQueue::new(store.clone(), Duration::from_secs(30), 10);
        queue.poll_interval = Duration::from_secs(3600);
        let backlog = (0..25).map(|i| envelope(&format!("job {i}"))).collect();
        queue.record_and_enqueue(backlog).await.unwrap();

        let mut consumer = queue.consume(Urgency::Realtime, 10).await.unwrap();
        let drained = tokio::time::timeout(Duration::from_secs(20), async {
            for _ in 0..25 {
                consumer.next().await.unwrap().ack().await.unwrap();
            }
        })
        .await;
        assert!(drained.is_ok(), "the consumer waited for a poll");
    }
}
