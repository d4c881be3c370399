//! Sluice's vocabulary: the types every part of Sluice names and that depend on nothing else
//! of it. A crate of its own so that the layers above (configuration, adapters, store,
//! worker, API) can all use them without depending on one another, and so that nothing here
//! can reach up into them: the compiler keeps this layer a leaf.
//!
//! - [`job`]: the job, its urgency, status and tags, the chat request, and the envelope that
//!   travels on the queue.
//! - [`failure`]: why a job failed (`JobFailure`, a provider call's `ErrorKind`), stored by a
//!   stable name, and the one HTTP status and OpenAI error type and code of each.
//! - [`usage`]: the token counts of one call (`Usage`), as every adapter reads them.
//! - [`pricing`]: exact prices and amounts (integer pico-USD, never floats) and the shipped,
//!   dated price catalogue.
//! - [`tier`]: the tier a call was made on and priced at (real-time, batch, flex).
//! - [`provider_kind`]: the API families (`ProviderKind`) and their documented batch limits.
//! - [`problem`]: one thing wrong with a configuration, at its path (`Problem`).
//! - [`period`]: the UTC day or month a budget's allowance lasts, identified by its start.
//! - [`gcra`]: the cell rate algorithm over a stored state, for buckets a cluster shares.
//! - [`crontab`]: cron expressions (crontab's five fields, seconds-first, `@daily`).
//! - [`table`]: aligned text tables, the one layout of Sluice's listings.

pub mod crontab;
pub mod failure;
pub mod gcra;
pub mod job;
pub mod period;
pub mod pricing;
pub mod problem;
pub mod provider_kind;
pub mod table;
pub mod tier;
pub mod usage;
