//! The RabbitMQ side of [reply inboxes](crate::queue::replies): one exclusive, auto-deleted,
//! server-named queue per process and connection, whose name is the address workers reply to.
//!
//! Replies are published to the default exchange with the queue's name as routing key and the
//! job id as `correlation_id`, transient and without confirms: they are worth nothing once the
//! waiting client is gone, and a confirm per chunk would add a broker round trip to every
//! token of a stream. One queue per process (not per job) keeps a stream's start free of a
//! queue declaration; the job id routes each reply to its inbox.

use crate::queue::replies::InboxHub;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::sync::Arc;
use uuid::Uuid;

/// Declares this connection's reply queue and starts routing what arrives on it to `inboxes`;
/// returns the queue's name. Routing stops when the connection dies, and then ends every
/// open inbox, since no reply addressed to the dead queue will ever arrive.
pub(crate) async fn listen(
    consume_conn: &Connection,
    inboxes: Arc<InboxHub>,
) -> Result<String, lapin::Error> {
    let channel: Channel = consume_conn.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                durable: false,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let name = queue.name().to_string();
    let mut deliveries = channel
        .basic_consume(
            queue.name().clone(),
            "sluice-replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            let job = delivery
                .properties
                .correlation_id()
                .as_ref()
                .and_then(|id| Uuid::parse_str(id.as_str()).ok());
            match job {
                Some(job) => {
                    inboxes.deliver(job, delivery.data);
                }
                None => tracing::warn!("dropped a reply without a job id as correlation_id"),
            }
        }
        inboxes.close_all();
        // Keeps the channel (and so the consumer) alive exactly as long as this task.
        drop(channel);
    });
    Ok(name)
}
