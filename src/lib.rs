//! Sluice: a queue-driven LLM job processor.
//!
//! The vocabulary every layer names (`job`, `failure`, `usage`, `pricing`, `tier`,
//! `provider_kind`, `problem`, `period`, `crontab`, `table`) is the `sluice-core` crate,
//! re-exported here at the same paths; it depends on nothing of Sluice. The provider
//! adapters (`providers`) are the `sluice-providers` crate, on `sluice-core` alone.
//!
//! Modules, in the order a job meets them:
//!
//! - [`config`]: `sluice.toml`, validated with every problem named by its path.
//! - [`problem`]: one thing wrong with a configuration, at its path (`Problem`).
//! - [`job`]: the job, its urgency and status, and the envelope that travels on the queue.
//! - [`api`]: the HTTP API (axum): `/v1/jobs`, OpenAI's `/v1/chat/completions`, `/v1/bulk`,
//!   OpenAI's Files and Batches API (a batch is a view of a bulk), health.
//! - [`submit`]: accepting jobs: validate, record, publish with confirms; the outbox relay.
//! - [`queue`]: the queue trait and its two backends (RabbitMQ, embedded SQLite), and the
//!   transient reply inboxes a streamed answer travels through.
//! - [`failure`]: why a job failed (`JobFailure`), stored by a stable name, and the one
//!   HTTP status and OpenAI error type and code each failure is answered with.
//! - [`store`]: the SQLite store (jobs, attempts, results, costs) and its single writer.
//! - [`worker`]: pools per urgency that take a delivery to one settled, stored outcome,
//!   through a pipeline of stages that each return a decision.
//! - [`finish`]: the one module that writes a job's terminal transitions (for the worker
//!   and the batch tracker), and what an answer costs on the tier it was priced at.
//! - [`router`]: a model name's route (strategy, fallback chain, timeouts, deadlines), the
//!   live health of each deployment (error rate, latency, circuit breaker), and which
//!   deployment and key an attempt uses.
//! - [`limits`]: per-key token buckets (requests/min, tokens/min, requests/day), the token
//!   estimate, key balancing and 429 cooldowns.
//! - [`overrides`]: per-deployment request shaping (system-prompt template, parameters).
//! - [`batch`]: the batch tier: the tier choice, provider batches collected per deployment,
//!   and the tracker that submits, polls and settles them from the store.
//! - [`providers`]: adapters that speak each provider's wire format (OpenAI, Anthropic,
//!   Gemini), plain and streaming, translating from and to the canonical OpenAI chat shape,
//!   and each family's batch API (`providers::batch`).
//! - [`provider_kind`]: the API families (`ProviderKind`) and their documented batch limits.
//! - [`streaming`]: the events a worker sends to the API process serving a streamed request.
//! - [`pricing`]: exact prices and costs (integer pico-USD, never floats), and the shipped
//!   price catalogue (`pricing::catalogue`, dated and sourced) deployments default to.
//! - [`tier`]: the tier a call was made on and priced at (real-time, batch, flex).
//! - [`costs`]: cost reports (`sluice costs`, `GET /v1/costs`): grouped sums of the cost
//!   records with batch savings, fallback extra and unpriced requests, as table, CSV or JSON.
//! - [`budgets`]: spending caps per tenant, user, team or feature, per UTC day or month: a
//!   job reserves its estimated maximum cost before its attempt and reconciles with the
//!   actual cost when it finishes, atomically; over a cap it is rejected or downgraded to a
//!   cheaper route (`GET /v1/budgets`, `sluice budgets`).
//! - [`period`]: the UTC day or month a budget's allowance lasts, identified by its start.
//! - [`table`]: aligned text tables, the one layout of the `costs`, `prices` and `budgets`
//!   listings.
//! - [`usage`]: the token counts of one call (`Usage`), as every adapter reads them.
//! - [`sim`]: the provider simulator (`sluice sim`), serving the providers' real wire formats
//!   (the `sluice-sim` crate, re-exported here).
//! - [`crontab`]: cron expressions (crontab's five fields, seconds-first, `@daily`), read
//!   the same for recurring jobs and the batch tier's poll schedule.
//! - [`bulk`]: bulk JSONL in and out: a file of requests validated and submitted as a named
//!   bulk in constant memory, its results in OpenAI's batch output format.
//! - [`telemetry`]: Prometheus metrics (`GET /metrics`): every metric's name, one recording
//!   helper per event, and the gauges read when they are scraped.
//! - [`app`]: wiring a `Config` into store, queue, router and simulator, and the start-up
//!   duties beside serving and working (resuming batch submissions, the batch tracker).
//! - [`client`]: a small client of the HTTP API, for the CLI and tests.
//! - [`ui`]: the web dashboard at `/ui`, served beside the API.
//! - [`traces`]: one span tree per job (HTTP request, submit, queue wait, attempts, provider
//!   call in the GenAI conventions, settle), joined across processes by the `traceparent`
//!   the queue message carries, exported over OTLP when an endpoint is configured.
//! - [`demo`], [`bench`]: `sluice demo` and `sluice bench`.

pub mod api;
pub mod app;
pub mod batch;
pub mod bench;
pub mod budgets;
pub mod bulk;
pub mod client;
pub mod cluster;
pub mod config;
pub mod costs;
pub use sluice_core::crontab;
pub mod demo;
pub use sluice_core::failure;
pub use sluice_core::gcra;
pub mod finish;
pub use sluice_core::job;
pub mod limits;
pub mod overrides;
pub use sluice_core::period;
pub use sluice_core::pricing;
pub use sluice_core::problem;
pub use sluice_core::provider_kind;
pub use sluice_providers as providers;
pub mod queue;
pub mod router;
pub mod schedule;
pub use sluice_sim as sim;
pub mod store;
pub mod streaming;
pub mod submit;
pub mod ui;
pub use sluice_core::table;
pub mod telemetry;
pub use sluice_core::tier;
pub mod traces;
pub use sluice_core::usage;
pub mod worker;
