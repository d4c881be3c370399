//! Sluice: a queue-driven LLM job processor.
//!
//! Modules, in the order a job meets them:
//!
//! - [`config`]: `sluice.toml`, validated with every problem named by its path.
//! - [`job`]: the job, its urgency and status, and the envelope that travels on the queue.
//! - [`queue`]: the queue trait and its two backends (RabbitMQ, embedded SQLite).
//! - [`store`]: the SQLite store (jobs, attempts, results, costs) and its single writer.
//! - [`pricing`]: exact prices and costs (integer pico-USD, never floats).
//! - [`providers`]: adapters that speak each provider's wire format.
//! - [`sim`]: the provider simulator (`sluice sim`), serving the providers' real wire formats.
//! - [`bulk`]: bulk JSONL in and out: a file of requests validated and submitted as a named
//!   bulk in constant memory, its results in OpenAI's batch output format.

pub mod api;
pub mod app;
pub mod bench;
pub mod bulk;
pub mod client;
pub mod config;
pub mod demo;
pub mod job;
pub mod pricing;
pub mod providers;
pub mod queue;
pub mod router;
pub mod sim;
pub mod store;
pub mod submit;
pub mod worker;
