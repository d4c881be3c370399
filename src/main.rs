//! The `sluice` command line: the commands and their dispatch; each command's work is in
//! [`cli`].

#[macro_use]
mod cli;

use clap::{Parser, Subcommand};
use cli::connect::ServerArgs;
use sluice::config::LogFormat;
use sluice::job::Urgency;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

#[derive(Parser)]
#[command(name = "sluice", version, about = "A queue-driven LLM job processor")]
struct Cli {
    /// Configuration file; without one, the built-in configuration (simulator, embedded queue).
    #[arg(long, short, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// How log lines are written to standard error: `text`, or `json` (one object a line,
    /// for a log collector). Wins over `[telemetry] log_format`.
    #[arg(long, global = true, value_enum, env = "SLUICE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the worker pools of every urgency.
    Serve {
        /// Run the API (and the outbox relay and the scheduler) without worker pools, for a
        /// deployment whose workers run as `sluice worker` processes.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run worker pools only (scale out: several processes share one broker).
    Worker {
        /// Urgencies to work on (repeatable); all when not given.
        #[arg(long, value_parser = cli::urgency())]
        urgency: Vec<Urgency>,
        /// Serve GET /healthz and /readyz on this address (e.g. 0.0.0.0:8081), for a
        /// container's health check or an orchestrator's probes; none when not given.
        #[arg(long)]
        health_listen: Option<std::net::SocketAddr>,
    },
    /// Submit a job through the API and print its id.
    Submit(cli::jobs::SubmitArgs),
    /// Print a job: status, result, attempts and cost.
    Get {
        /// The job's id, as `sluice submit` prints it.
        id: uuid::Uuid,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Wait until a job is final, then print it.
    Wait {
        /// The job's id, as `sluice submit` prints it.
        id: uuid::Uuid,
        /// Give up after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Ask a running process's health endpoint; succeed only on a 2xx answer (a container's
    /// health check, with no curl in the image).
    Probe {
        /// The endpoint, e.g. http://127.0.0.1:8080/readyz.
        url: reqwest::Url,
        /// Give up after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Serve the provider simulator on its own.
    Sim {
        /// The address to serve the three provider APIs on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
        /// How long a batch takes to end (overrides `sim.batch_turnaround`), e.g. 500ms.
        #[arg(long, value_parser = humantime::parse_duration)]
        batch_turnaround: Option<Duration>,
    },
    /// Run sample jobs of every urgency through the simulator and the embedded queue.
    Demo {
        /// Where to keep the demo's database (by default a temporary file, removed at the end).
        #[arg(long)]
        database: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Check the configuration and list every problem.
    CheckConfig,
    /// Measure throughput and latency through the real queue and store.
    Bench(sluice::bench::BenchArgs),
    /// Recurring jobs (`jobs/*.toml`, or the configured `scheduler.dir`).
    Jobs {
        #[command(subcommand)]
        action: cli::jobs::JobsAction,
    },
    /// Bulk JSONL in and out: submit a file of requests, follow it, fetch its results.
    #[command(subcommand)]
    Bulk(cli::bulk::BulkCommand),
    /// Cost report from the configured database (every tenant unless --tenant): requests,
    /// tokens, cost, batch savings, fallback extra and unpriced requests, grouped.
    Costs(cli::reports::CostsArgs),
    /// Budgets from the configured database: each budget's limit, spend, reservations and
    /// crossed thresholds this period, per tenant (every tenant unless --tenant).
    Budgets {
        /// Only this tenant's budgets.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value_t = cli::reports::Listing::Table)]
        format: cli::reports::Listing,
    },
    /// The shipped price catalogue (USD per million tokens), with each price's date and source.
    Prices {
        #[arg(long, value_enum, default_value_t = cli::reports::Listing::Table)]
        format: cli::reports::Listing,
    },
}

fn main() -> std::process::ExitCode {
    // Errors are for people: the message chain, without a backtrace even when
    // RUST_BACKTRACE is set in the environment.
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`sluice budgets | head`): nobody is left to tell.
        Err(e) if is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause added only if the message does not already say it
/// (Sluice's own errors spell out their cause).
fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// Whether `error` is a write to a pipe whose reader has gone.
fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The long-running commands read their configuration before the log starts: it says
    // where traces go.
    let config = match &cli.command {
        Command::Serve { .. } | Command::Worker { .. } => Some(cli::load_config(&cli.config)?),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let (traces, traces_problem) = match start_traces(&cli.command, config.as_ref(), &runtime) {
        Ok(traces) => (traces, None),
        Err(problem) => (None, Some(problem)),
    };
    let filter = sluice::traces::leave_out_of_log(
        tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
            .unwrap_or_else(|_| default_log_filter(&cli.command).into()),
    );
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match log_format(&cli, config.as_ref()) {
        // Colour codes only for a person's terminal, never into a file or a log collector.
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => log.json().boxed(),
    }
    .with_filter(filter);
    // `sluice bench --count-round-trips` counts the store's statements beside the log.
    let count_statements = matches!(&cli.command, Command::Bench(args) if args.count_round_trips);
    tracing_subscriber::registry()
        .with(log)
        .with(sluice::bench::trips::layer(count_statements))
        // Wanting nothing unless traces are exported: then no span costs anything.
        .with(sluice::traces::export::Traces::layer(traces.as_ref()))
        .init();
    if let Some(problem) = traces_problem {
        tracing::warn!("{problem}; no traces are exported");
    }
    let outcome = runtime.block_on(run(cli, config));
    // The spans still queued leave while the runtime that sends them still runs.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    outcome
}

/// The export of traces, for the commands that run jobs, when `[telemetry] otlp_endpoint` (or
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) names a collector; why not, when it cannot start.
fn start_traces(
    command: &Command,
    config: Option<&sluice::config::ResolvedConfig>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<sluice::traces::export::Traces>, String> {
    let default = sluice::config::TelemetryConfig::default();
    let telemetry = match (command, config) {
        (_, Some(config)) => &config.telemetry,
        // The bench runs the built-in configuration: the environment alone turns traces on.
        (Command::Bench(_), None) => &default,
        _ => return Ok(None),
    };
    let Some(url) = telemetry.traces_url(std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())? else {
        return Ok(None);
    };
    let traces = sluice::traces::export::Traces::start(
        &url,
        telemetry.service_name.as_deref(),
        runtime.handle().clone(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Some(traces))
}

/// `--log-format`, else `[telemetry] log_format` of the configuration: `loaded` when the
/// command read it already, else the file read for that alone (a file that does not read is
/// the command's to report, in the default format), else text.
fn log_format(cli: &Cli, loaded: Option<&sluice::config::ResolvedConfig>) -> LogFormat {
    if let Some(format) = cli.log_format {
        return format;
    }
    if let Some(config) = loaded {
        return config.telemetry.log_format;
    }
    cli.config
        .as_deref()
        .and_then(|path| sluice::config::Config::load_for_client(path).ok())
        .map_or(LogFormat::Text, |config| config.telemetry.log_format)
}

fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Demo { .. } | Command::Bench(_) | Command::Bulk(_) | Command::Probe { .. } => {
            "warn"
        }
        _ => "info",
    }
}

/// Runs the command; `loaded` is the configuration `serve` and `worker` read before the log
/// started.
async fn run(cli: Cli, loaded: Option<sluice::config::ResolvedConfig>) -> anyhow::Result<()> {
    let config = cli.config.as_deref();
    let loaded = || loaded.expect("serve and worker read their configuration first");
    match cli.command {
        Command::Serve { no_workers } => cli::serve::serve(loaded(), no_workers).await,
        Command::Worker {
            urgency,
            health_listen,
        } => cli::serve::worker(loaded(), urgency, health_listen).await,
        Command::Submit(args) => cli::jobs::submit(args, config).await,
        Command::Get { id, server } => cli::jobs::get(id, server, config).await,
        Command::Wait {
            id,
            timeout,
            server,
        } => cli::jobs::wait(id, timeout, server, config).await,
        Command::Probe { url, timeout } => cli::probe::probe(url, timeout).await,
        Command::Sim {
            listen,
            batch_turnaround,
        } => cli::standalone::sim(&cli.config, listen, batch_turnaround).await,
        Command::Demo { database } => cli::standalone::demo(database).await,
        Command::Migrate => cli::standalone::migrate(&cli.config).await,
        Command::CheckConfig => cli::standalone::check_config(&cli.config),
        Command::Bench(args) => cli::standalone::bench(args).await,
        Command::Jobs { action } => cli::jobs::jobs(cli::load_config(&cli.config)?, action).await,
        Command::Bulk(command) => cli::bulk::run(command, config).await,
        Command::Costs(args) => cli::reports::costs(cli::load_config(&cli.config)?, args).await,
        Command::Budgets { tenant, format } => {
            cli::reports::budgets(cli::load_config(&cli.config)?, tenant, format).await
        }
        Command::Prices { format } => cli::reports::prices(format),
    }
}
