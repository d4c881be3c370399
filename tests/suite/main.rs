//! Sluice's integration tests, as one test binary: one link step for the whole suite
//! instead of one per file. Each module is one area (a real RabbitMQ, a real SQLite file,
//! the simulator over real HTTP); `common` is the harness they share and `sse` reads
//! server-sent events. Run one area with `cargo test --test suite <module>::`.

#[macro_use]
mod common;
mod sse;

mod amqp_queue;
mod api_errors;
mod batch_tier;
mod binary;
mod budgets;
mod bulk;
mod chat_api;
mod cluster;
mod cluster_sharing;
mod costs;
mod crashes;
mod docs;
mod faults;
mod job_loop;
mod layers;
mod metrics;
mod openai_batches;
mod providers_batch;
mod providers_http;
mod providers_roundtrip;
mod resilience;
mod routing;
mod schedule;
mod sdk;
mod sim_anthropic;
mod sim_batches;
mod sim_gemini;
mod sim_openai;
mod store;
mod store_schema;
mod traces;
mod ui;
