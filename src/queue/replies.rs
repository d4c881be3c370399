//! Reply inboxes: how messages about one job travel from the worker that runs it back to the
//! API process that is waiting on it (a streamed answer, chunk by chunk).
//!
//! Jobs travel durably; replies do not need to. A reply is only useful to a client that is
//! still connected to the API process that opened the inbox, so replies are fast, transient
//! and best effort: if the inbox is gone, the reply is dropped, and the job's outcome is still
//! stored like any other. The envelope of a job whose client is waiting carries the inbox's
//! address (`reply_to`); the worker sends each reply there, tagged with the job id.
//!
//! Each process has one [`InboxHub`] that routes arriving replies to the open [`Inbox`] of
//! their job. The backends differ only in how a reply reaches the hub: the embedded queue
//! hands it over in-process (workers and API share the process), RabbitMQ through one
//! exclusive, auto-deleted reply queue per process whose name is the address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;
use uuid::Uuid;

/// The replies for one job, in the order the worker sent them. Closes (unregisters) on drop.
#[derive(Debug)]
pub struct Inbox {
    /// Where a worker sends this job's replies: the envelope's `reply_to`.
    pub address: String,
    job: Uuid,
    // Unbounded because the router task must never wait on one slow client while the
    // replies of every other job queue up behind it; a reply stream is bounded by the
    // answer's length anyway.
    receiver: mpsc::UnboundedReceiver<Vec<u8>>,
    hub: Arc<InboxHub>,
}

impl Inbox {
    /// The next reply, or `None` when the transport under the inbox is gone (the broker
    /// connection dropped: the job still finishes and is stored, but its replies are lost).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.receiver.recv().await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.hub.close(self.job);
    }
}

/// The open inboxes of this process, by job id.
#[derive(Debug, Default)]
pub struct InboxHub {
    open: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Vec<u8>>>>,
}

impl InboxHub {
    pub fn new() -> Arc<Self> {
        Arc::new(InboxHub::default())
    }

    /// Opens the inbox of `job`, reachable at `address`. A second inbox for the same job
    /// replaces the first (whose `recv` then ends).
    pub fn open(self: &Arc<Self>, job: Uuid, address: String) -> Inbox {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock().insert(job, sender);
        Inbox {
            address,
            job,
            receiver,
            hub: self.clone(),
        }
    }

    /// Hands a reply to the inbox of `job`; false when no such inbox is open here.
    pub fn deliver(&self, job: Uuid, reply: Vec<u8>) -> bool {
        match self.lock().get(&job) {
            Some(sender) => sender.send(reply).is_ok(),
            None => false,
        }
    }

    /// Ends every open inbox: their transport is gone (a lost broker connection), so no
    /// more replies will reach them.
    pub fn close_all(&self) {
        self.lock().clear();
    }

    fn close(&self, job: Uuid) {
        self.lock().remove(&job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::UnboundedSender<Vec<u8>>>> {
        // The map holds only senders; a panic elsewhere cannot leave it inconsistent.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_reach_their_own_job_in_order_and_a_closed_inbox_drops_them() {
        let hub = InboxHub::new();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut inbox_a = hub.open(a, "here".into());
        let mut inbox_b = hub.open(b, "here".into());
        assert!(hub.deliver(a, b"1".to_vec()));
        assert!(hub.deliver(b, b"x".to_vec()));
        assert!(hub.deliver(a, b"2".to_vec()));
        assert_eq!(inbox_a.recv().await.unwrap(), b"1");
        assert_eq!(inbox_a.recv().await.unwrap(), b"2");
        assert_eq!(inbox_b.recv().await.unwrap(), b"x");
        drop(inbox_a);
        assert!(
            !hub.deliver(a, b"3".to_vec()),
            "a dropped inbox takes nothing"
        );
        hub.close_all();
        assert_eq!(inbox_b.recv().await, None, "close_all ends open inboxes");
        assert!(!hub.deliver(Uuid::now_v7(), b"?".to_vec()));
    }
}
