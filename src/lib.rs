//! Sluice: a queue-driven LLM job processor.
//!
//! Modules, in the order a job meets them:
//!
//! - [`job`]: the job, its urgency and status, and the envelope that travels on the queue.
//! - [`queue`]: the queue trait and its two backends (RabbitMQ, embedded SQLite).
//! - [`providers`]: adapters that speak each provider's wire format.
//! - [`sim`]: the provider simulator (`sluice sim`), serving the providers' real wire formats.

pub mod job;
pub mod providers;
pub mod queue;
pub mod sim;
