//! The first stage: where the job stands in the store, before anything is chosen for it.
//!
//! A job already final (a redelivery after a crash, a cancel) is acked without calling
//! anyone. A job the store has never seen (published straight onto the exchange) is recorded
//! first; a message whose job was refused at submission is not a job to run.

use super::settle::Settlement;
use crate::job::Envelope;
use crate::store::{Adopted, Store, StoreError};

/// What the store says about a delivery's job.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    /// The job may run; it has had this many attempts.
    Runnable { attempts: u32 },
    /// Nothing to run: settle the message so.
    Done(Settlement),
}

/// Looks the job of `envelope` up (one read), recording it when the store has never seen it.
pub(super) async fn lookup(store: &Store, envelope: &Envelope) -> Result<Lookup, StoreError> {
    let id = envelope.id;
    Ok(match store.progress(id).await? {
        Some((status, _)) if status.is_final() => {
            tracing::debug!(job = %id, %status, "already final; not calling again");
            Lookup::Done(Settlement::Ack)
        }
        Some((_, attempts)) => Lookup::Runnable { attempts },
        None => match store.adopt(envelope).await? {
            // Published straight onto the exchange: recorded on first consume.
            Adopted::Recorded => Lookup::Runnable { attempts: 0 },
            Adopted::Existing(other) if other == id => Lookup::Runnable { attempts: 0 },
            Adopted::Existing(other) => {
                tracing::info!(job = %id, existing = %other, "duplicate custom_id; dropping");
                Lookup::Done(Settlement::Ack)
            }
            Adopted::Orphan(orphan) => {
                tracing::warn!(job = %id, %orphan, "dead-lettering");
                Lookup::Done(Settlement::DeadLetter(orphan.to_string()))
            }
        },
    })
}
