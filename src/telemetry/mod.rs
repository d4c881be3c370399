//! What a process tells an operator about itself beside its answers: Prometheus metrics
//! ([`metrics`]: every metric's name, and one recording helper per event, so an
//! instrumented stage spends one line on it) and the figures read when `/metrics` is
//! scraped ([`sample`]: queue depths, circuits, keys, budgets, provider batches).
//!
//! The log format (`[telemetry] log_format`, `--log-format`) is the binary's to set up,
//! before any configuration is read; it lives in `main.rs`.

pub mod metrics;
pub mod sample;

pub use metrics::Metrics;
