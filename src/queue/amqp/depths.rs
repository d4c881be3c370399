//! How many messages wait in each of the backend's queues, for the metrics: the broker's own
//! counts, asked with passive declares (which create nothing) on a channel of their own, so
//! a queue missing after a broker reset closes that channel only, never the publishers'.

use super::topology::RUNGS;
use super::{describe_error, Inner};
use crate::job::Urgency;
use crate::queue::{Depths, QueueError, UrgencyDepth};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::time::Duration;
use tokio::time::Instant;

/// How long counting may take before the scrape goes on without it.
const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

impl Inner {
    /// Ready messages of each work queue, parked ones across each urgency's delay rungs,
    /// and the operator's dead queue.
    pub(super) async fn depths(&self) -> Result<Depths, QueueError> {
        let deadline = Instant::now() + COUNT_TIMEOUT;
        let link = self.wait_link(deadline, "count messages").await?;
        let topology = &self.topology;
        let counted = async {
            let channel = link.publish_conn.create_channel().await?;
            let count = |name: String| {
                let channel = channel.clone();
                async move {
                    let options = QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    };
                    channel
                        .queue_declare(name.as_str().into(), options, FieldTable::default())
                        .await
                        .map(|queue| u64::from(queue.message_count()))
                }
            };
            let mut depths = Depths::default();
            for urgency in Urgency::ALL {
                let ready = count(topology.work_queue(urgency)).await?;
                let mut delayed = 0;
                for rung in RUNGS {
                    delayed += count(topology.delay_queue(urgency, rung)).await?;
                }
                depths.urgencies.push(UrgencyDepth {
                    urgency,
                    ready,
                    delayed,
                });
            }
            depths.dead = count(topology.dead_queue()).await?;
            let _ = channel.close(200, "counted".into()).await;
            Ok::<_, lapin::Error>(depths)
        };
        match tokio::time::timeout_at(deadline, counted).await {
            Ok(Ok(depths)) => Ok(depths),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!(
                "cannot count the messages on RabbitMQ at {}: {}",
                self.redacted_url,
                describe_error(&e)
            ))),
            Err(_) => Err(QueueError::Unavailable(format!(
                "RabbitMQ at {} did not count its messages within {}s",
                self.redacted_url,
                COUNT_TIMEOUT.as_secs()
            ))),
        }
    }
}
