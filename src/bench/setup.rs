//! The bench's configuration: the built-in one, with what a measurement of Sluice itself
//! needs changed, written as TOML so worker processes of the bench (`--worker-processes`)
//! read the very same configuration as the bench process.

use super::BenchArgs;
use crate::config::{Config, QueueBackend, ResolvedConfig, BUILTIN};
use toml::{Table, Value};

/// The variables the bench's TOML reads its database URL and broker URL from, so neither
/// is written to a file.
pub const DATABASE_VAR: &str = "SLUICE_BENCH_DATABASE";
pub const AMQP_VAR: &str = "SLUICE_BENCH_AMQP_URL";

/// A key limit that never binds: with `--limited-keys` every call still goes through the
/// key's buckets (on a PostgreSQL store, the cluster's capacity leases).
const UNBINDING_LIMIT: i64 = 1_000_000_000;

/// The bench's configuration as TOML; `sqlite` is the database file when no `--database`.
pub fn config_text(
    args: &BenchArgs,
    sqlite: &std::path::Path,
    prefix: &str,
) -> anyhow::Result<String> {
    let mut doc: Table = toml::from_str(BUILTIN)?;
    let database = match &args.database {
        Some(_) => format!("${{{DATABASE_VAR}}}"),
        None => sqlite.display().to_string(),
    };
    table(&mut doc, "server").insert("database".into(), Value::String(database));
    let pools = table(&mut doc, "pools");
    table(pools, "standard").insert(
        "concurrency".into(),
        Value::Integer(args.concurrency.into()),
    );
    if args.streams > 0 {
        let realtime = table(pools, "realtime");
        let streams = args.streams.min(u16::MAX as usize) as i64;
        realtime.insert("concurrency".into(), Value::Integer(streams));
    }
    // The simulator has no quota: the example keys' limits would measure the pacing, not
    // Sluice (the limiter's own cost is measured apart, [`super::routing_cost`]), unless
    // `--limited-keys` asks for limits that never bind.
    for (_, provider) in table(&mut doc, "providers").iter_mut() {
        let Some(keys) = provider.get_mut("keys").and_then(Value::as_array_mut) else {
            continue;
        };
        for key in keys.iter_mut().filter_map(Value::as_table_mut) {
            for limit in [
                "requests_per_minute",
                "tokens_per_minute",
                "requests_per_day",
            ] {
                key.remove(limit);
            }
            if args.limited_keys {
                for limit in ["requests_per_minute", "tokens_per_minute"] {
                    key.insert(limit.into(), Value::Integer(UNBINDING_LIMIT));
                }
            }
        }
    }
    // Nor should the simulator's announced quota (OpenAI's 10,000 requests a minute), which a
    // run of more than 10,000 jobs a minute spends: its `remaining: 0` headers would cool the
    // keys, as they should with a real provider.
    table(&mut doc, "sim").insert(
        "announced_requests_per_minute".into(),
        Value::Integer(UNBINDING_LIMIT),
    );
    if args.no_metrics {
        table(&mut doc, "telemetry").insert("metrics".into(), Value::Boolean(false));
    }
    if args.backend == QueueBackend::Rabbitmq || args.database.is_some() {
        let queue = table(&mut doc, "queue");
        queue.insert("backend".into(), Value::String("rabbitmq".into()));
        queue.insert("url".into(), Value::String(format!("${{{AMQP_VAR}}}")));
        queue.insert("prefix".into(), Value::String(prefix.into()));
    }
    Ok(toml::to_string(&doc)?)
}

/// The variables [`config_text`] reads, for this process and the worker processes.
pub fn variables(args: &BenchArgs) -> Vec<(&'static str, String)> {
    let mut vars = vec![(AMQP_VAR, args.amqp_url.clone())];
    if let Some(url) = &args.database {
        vars.push((DATABASE_VAR, url.expose().to_string()));
    }
    vars
}

/// Reads [`config_text`] as the bench process does.
pub fn resolve(args: &BenchArgs, text: &str) -> anyhow::Result<ResolvedConfig> {
    let vars = variables(args);
    let lookup = |name: &str| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.clone())
    };
    Ok(Config::parse(text, "the bench's configuration", &lookup)?.resolve()?)
}

/// The table at `key` in `parent`, created empty when missing.
fn table<'a>(parent: &'a mut Table, key: &str) -> &'a mut Table {
    let entry = parent
        .entry(key)
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    entry.as_table_mut().expect("made a table just above")
}
