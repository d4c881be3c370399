//! Job records: a job's row, its attempts, its result and its cost.
//!
//! The state machine is enforced here, in SQL, not in the worker: every transition names the
//! states it may start from (`… WHERE status IN (…)`), so a delivery seen twice, a lease that
//! expired under a slow worker, or a cancel racing a finish cannot produce a second result or
//! a second charge. `costs.job_id` is UNIQUE as a last line of defence.
//!
//! One file a concept: [`insert`] (recording jobs, and what the relay reads back),
//! [`attempts`] (starting and recording attempts), [`transitions`] (success, failure, retry,
//! cancel) and [`views`] (reading a job back). Everything is re-exported here, so callers
//! name `store::jobs::X` whichever file holds it.

mod attempts;
mod insert;
mod transitions;
mod views;

#[cfg(test)]
mod tests;

pub use attempts::*;
pub use insert::*;
pub use transitions::*;
pub use views::*;
