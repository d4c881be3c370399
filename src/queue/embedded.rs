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
//! Consumers are woken in-process by a [`Notify`] when something is published, and otherwise
//! poll, which also covers publishers in other processes and retries coming due.

use super::replies::{Inbox, InboxHub};
use super::{Consumer, Delivery, Queue, QueueError, Settle};
use crate::job::{Envelope, Urgency};
use crate::store::{now_ms, InsertOutcome, Store, StoreError, WriteFuture};
use async_trait::async_trait;
use sqlx::Row;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// How often an idle consumer looks for messages published by other processes or coming due.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct EmbeddedQueue {
    store: Store,
    visibility_timeout: Duration,
    published: Arc<Notify>,
    /// Workers and API share the process, so replies go straight to the hub.
    inboxes: Arc<InboxHub>,
}

/// The reply address of the embedded queue: this process.
const IN_PROCESS: &str = "in-process";

impl EmbeddedQueue {
    pub fn new(store: Store, visibility_timeout: Duration) -> Self {
        EmbeddedQueue {
            store,
            visibility_timeout,
            published: Arc::new(Notify::new()),
            inboxes: InboxHub::new(),
        }
    }

    /// Records jobs and enqueues the new ones in one transaction, the queue being a table of
    /// the same store: there is no moment, and so no crash, at which a job is recorded but
    /// not queued, and one commit instead of three (record, publish, mark published) stands
    /// between a request and its worker.
    pub async fn record_and_enqueue(
        &self,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let outcomes = self
            .store
            .insert_jobs_enqueued(envelopes, |conn, messages| {
                Box::pin(async move { enqueue(conn, messages).await })
            })
            .await?;
        self.published.notify_waiters();
        Ok(outcomes)
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

fn storage(e: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(e.to_string())
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn publish(&self, urgency: Urgency, messages: Vec<Vec<u8>>) -> Result<(), QueueError> {
        let messages = messages.into_iter().map(|m| (urgency, m)).collect();
        self.store
            .write(move |conn| Box::pin(async move { enqueue(conn, messages).await }))
            .await
            .map_err(storage)?;
        self.published.notify_waiters();
        Ok(())
    }

    fn in_store(&self) -> Option<&EmbeddedQueue> {
        Some(self)
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
}

struct EmbeddedConsumer {
    queue: EmbeddedQueue,
    urgency: Urgency,
    prefetch: u16,
    buffered: VecDeque<Delivery>,
}

impl EmbeddedConsumer {
    /// Leases up to `prefetch` visible messages in one write.
    async fn take(&mut self) -> Result<Vec<Delivery>, QueueError> {
        let urgency = self.urgency;
        let limit = i64::from(self.prefetch);
        let timeout_ms = self.queue.visibility_timeout.as_millis() as i64;
        let rows = self
            .queue
            .store
            .write(move |conn| {
                Box::pin(async move {
                    let now = now_ms();
                    let lease: i64 = rand::random::<i64>() & i64::MAX;
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
                        .map(|r| (r.get::<i64, _>(0), r.get::<Vec<u8>, _>(1), r.get::<i64, _>(2), r.get::<i64, _>(3)))
                        .collect::<Vec<_>>())
                })
            })
            .await
            .map_err(storage)?;
        Ok(rows
            .into_iter()
            .map(|(id, payload, deliveries, lease)| {
                let settle = EmbeddedSettle {
                    queue: self.queue.clone(),
                    urgency,
                    id,
                    lease,
                };
                Delivery::new(payload, deliveries > 1, Box::new(settle))
            })
            .collect())
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(delivery) = self.buffered.pop_front() {
                return Some(delivery);
            }
            // Register interest before looking, so a publish between the look and the wait
            // is not missed.
            let published = self.queue.published.clone();
            let notified = published.notified();
            match self.take().await {
                Ok(deliveries) if !deliveries.is_empty() => {
                    self.buffered.extend(deliveries);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "embedded queue: cannot take messages; retrying");
                }
            }
            let _ = tokio::time::timeout(POLL_INTERVAL, notified).await;
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
    /// message now: settling is theirs to do.
    async fn while_leased<F>(&self, op: F) -> Result<(), QueueError>
    where
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> WriteFuture<'c, u64> + Send + 'static,
    {
        let changed = self.queue.store.write(op).await.map_err(storage)?;
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
        self.while_leased(move |conn| Box::pin(async move { delete_leased(conn, id, lease).await }))
            .await
    }

    async fn retry_after(
        self: Box<Self>,
        _payload: Vec<u8>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let (id, lease) = (self.id, self.lease);
        let visible_at = now_ms() + delay.as_millis() as i64;
        self.while_leased(move |conn| {
                Box::pin(async move {
                    let r = sqlx::query(
                        "UPDATE queue_messages SET visible_at = ?, lease = NULL WHERE id = ? AND lease = ?",
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
        self.while_leased(move |conn| {
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
        let queue = EmbeddedQueue::new(store.clone(), Duration::from_secs(30));
        let first = envelope("same");
        let outcomes = queue
            .in_store()
            .expect("the embedded queue lives in the store")
            .record_and_enqueue(vec![first.clone(), envelope("other")])
            .await
            .unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, InsertOutcome::Created)));
        let again = queue
            .record_and_enqueue(vec![envelope("same")])
            .await
            .unwrap();
        assert_eq!(again, vec![InsertOutcome::Existing(first.id)]);

        let unpublished: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE published = 0")
            .fetch_one(store.reader())
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
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(left, 0, "no second message for the duplicate");
    }
}
