//! `--count-round-trips`: the statements the store sends, counted, for the bench's store round
//! trips per job.
//!
//! Every statement sqlx runs (on SQLite a round trip to its connection's thread, on
//! PostgreSQL one over the network) ends with an event of target `sqlx::query` at DEBUG,
//! which sqlx only builds when a subscriber asks for it. This layer asks for exactly those
//! and counts them, so the count covers every path (the store's operations, the embedded
//! queue's own SQL, transactions' BEGIN and COMMIT) without a counter in the store. Asking
//! makes sqlx summarise each statement, which costs CPU: a counted run's CPU per job is not
//! the figure to quote.

use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Subscriber;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::{Context, Layer};

static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Counts the events it is given.
pub struct StatementCounter;

impl<S: Subscriber> Layer<S> for StatementCounter {
    fn on_event(&self, _event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counter when `on`, given sqlx's statement events only; when not, a layer that wants
/// nothing (rather than `None`, which would want everything: every span and event would be
/// built for it, to be dropped).
pub fn layer<S: Subscriber>(on: bool) -> Filtered<Option<StatementCounter>, Targets, S> {
    let statements = match on {
        true => Targets::new().with_target("sqlx::query", tracing::Level::DEBUG),
        false => Targets::new(),
    };
    on.then_some(StatementCounter).with_filter(statements)
}

/// Statements counted so far in this process.
pub fn statements() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn counts_sqlx_statement_events_only() {
        let subscriber = tracing_subscriber::registry().with(layer(true));
        let before = statements();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "sqlx::query", "SELECT 1");
            tracing::debug!(target: "sqlx::query", "SELECT 2");
            tracing::debug!(target: "sluice::store", "not a statement");
            tracing::trace!(target: "sqlx::query", "below the level sqlx logs statements at");
        });
        assert_eq!(statements() - before, 2);
    }
}
